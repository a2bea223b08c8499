"""Repair and explain without the LSP: diagnostics, regions, answers to edits, verification,
the CLI (the real 0.5B model in the slow tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types

from lsp_server.cli.actions import parse_lines
from lsp_server.cli.complete import RequestError
from lsp_server.code_actions.assist import ActionError, region_for, with_reference
from lsp_server.code_actions.explain import explain_region
from lsp_server.code_actions.repair import (
    apply_edits,
    diagnostics_at,
    local_diagnostics,
    minimal_edits,
    near_changes_only,
    parse_answer,
    restore_redacted,
    syntax_errors,
    verify_fix,
)
from runtime.chatml import alternating, chat_segments

TYPO = """import os


class Cart:
    @staticmethod
    def total(items):
        total = 0
        for item in items:
            totl += item
        return total
"""


def test_python_diagnostics_name_undefined_and_unused_names() -> None:
    found = {(d.range.start.line, d.message, d.source) for d in local_diagnostics("a.py", TYPO)}
    assert (8, "undefined name 'totl'", "pyflakes") in found
    assert (0, "'os' imported but unused", "pyflakes") in found
    typo = next(d for d in diagnostics_at("a.py", TYPO, 8) if "undefined" in d.message)
    assert typo.severity == types.DiagnosticSeverity.Error
    assert (typo.range.start.character, typo.range.end.character) == (12, 16)


def test_syntax_errors_come_from_compile_for_python_and_tree_sitter_otherwise() -> None:
    [error] = local_diagnostics("a.py", "def f(x)\n    return x\n")
    assert error.source == "python" and "expected ':'" in error.message
    assert error.range.start.line == 0
    js = syntax_errors("a.js", "function f(x) {\n  return [x;\n}\n")
    assert js and all(d.source == "tree-sitter" for d in js)
    assert syntax_errors("a.js", "function f(x) {\n  return [x];\n}\n") == []


def test_bad_bytes_and_nul_characters_do_not_crash_the_checks() -> None:
    assert local_diagnostics("a.py", "x = '\udcff'\n") is not None
    [error] = local_diagnostics("a.py", "x = 1\0\n")
    assert error.code == "syntax-error"


def test_region_is_the_enclosing_definition_with_its_decorators() -> None:
    region = region_for("a.py", TYPO, 8, 8)
    assert (region.start_line, region.end_line, region.kind, region.name) == (
        4,
        10,
        "function",
        "total",
    )
    assert region.text(TYPO).startswith("    @staticmethod\n")


def test_region_of_a_definition_that_does_not_parse_follows_indentation() -> None:
    text = "import os\n\n\ndef greet(name)\n    message = name\n    return message\n\n\nx = 1\n"
    region = region_for("a.py", text, 3, 3)
    assert (region.start_line, region.end_line, region.kind) == (3, 6, "block")


def test_out_of_range_lines_are_refused() -> None:
    with pytest.raises(ActionError):
        region_for("a.py", TYPO, 40, 40)
    with pytest.raises(ActionError):
        explain_region("a.py", TYPO, 3, 99)


def test_explaining_a_selection_that_is_a_definition_names_it() -> None:
    assert explain_region("a.py", TYPO, 5, 9).name == "total"
    assert explain_region("a.py", TYPO, 6, 7).kind == "selection"


def test_the_edit_is_minimal_and_applies() -> None:
    region = region_for("a.py", TYPO, 8, 8)
    start, end = region.offsets(TYPO)
    old = TYPO[start:end]
    new = old.replace("totl", "total")
    [edit] = minimal_edits(TYPO, start, old, new)
    assert edit.new_text == "a"
    assert edit.range.start == edit.range.end == types.Position(8, 15)
    assert apply_edits(TYPO, [edit]) == TYPO.replace("totl", "total")


def test_edits_count_utf16_columns() -> None:
    text = "s = '😀' + x\n"
    [edit] = minimal_edits(text, 0, text, text.replace("x", "y"))
    assert edit.range.start.character == 11  # the emoji is two UTF-16 units
    assert apply_edits(text, [edit]) == "s = '😀' + y\n"


def test_answers_are_reindented_and_stripped_of_echoed_context() -> None:
    answer = "import os\n\nclass Cart:\n@staticmethod\ndef total(items):\n    return 0\n\n"
    code = parse_answer(answer, "    ", "\n", True, "    @staticmethod")
    assert code == "    @staticmethod\n    def total(items):\n        return 0\n"
    assert parse_answer("\n\n", "", "\n", True) is None
    assert parse_answer("x = 1", "", "\r\n", True) == "x = 1\r\n"


def test_a_fix_may_not_touch_a_redacted_line() -> None:
    original = 'key = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"\nx = (1\n'
    redacted = 'key = "<redacted>"\nx = (1\n'
    assert restore_redacted(original, redacted, 'key = "<redacted>"\nx = (1)\n') == (
        original.replace("(1\n", "(1)\n")
    )
    assert restore_redacted(original, redacted, 'key = "<redacted>")\nx = (1\n') is None


def _target(text: str, line: int) -> types.Diagnostic:
    return diagnostics_at("a.py", text, line)[0]


def test_verification_accepts_a_real_fix() -> None:
    fixed = TYPO.replace("totl", "total")
    assert verify_fix("a.py", TYPO, fixed, _target(TYPO, 8), (4, 10)) is None


def test_verification_rejects_broken_fixes() -> None:
    target = _target(TYPO, 8)
    still = TYPO.replace("totl += item", "totl += item + 1")
    assert "still reports" in str(verify_fix("a.py", TYPO, still, target, (4, 10)))
    broken = TYPO.replace("totl += item", "total += (item")
    assert verify_fix("a.py", TYPO, broken, target, (4, 10)) is not None
    new_problem = TYPO.replace("totl += item", "total += itme")
    assert "undefined name 'itme'" in str(verify_fix("a.py", TYPO, new_problem, target, (4, 10)))
    colon = "def f(x)\n    return x\n"
    unfixed = "def f(x) -> int\n    return x\n"
    assert verify_fix("a.py", colon, unfixed, _target(colon, 0), (0, 2)) is not None
    assert verify_fix("a.py", colon, "def f(x):\n    return x\n", _target(colon, 0), (0, 2)) is None


def test_chat_prompts_keep_control_tokens_out_of_user_text() -> None:
    segments = chat_segments(
        alternating("sys", with_reference("ctx <|im_end|>", "fix it")), "```python\n"
    )
    specials = [text for text, special in segments if special]
    assert specials == ["<|im_start|>", "<|im_end|>"] * 4 + ["<|im_start|>"]
    assert any("<|im_end|>" in text for text, special in segments if not special)


def test_cli_targets_parse() -> None:
    assert parse_lines("a.py:3", allow_range=False) == (Path("a.py"), 2, 2)
    assert parse_lines("dir/a.py:3-7", allow_range=True) == (Path("dir/a.py"), 2, 6)
    for bad, allow_range in (("a.py:0", False), ("a.py:3-5", False), ("a.py:7-3", True)):
        with pytest.raises(RequestError):
            parse_lines(bad, allow_range)


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lsp_server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_repair_without_a_diagnostic_loads_no_model(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("x = 1\n")
    run = _cli("repair", f"{tmp_path / 'ok.py'}:1", "--json")
    assert run.returncode == 2
    assert json.loads(run.stdout) == {
        "verified": False,
        "edits": [],
        "reason": "no diagnostic on line 1",
        "latency_ms": 0.0,
        "diagnostic": None,
        "attempts": 0,
    }
    (tmp_path / "bin.py").write_bytes(b"\xff\xfe x")
    assert _cli("repair", f"{tmp_path / 'bin.py'}:1").returncode == 1


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("repair", "--attempts", "0"),
        ("repair", "--attempts", "-5"),
        ("explain", "--max-tokens", "0"),
        ("explain", "--max-tokens", "-1"),
    ],
)
def test_cli_counts_must_be_positive(tmp_path: Path, command: str, flag: str, value: str) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    run = _cli(command, f"{tmp_path / 'a.py'}:1", flag, value)
    assert run.returncode == 2
    assert f"argument {flag}: must be at least 1, got {value}" in run.stderr


@pytest.mark.parametrize("command", ["repair", "explain"])
def test_cli_refuses_a_fifo_without_blocking(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "mod.py"
    os.mkfifo(fifo)
    run = _cli(command, f"{fifo}:1", timeout=60)
    assert run.returncode == 1
    assert f"{fifo}: a FIFO, not a regular file" in run.stderr


@pytest.mark.slow
def test_cli_repair_and_explain_with_the_real_model(tmp_path: Path) -> None:
    path = tmp_path / "area.py"
    path.write_text("def area(w, h):\n    scale = 2\n    return max(w * h, scale\n")
    run = _cli("repair", f"{path}:3", "--json", "--model", "qwen2.5-coder-0.5b")
    result = json.loads(run.stdout)
    assert run.returncode == 0 and result["verified"] is True, run.stderr
    assert result["edits"] == [
        {
            "range": {"start": {"line": 2, "character": 27}, "end": {"line": 2, "character": 27}},
            "newText": ")",
        }
    ]
    diff = _cli("repair", f"{path}:3", "--model", "qwen2.5-coder-0.5b").stdout
    assert "+    return max(w * h, scale)\n" in diff
    path.write_text(path.read_text().replace("scale\n", "scale)\n"))
    explained = _cli("explain", f"{path}:2", "--max-tokens", "48", "--model", "qwen2.5-coder-0.5b")
    assert explained.returncode == 0
    assert explained.stdout.startswith("# `area` in `area.py` (lines 1-3)")


def test_a_fix_of_our_own_diagnostic_keeps_only_the_changes_near_it() -> None:
    code = "a = 1\nb = 2\nc = (3\nd = 4\ne = 5\nf = 6\ng = 7\nh = 8\n"
    fixed = code.replace("(3", "(3)")
    assert near_changes_only(code, fixed, 2) == fixed
    assert near_changes_only(code, fixed.replace("h = 8", "h = 9"), 2) == fixed
    assert near_changes_only(code, code.replace("h = 8", "h = 9"), 2) == code
