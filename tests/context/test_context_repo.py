"""RepoContext on real git repositories: which files, in which order, kept stable while typing
and current after edits, deletes and renames."""

from __future__ import annotations

from pathlib import Path

import pytest

from context.index import WorkspaceIndex
from context.repo import RepoContext

git = pytest.importorskip("git")


def make_repo(root: Path, files: dict[str, str]) -> RepoContext:
    """Write and commit `files`, index them, build the graph."""
    repo = git.Repo.init(root)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    repo.index.add(list(files))
    repo.index.commit("initial")
    index = WorkspaceIndex(root)
    index.refresh()
    context = RepoContext(index)
    context.build()
    return context


PYTHON = {
    "app/__init__.py": "",
    "app/utils.py": "def slugify(text):\n    return text.lower().replace(' ', '-')\n",
    "app/models.py": "from app.utils import slugify\n\n\nclass Post:\n    def slug(self):\n"
    "        return slugify(self.title)\n",
    "app/main.py": "from app import models\nfrom .utils import slugify\n\n\ndef run():\n    pass\n",
    "app/cli.py": "from app.main import run\n\nrun()\n",
    "README.md": "# demo\n",
}


def paths(context: RepoContext, current: str, budget: int = 10_000) -> list[str]:
    return [piece.path for piece in context.context_for(current, len, budget)]


def test_python_dependencies_first_then_dependents(tmp_path: Path) -> None:
    context = make_repo(tmp_path, PYTHON)
    order = paths(context, "app/main.py")
    # Direct imports and the file that imports main.py; models.py needs utils.py, so after it.
    assert sorted(order) == ["app/cli.py", "app/models.py", "app/utils.py"]
    assert order.index("app/utils.py") < order.index("app/models.py")


def test_typescript_and_go_projects(tmp_path: Path) -> None:
    context = make_repo(
        tmp_path,
        {
            "web/src/index.tsx": "import { Button } from './components/Button';\n"
            "import { add } from './lib/math';\n",
            "web/src/components/Button.tsx": "import { add } from '../lib/math';\n"
            "export const Button = () => add(1, 2);\n",
            "web/src/lib/math.ts": "export function add(a: number, b: number) { return a + b; }\n",
            "svc/go.mod": "module example.com/svc\n\ngo 1.22\n",
            "svc/main.go": 'package main\n\nimport "example.com/svc/store"\n\n'
            "func main() { store.Open() }\n",
            "svc/store/store.go": "package store\n\nfunc Open() {}\n",
        },
    )
    assert paths(context, "web/src/index.tsx") == [
        "web/src/lib/math.ts",
        "web/src/components/Button.tsx",
    ]
    assert paths(context, "svc/main.go") == ["svc/store/store.go"]


def test_budget_outlines_and_drops(tmp_path: Path) -> None:
    big_utils = PYTHON["app/utils.py"] + "".join(
        f"\n\ndef helper_{i}(x):\n    '''Helper {i}.'''\n    return x + {i}\n" for i in range(60)
    )
    context = make_repo(tmp_path, {**PYTHON, "app/utils.py": big_utils})
    pieces = context.context_for("app/main.py", len, 600)
    assert sum(len(piece.text()) + 1 for piece in pieces) <= 600
    utils = next(piece for piece in pieces if piece.path == "app/utils.py")
    assert utils.outlined and "def slugify" in utils.content
    assert "return text.lower()" not in utils.content


def test_typing_keeps_the_context_identical(tmp_path: Path) -> None:
    context = make_repo(tmp_path, PYTHON)
    first = context.context_for("app/main.py", len, 10_000)
    for typed in ("    x", "    x = slug", "    x = slugify('A b')"):
        context.index.set_buffer("app/main.py", PYTHON["app/main.py"] + typed + "\n")
        assert context.context_for("app/main.py", len, 10_000) is first


def test_follows_edits_deletes_and_renames(tmp_path: Path) -> None:
    context = make_repo(tmp_path, PYTHON)
    (tmp_path / "app/utils.py").write_text("def slugify(text):\n    return 'edited'\n")
    context.index.update("app/utils.py")
    utils = next(
        p for p in context.context_for("app/main.py", len, 10_000) if p.path == "app/utils.py"
    )
    assert "edited" in utils.content

    (tmp_path / "app/cli.py").unlink()
    context.index.remove("app/cli.py")
    assert "app/cli.py" not in paths(context, "app/main.py")

    (tmp_path / "app/models.py").rename(tmp_path / "app/entities.py")
    context.index.rename("app/models.py", "app/entities.py")
    (tmp_path / "app/main.py").write_text(PYTHON["app/main.py"].replace("models", "entities"))
    context.index.update("app/main.py")
    assert paths(context, "app/main.py") == ["app/utils.py", "app/entities.py"]


def test_secret_and_ignored_files_never_appear(tmp_path: Path) -> None:
    canary = "CANARY-51c0"
    files = {
        **PYTHON,
        ".gitignore": "app/local.py\n",
        "app/main.py": "from app import local, settings\n" + PYTHON["app/main.py"],
        "app/settings.py": f"API_KEY = 'sk-proj-{canary}Qw8ZxLmN3vB7tYc2'\n",
    }
    context = make_repo(tmp_path, files)
    (tmp_path / "app/local.py").write_text(f"NOTE = '{canary}'\n")
    (tmp_path / ".env").write_text(f"TOKEN={canary}\n")
    context.index.refresh()
    pieces = context.context_for("app/main.py", len, 10_000)
    assert "app/settings.py" in [piece.path for piece in pieces]
    assert all(canary not in piece.text() for piece in pieces)
    assert {"app/local.py", ".env"}.isdisjoint(piece.path for piece in pieces)
