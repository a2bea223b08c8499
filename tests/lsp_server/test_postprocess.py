"""Post-processing: golden cases (tests/lsp_server/golden/postprocess/*.json, one per file) and
the rules.

A golden case is {name, why, path, [eol], prefix, suffix, raw, expected, replace_suffix_chars}:
the file is `prefix + suffix` with the cursor between them, `raw` is what the model generated,
`expected` is the text shown (null: nothing) and `replace_suffix_chars` how many characters after
the cursor it replaces. Text fields are a string or a list of lines joined with `eol` ("\\n").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lsp_server.completion.postprocess import (
    RULES,
    CursorContext,
    Suggestion,
    consume_auto_closed,
    cut_control_characters,
    drop_following_lines,
    drop_repetition,
    drop_suffix_echo,
    drop_trivial,
    fix_block_indentation,
    keep_valid_syntax,
    limit_scope,
    postprocess,
    stop_rule,
)

GOLDEN = Path(__file__).parent / "golden" / "postprocess"
CASES = sorted(GOLDEN.glob("*.json"))


def _text(value: str | list[str] | None, eol: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return eol.join(value)


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    eol = case.get("eol", "\n")
    for key in ("prefix", "suffix", "raw", "expected"):
        case[key] = _text(case[key], eol)
    return case


def context(path: str, prefix: str, suffix: str) -> CursorContext:
    return CursorContext.at(prefix + suffix, len(prefix), path)


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 30
    names = [load_case(path)["name"] for path in CASES]
    assert names == [path.stem for path in CASES]  # the file is named after its case


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_golden(path: Path) -> None:
    case = load_case(path)
    result = postprocess(case["raw"], context(case["path"], case["prefix"], case["suffix"]))
    expected = (
        None
        if case["expected"] is None
        else Suggestion(case["expected"], case["replace_suffix_chars"])
    )
    assert result == expected, case["why"]


# --- CursorContext -------------------------------------------------------------------------


def test_context_at_splits_the_document_around_the_cursor() -> None:
    text = "a = 1\r\nb = f(x)\r\n\r\nc = 3\r\n"
    offset = text.index("x")
    cursor = CursorContext.at(text, offset, "m.py")
    assert (cursor.line_prefix, cursor.line_suffix) == ("b = f(", "x)")
    assert cursor.above + cursor.line_prefix + cursor.line_suffix + cursor.below == text
    assert cursor.document == text
    assert cursor.eol == "\r\n"
    assert cursor.next_line() == "c = 3"
    assert cursor.previous_line() == "a = 1"
    assert cursor.language == "python"
    assert cursor.mid_line


def test_context_at_the_end_of_a_file_without_newline() -> None:
    cursor = CursorContext.at("x = 1\ny = ", 10, "m.go")
    assert (cursor.line_prefix, cursor.line_suffix, cursor.below) == ("y = ", "", "")
    assert cursor.eol == "\n" and cursor.next_line() is None and not cursor.mid_line


def test_context_without_document_still_works_for_the_two_field_form() -> None:
    cursor = CursorContext("    return ", "")
    assert cursor.language is None and cursor.previous_line() is None
    assert postprocess("a + b\n\ndef other():", cursor) == Suggestion("a + b")


# --- stop_rule (used during generation) ----------------------------------------------------


def test_stop_rule_mid_line_stops_at_the_end_of_the_line() -> None:
    cut = stop_rule(CursorContext("foo(", ")"))
    assert cut("a, b") is None
    assert cut("a, b)\nnext") == 5


def test_stop_rule_block_stops_at_a_dedent_once_the_line_is_complete() -> None:
    cut = stop_rule(CursorContext("    ", ""))
    assert cut("x = 1\n    y = 2\nde") is None  # the dedented line may still be "    ..."
    assert cut("x = 1\n    y = 2\ndef g():\n") == len("x = 1\n    y = 2")


def test_stop_rule_after_an_opener_stops_at_the_same_level() -> None:
    cut = stop_rule(CursorContext("function f() {", ""))
    assert cut("\n  return 1;\n}\n") == len("\n  return 1;")


def test_stop_rule_a_typed_line_gets_its_block_only_when_asked() -> None:
    before = "def f(values):\n    total = "
    cursor = CursorContext.at(before, len(before))
    text = "sum(values)\n    return total\ndef g():\n"
    assert stop_rule(cursor)(text) == len("sum(values)")  # the CLI: that line
    assert stop_rule(cursor, typed_line_block=True)(text) == len("sum(values)\n    return total")
    top = CursorContext("total = ", "")  # at the top level: that line either way
    assert stop_rule(top, typed_line_block=True)("sum(v)\nprint(total)\n") == len("sum(v)")


def test_stop_rule_inside_an_open_construct_goes_past_its_closing_line() -> None:
    before = "def f(self):\n    if (\n        "
    cursor = CursorContext.at(before, len(before))
    text = "ready := self.ready()\n    ) is not None:\n        go()\ndef g():\n"
    expected = len("ready := self.ready()\n    ) is not None:\n        go()")
    assert stop_rule(cursor)(text) == expected


# --- individual rules ----------------------------------------------------------------------


def apply(rule: Any, text: str, cursor: CursorContext, replace: int = 0) -> Suggestion:
    result: Suggestion = rule(Suggestion(text, replace), cursor)
    return result


def test_limit_scope_keeps_only_the_line_mid_line() -> None:
    cursor = context("a.js", "foo(", ")\n")
    assert apply(limit_scope, "a)\nbar();", cursor).text == "a)"


def test_drop_repetition_keeps_a_line_repeated_twice() -> None:
    cursor = context("a.py", "def f():\n    ", "\n")
    text = "x += 1\n    x += 1"
    assert apply(drop_repetition, text, cursor).text == text


def test_drop_repetition_cuts_a_looping_call_and_spares_decoration() -> None:
    cursor = context("a.py", "x = ", "\n")
    assert apply(drop_repetition, "wrap(wrap(wrap(wrap(wrap(", cursor).text == "wrap("
    rule = "# " + "-" * 60
    assert apply(drop_repetition, rule, context("a.py", "", "\n")).text == rule


def test_fix_block_indentation_leaves_a_body_after_a_continuation_line() -> None:
    cursor = context("a.py", "values = [\n", "\n]\n")
    assert apply(fix_block_indentation, "    1,\n    2,", cursor).text == "    1,\n    2,"


def test_drop_following_lines_ignores_mid_line_and_a_started_line() -> None:
    cursor = context("a.py", "def f(a):\n    b = ", "\n    b = 2\n")
    assert apply(drop_following_lines, "2", cursor).text == "2"  # `    b = 2` typed by the user


def test_drop_suffix_echo_keeps_a_closer_the_text_itself_needs() -> None:
    cursor = context("a.py", "print(", ")\n")
    assert apply(drop_suffix_echo, "bar()", cursor).text == "bar()"
    assert apply(drop_suffix_echo, "bar)", cursor).text == "bar"


@pytest.mark.parametrize(
    ("prefix", "suffix", "raw", "expected"),
    [
        ("f(", ")", "a", Suggestion("a", 0)),
        ("f(", ")", "a)", Suggestion("a", 0)),
        ("f(", ")", "a) + 1", Suggestion("a) + 1", 1)),
        ("f(g(", "))", "a)) + 1", Suggestion("a)) + 1", 2)),
        ("f(g(", "))", "a), b", Suggestion("a), b", 1)),
        ('f("', '")', 'x") + y', Suggestion('x") + y', 2)),
        ("f(", ")", "a]", Suggestion("a]", 0)),  # not the closer that follows
        ("f(", ", y)", "x)", Suggestion("x)", 0)),  # nothing auto-closed right after
    ],
)
def test_consume_auto_closed(prefix: str, suffix: str, raw: str, expected: Suggestion) -> None:
    assert apply(consume_auto_closed, raw, context("a.js", prefix, suffix + "\n")) == expected


def test_keep_valid_syntax_needs_a_grammar_and_only_trims() -> None:
    broken = "s = 0\n    return s +"
    unknown = context("a.lua", "def f():\n    ", "\n")
    assert apply(keep_valid_syntax, broken, unknown).text == broken
    python = context("a.py", "def f():\n    ", "\n")
    assert apply(keep_valid_syntax, broken, python).text == "s = 0"


def test_keep_valid_syntax_tolerates_errors_the_file_already_has() -> None:
    cursor = context("a.py", "def f(:\n    ", "\n")  # broken signature before the cursor
    assert apply(keep_valid_syntax, "return 1", cursor).text == "return 1"


def test_keep_valid_syntax_recomputes_the_replace_range_after_a_cut() -> None:
    cursor = context("a.py", "x = f(", ")\n")
    # `a) + 1)` with the `)` replaced: the result has one `)` too many; the cut before the last
    # closer (`a) + 1`) still replaces the auto-closed `)`.
    assert apply(keep_valid_syntax, "a) + 1)", cursor, 1) == Suggestion("a) + 1", 1)


@pytest.mark.parametrize(
    ("document", "raw", "expected"),
    [
        ("x = 1\n", "a\tb\r\nc", "a\tb\r\nc"),  # tab and line breaks are text
        ("x = 1\n", "ab\x00cd", "ab"),
        ("x = 1\n", "ab\x1b[0m", "ab"),
        ("x = 1\n", "ab\x7fcd", "ab"),
        ("x = 1\n", "ab\x9bcd", "ab"),  # C1
        ("x = 1\n", "\x0cdef g():", ""),  # nothing before it: nothing left to show
        ("a = 1\n\x0c\nb = 2\n", "\x0c\ndef g():", "\x0c\ndef g():"),  # a page break the file uses
        ("s = '\x00'\n", "ab\x00cd", "ab"),  # a NUL, even one the file holds
        ("x = 'é'\n", "ab\u00e9\u00a0cd", "ab\u00e9\u00a0cd"),  # not controls
    ],
)
def test_cut_control_characters(document: str, raw: str, expected: str) -> None:
    cursor = CursorContext.at(document, len(document), "a.py")
    assert apply(cut_control_characters, raw, cursor).text == expected


def test_a_nul_from_the_document_is_never_suggested() -> None:
    cursor = context("a.py", "data = '\x00'\nname = ", "\n")
    assert postprocess("'x\x00y'", cursor) == Suggestion("'x")
    assert postprocess("\x00\x00\x00", cursor) is None


@pytest.mark.parametrize(
    ("prefix", "text", "shown"),
    [
        ("return a +", " b", True),
        ("x = ", "1", True),
        ("    ", "pass", True),
        ("    ", "x", False),  # a lone short word on an empty line
        ("x = 1", ";", False),  # punctuation only
        ("foo(a", ")", False),
        ("", "  \n ", False),
    ],
)
def test_drop_trivial(prefix: str, text: str, shown: bool) -> None:
    result = apply(drop_trivial, text, context("a.py", prefix, "\n"))
    assert bool(result.text) is shown


def test_the_rules_run_in_the_documented_order() -> None:
    assert [rule.__name__ for rule in RULES] == [
        "cut_control_characters",
        "limit_scope",
        "trim_trailing_space",
        "drop_repetition",
        "fix_block_indentation",
        "drop_following_lines",
        "drop_suffix_echo",
        "consume_auto_closed",
        "closers_on_their_own_line",
        "keep_valid_syntax",
        "drop_trivial",
    ]
