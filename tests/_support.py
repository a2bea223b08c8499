"""Helpers shared by the context tests: files and real git repositories in tmp dirs."""

from __future__ import annotations

from pathlib import Path

import git

from context.index import WorkspaceIndex


def write(root: Path, rel: str, content: str | bytes = "x = 1\n") -> Path:
    """Create `root/rel` (and its directories) with `content`."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def init_repo(root: Path) -> git.Repo:
    """A real git repository with an identity, so commits work anywhere."""
    repo = git.Repo.init(root)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
        config.set_value("commit", "gpgsign", "false")
    return repo


def commit_all(repo: git.Repo, message: str = "commit") -> None:
    """`git add -A && git commit`: ignored files stay untracked."""
    repo.git.add("-A")
    repo.index.commit(message)


def indexed_repo(root: Path, files: dict[str, str]) -> WorkspaceIndex:
    """`files` written and committed in a git repository at `root`, indexed."""
    repo = init_repo(root)
    for rel, text in files.items():
        write(root, rel, text)
    commit_all(repo)
    index = WorkspaceIndex(root)
    index.refresh()
    return index
