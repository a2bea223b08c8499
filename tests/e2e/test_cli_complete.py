"""`coder-lsp complete` end to end on the real embedded 0.5B model, as a user runs it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from lsp_server.cli.complete import answer_line
from lsp_server.completion.pipeline import CompletionPipeline

MODEL = "qwen2.5-coder-0.5b"
FAST = ("--model", MODEL, "--no-draft")
# The cursor goes at its end. (At "    return " alone, the 0.5B with the repository header
# copies the next function's "n % 2 == 0"; on the SantaCoder rows, the layout this cursor gets
# (see context/prompt.py) finds the rest of the line 103 times in 167, Qwen's PSM 73.)
HOLE = "    return a "
PREAMBLE = '''\
"""Small arithmetic helpers used by the calculator's command line."""

from __future__ import annotations


def clamp(value, low, high):
    """Limit value to the closed range [low, high]."""
    return max(low, min(value, high))


def mean(values):
    """Arithmetic mean of a non-empty sequence."""
    return sum(values) / len(values)


'''
SOURCE = (
    PREAMBLE
    + f'''\
def add(a, b):
    """Return the sum of a and b."""
{HOLE}


def is_even(n):
    """True when n is divisible by two."""
    return n % 2 == 0
'''
)


HOLE_LINE = SOURCE.splitlines().index(HOLE)  # 0-based


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI in a child process, as a user or a tool would."""
    return subprocess.run(
        [sys.executable, "-m", "lsp_server", "complete", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one Python file holding a hole."""
    root = tmp_path_factory.mktemp("ws")
    (root / "calc.py").write_text(SOURCE)
    (root / "binary.bin").write_bytes(b"\x00\x01\x02 not text")
    return root


@pytest.mark.slow
def test_fills_a_hole_in_a_small_function(workspace: Path) -> None:
    # int4 whatever the machine's default: at w8a8 this hole is a near tie that the 0.5B
    # resolves as `+ b == 0` (fp32 and int4 write `+ b`; README, "FIM quality").
    done = run_cli(
        f"{workspace / 'calc.py'}:{HOLE_LINE + 1}:{len(HOLE) + 1}",
        "--model",
        MODEL,
        "--precision",
        "int4",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["completion"] == "+ b"
    assert result["generated_tokens"] > 0
    assert result["context_files"][-1] == "calc.py"
    assert set(result) >= {
        "id",
        "completion",
        "latency_ms",
        "prompt_tokens",
        "cached_tokens",
        "generated_tokens",
        "draft_proposed",
        "draft_accepted",
        "context_files",
    }


@pytest.mark.slow
def test_batch_reuses_the_cache_and_survives_bad_requests(workspace: Path) -> None:
    edited = SOURCE.replace(f"{HOLE}\n", f"{HOLE}+ \n", 1)
    other = SOURCE.replace(f"{HOLE}\n", f"{HOLE}- \n", 1)
    requests = [
        {
            "id": 1,
            "workspace": str(workspace),
            "path": "calc.py",
            "line": HOLE_LINE,
            "character": len(HOLE),
        },
        "this line is not JSON",
        {"id": 3, "workspace": str(workspace), "path": "calc.py", "line": 99, "character": 0},
        {"id": 4, "workspace": str(workspace), "path": "binary.bin", "line": 0, "character": 0},
        # The user typed "+ ": the buffer text overrides the file on disk.
        {
            "id": 5,
            "workspace": str(workspace),
            "path": "calc.py",
            "text": edited,
            "line": HOLE_LINE,
            "character": len(HOLE) + 2,
        },
        # Typing what was not predicted: the model runs again, on the cached prompt prefix.
        {
            "id": 6,
            "workspace": str(workspace),
            "path": "calc.py",
            "text": other,
            "line": HOLE_LINE,
            "character": len(HOLE) + 2,
        },
    ]
    batch = workspace / "requests.jsonl"
    batch.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n")
    # int4: the answer expected is the one the test above pins.
    done = run_cli("--batch", str(batch), "--model", MODEL, "--precision", "int4", "--show-prompt")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r.get("id") for r in results] == [1, None, 3, 4, 5, 6]
    first, not_json, out_of_range, binary, typed, retyped = results
    assert first["completion"] == "+ b"
    # The typed line leads the middle, so typing on it keeps the suffix cached.
    assert "<|fim_prefix|>" in first["prompt"]
    assert first["prompt"].endswith(f"<|fim_middle|>{HOLE.rstrip()}")
    assert "not JSON" in not_json["error"]
    assert "line 99 is outside the file" in out_of_range["error"]
    assert "binary" in binary["error"]
    # The user typed the first characters of the suggestion: the rest, without the model.
    assert typed["completion"] == first["completion"][2:]
    assert typed["generated_tokens"] == 0
    # Other typing shares the prompt up to the cursor with the first: only the rest is run.
    assert retyped["generated_tokens"] > 0
    assert retyped["cached_tokens"] >= first["prompt_tokens"] - 2


@pytest.mark.slow
def test_repository_context_and_secret_safety(tmp_path: Path) -> None:
    """A real git repo: the imported module is in the prompt before the current file; the
    .env file, a gitignored file and a key-shaped line never are."""
    git = pytest.importorskip("git")
    canary = "CANARY-7f3a9e"
    token = "ghp_" + "Zx9q" * 9  # GitHub's token shape: ghp_ + 36 alphanumerics
    repo = git.Repo.init(tmp_path)
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("")
    (tmp_path / "shapes" / "geometry.py").write_text(
        "def circle_area(radius):\n    return 3.14159 * radius * radius\n\n"
        f"GITHUB_TOKEN = '{token}'\n"
    )
    (tmp_path / "main.py").write_text(
        "from shapes.geometry import circle_area\n\n\ndef report(r):\n    area = \n"
    )
    (tmp_path / ".env").write_text(f"API_KEY={canary}\n")
    (tmp_path / ".gitignore").write_text("local_notes.py\n")
    (tmp_path / "local_notes.py").write_text(f"NOTE = '{canary}'\n")
    repo.index.add(["shapes/__init__.py", "shapes/geometry.py", "main.py", ".gitignore"])
    repo.index.commit("initial")

    done = run_cli(
        f"{tmp_path / 'main.py'}:5:12",
        "--model",
        MODEL,
        "--json",
        "--show-prompt",
        "--workspace",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["context_files"][-1] == "main.py"
    assert "shapes/geometry.py" in result["context_files"]
    assert result["prompt"].startswith(f"<|repo_name|>{tmp_path.name}\n<|file_sep|>")
    assert canary not in result["prompt"] and token not in result["prompt"]
    assert "local_notes.py" not in result["prompt"] and ".env" not in result["context_files"]

    for refused in (".env", "local_notes.py"):
        done = run_cli(f"{tmp_path / refused}:1:1", "--model", MODEL, "--workspace", str(tmp_path))
        assert done.returncode == 1
        assert "nothing is sent" in done.stderr or "excluded" in done.stderr
        assert canary not in done.stdout

    no_context = run_cli(
        f"{tmp_path / 'main.py'}:5:12",
        "--model",
        MODEL,
        "--json",
        "--no-context",
        "--show-prompt",
    )
    assert json.loads(no_context.stdout)["context_files"] == ["main.py"]
    assert json.loads(no_context.stdout)["prompt"].startswith("<|fim_prefix|>")


@pytest.mark.slow
def test_bad_target_is_a_clear_error(workspace: Path) -> None:
    done = run_cli(f"{workspace / 'calc.py'}:0:1", "--model", MODEL)
    assert done.returncode == 1
    assert "FILE:LINE:COL" in done.stderr
    done = run_cli(f"{workspace / 'missing.py'}:1:1", "--model", MODEL)
    assert done.returncode == 1
    assert "missing.py: missing" in done.stderr


def hostile_requests(workspace: Path, fifo: Path) -> list[tuple[bytes, object, str]]:
    """Batch lines an editor, a script or an attacker may send: (line, id, error expected)."""
    good = {"workspace": str(workspace), "path": "calc.py", "line": 0, "character": 0}
    fields: list[tuple[dict[str, object], str]] = [
        ({"path": None}, "path must be a non-empty string, got null"),
        ({"path": ["calc.py"]}, "path must be a non-empty string, got an array"),
        ({"path": ""}, "path must be a non-empty string, got an empty string"),
        ({"path": "calc\ud800.py"}, "path is not a valid file name"),
        ({"path": "calc\u0000.py"}, "path contains a NUL character"),
        ({"path": str(fifo)}, "a FIFO, not a regular file"),
        ({"path": str(workspace)}, "a directory, not a regular file"),
        ({"workspace": 5}, "workspace must be a non-empty string, got a number"),
        ({"workspace": [str(workspace)]}, "workspace must be a non-empty string, got an array"),
        ({"workspace": {"root": "."}}, "workspace must be a non-empty string, got an object"),
        ({"line": True}, "line must be an integer, got a boolean"),
        ({"character": 1.5}, "character must be an integer, got a number"),
        ({"character": "3"}, "character must be an integer, got a string"),
        ({"line": -1}, "line -1 is outside the file"),
        ({"text": ["x"]}, "text must be a string or null, got an array"),
    ]
    lines = [
        (json.dumps({"id": number, **good, **field}).encode(), number, error)
        for number, (field, error) in enumerate(fields, 100)
    ]
    return [
        *lines,
        (json.dumps({"id": [1], **good}).encode(), None, "id must be a string, an integer"),
        (b"[" * 100_000, None, "not JSON"),  # nesting deeper than Python's recursion limit
        (b'{"id": 7, "line": 1' + b"0" * 5000 + b"}", None, "not JSON"),  # over int's digits
        (b'{"id": 8, "path": "\xff\xfe.py"}', None, "not UTF-8"),
        (b"[1, 2]", None, "a request must be a JSON object, got an array"),
    ]


@pytest.mark.slow
def test_batch_answers_every_line_whatever_it_holds(workspace: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    hostile = hostile_requests(workspace, fifo)
    # A buffer holding a lone surrogate (undecodable bytes an editor passed through) is served.
    surrogate = {"id": "s", "path": "calc.py", "text": "x = '\ud800'\ny = ", "line": 1}
    last = {"id": "last", "path": "calc.py", "line": HOLE_LINE, "character": len(HOLE)}
    served = [
        json.dumps({"workspace": str(workspace), "character": 4, **surrogate}).encode(),
        json.dumps({"workspace": str(workspace), **last}).encode(),
    ]
    batch = tmp_path / "hostile.jsonl"
    batch.write_bytes(b"\n".join([line for line, _, _ in hostile] + served) + b"\n")
    # A regression blocking on the FIFO fails here instead of hanging the suite.
    done = subprocess.run(
        [sys.executable, "-m", "lsp_server", "complete", "--batch", str(batch), *FAST],
        capture_output=True,
        timeout=300,
        check=False,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    results = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert len(results) == len(hostile) + len(served)
    for (line, request_id, error), result in zip(hostile, results, strict=False):
        assert result["id"] == request_id, line[:80]
        assert error in result["error"], (line[:80], result)
    surrogate_result, last_result = results[len(hostile) :]
    assert surrogate_result["id"] == "s" and "error" not in surrogate_result
    assert last_result["id"] == "last" and "error" not in last_result


class _BrokenPipeline:
    """A pipeline with a bug: every completion raises."""

    def complete(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("bug in the pipeline")


def test_a_bug_in_one_request_is_answered_and_logged(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    request = {"id": 9, "path": str(workspace / "calc.py"), "line": 0, "character": 0}
    args = argparse.Namespace(no_context=True, max_tokens=None, show_prompt=False)
    with caplog.at_level(logging.ERROR):
        pipeline = cast(CompletionPipeline, _BrokenPipeline())
        answer = answer_line(pipeline, 3, json.dumps(request).encode(), args)
    assert answer == {"id": 9, "error": "internal error: RuntimeError: bug in the pipeline"}
    assert "request on line 3: internal error" in caplog.text
    assert "Traceback" in caplog.text and "bug in the pipeline" in caplog.text


def test_a_fifo_target_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "mod.py"
    os.mkfifo(fifo)
    done = run_cli(f"{fifo}:1:1", *FAST, timeout=60)
    assert done.returncode == 1
    assert f"{fifo}: a FIFO, not a regular file" in done.stderr


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_tokens_must_be_positive(workspace: Path, value: str) -> None:
    done = run_cli(f"{workspace / 'calc.py'}:1:1", *FAST, "--max-tokens", value, timeout=60)
    assert done.returncode == 2
    assert "argument --max-tokens:" in done.stderr


@pytest.mark.slow
def test_links_to_secrets_are_refused_alone_and_in_a_batch(tmp_path: Path) -> None:
    """Issue 22's reproduction: `helpers.py -> .env` and `notes.py -> ~/.ssh/id_ed25519` are
    refused, and in a batch the link's text never reaches a later request's prompt."""
    canary, key = "CANARY_5e1d", "KEYCANARY_77ab"
    root, home = tmp_path / "ws", tmp_path / "home" / ".ssh"
    root.mkdir()
    home.mkdir(parents=True)
    (home / "id_ed25519").write_text(f"{key}\n")
    (root / ".env").write_text(f"API_KEY={canary}\n")
    (root / "main.py").write_text("import helpers\n\n\ndef run():\n    return \n")
    os.symlink(".env", root / "helpers.py")
    os.symlink(home / "id_ed25519", root / "notes.py")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for link, why in (("helpers.py", "links to the secret path .env"), ("notes.py", "outside")):
        done = run_cli(f"{root / link}:1:6", "--model", MODEL, "--show-prompt", "--json")
        assert done.returncode == 1 and why in done.stderr, done.stderr
        assert canary not in done.stdout + done.stderr and key not in done.stdout
    batch = tmp_path / "requests.jsonl"
    lines = [
        {"id": "link", "workspace": str(root), "path": "helpers.py", "line": 0, "character": 6},
        {"id": "main", "workspace": str(root), "path": "main.py", "line": 4, "character": 11},
    ]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = run_cli("--batch", str(batch), "--model", MODEL, "--show-prompt", "--no-draft")
    link, main = (json.loads(line) for line in done.stdout.splitlines())
    assert "secret" in link["error"] and "completion" not in link
    assert canary not in main["prompt"] and "helpers.py" not in main["context_files"]
