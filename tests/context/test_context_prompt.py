"""Prompt assembly: Qwen's layouts, exact token budgets, stability across keystrokes."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context.prompt import (
    ContextPiece,
    Prompt,
    PromptBudget,
    PromptLayout,
    build_prompt,
    select_context,
)
from runtime.tokenizer import QwenTokenizer

CODE = "".join(
    f"def function_{i}(value):\n    '''Doubles value {i} times.'''\n    return value * {i}\n\n"
    for i in range(120)
)


def test_in_file_prompt_layout(qwen_tokenizer: QwenTokenizer) -> None:
    text = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
    offset = text.index("return ") + len("return ")
    prompt = build_prompt("calc.py", text, offset, lambda t: len(qwen_tokenizer.encode(t)))
    # The typed line leads the middle, its trailing blank left for the answer to start with;
    # the suffix starts at the next line (the line break is the middle's to write).
    assert prompt.text == (
        "<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\nprint(add(1, 2))\n<|fim_middle|>    return"
    )
    assert prompt.suffix == "\n\nprint(add(1, 2))\n"
    assert (prompt.lead, prompt.heal) == ("    return", " ")
    assert prompt.files == ["calc.py"]
    assert prompt.tokens == len(qwen_tokenizer.encode_segments(prompt.segments))


def test_repo_prompt_layout(qwen_tokenizer: QwenTokenizer) -> None:
    pieces = [
        ContextPiece("pkg/util.py", "def helper():\n    return 1"),
        ContextPiece("b.py", "X = 2"),
    ]
    prompt = build_prompt(
        "main.py",
        "import pkg.util\n",
        16,
        lambda t: len(qwen_tokenizer.encode(t)),
        repo_name="demo",
        context=pieces,
    )
    assert prompt.text == (
        "<|repo_name|>demo\n<|file_sep|>pkg/util.py\ndef helper():\n    return 1\n"
        "<|file_sep|>b.py\nX = 2\n<|file_sep|>main.py\n"
        "<|fim_prefix|>import pkg.util\n<|fim_suffix|><|fim_middle|>"
    )
    assert prompt.files == ["pkg/util.py", "b.py", "main.py"]
    assert prompt.tokens == len(qwen_tokenizer.encode_segments(prompt.segments))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(0, len(CODE)),
    prefix_tokens=st.integers(1, 400),
    suffix_tokens=st.integers(0, 200),
    repo_tokens=st.integers(0, 600),
    window_slack=st.integers(0, 1500),
    noise=st.text(string.printable + "äß漢字🫠\t", max_size=40),
)
def test_budgets_are_exact_and_never_exceeded(
    qwen_tokenizer: QwenTokenizer,
    cut: int,
    prefix_tokens: int,
    suffix_tokens: int,
    repo_tokens: int,
    window_slack: int,
    noise: str,
) -> None:
    def count(text: str) -> int:
        return len(qwen_tokenizer.encode(text))

    text = CODE[:cut] + noise + CODE[cut:]
    offset = cut + len(noise) // 2
    window_tokens = prefix_tokens + suffix_tokens + 64 + 64 + window_slack
    budget = PromptBudget(repo_tokens, prefix_tokens, suffix_tokens, 64, window_tokens)
    candidates = [
        (
            f"mod_{i}.py",
            CODE[i * 500 : i * 500 + 700],
            lambda room, i=i: f"def function_{i}(value): ..."[: max(room, 0)],
        )
        for i in range(8)
    ]
    context = select_context(candidates, count, budget.repo_tokens)
    assert sum(count(piece.text()) + 1 for piece in context) <= repo_tokens
    prompt = build_prompt("cur.py", text, offset, count, budget, repo_name="r", context=context)
    ids = qwen_tokenizer.encode_segments(prompt.segments)
    assert prompt.tokens == len(ids)
    assert count(prompt.prefix) <= prefix_tokens
    assert count(prompt.suffix) <= suffix_tokens
    assert text[:offset].endswith(prompt.prefix)
    assert text[offset:].startswith(prompt.suffix)
    assert prompt.prefix.endswith(prompt.lead + prompt.heal) and "\n" not in prompt.lead
    assert prompt.tokens + 64 <= window_tokens


def test_typing_keeps_the_prompt_prefix(qwen_tokenizer: QwenTokenizer) -> None:
    def count(text: str) -> int:
        return len(qwen_tokenizer.encode(text))

    offset = CODE.index("return value * 80") + len("return ")
    budget = PromptBudget(prefix_tokens=600)
    before = build_prompt("m.py", CODE, offset, count, budget)
    typed = CODE[:offset] + "value + " + CODE[offset:]
    after = build_prompt("m.py", typed, offset + 8, count, budget)
    assert after.prefix == before.prefix + "value + "
    assert (after.lead, after.heal) == ("    return value +", " ")
    shared = 0
    for a, b in zip(
        qwen_tokenizer.encode_segments(before.segments),
        qwen_tokenizer.encode_segments(after.segments),
        strict=False,
    ):
        if a != b:
            break
        shared += 1
    # Only the typed line's last token can change: the suffix stays cached.
    assert shared >= before.tokens - 1


def _shared(one: list[int], two: list[int]) -> int:
    """Tokens two sequences share from the start."""
    shared = 0
    while shared < min(len(one), len(two)) and one[shared] == two[shared]:
        shared += 1
    return shared


def test_a_prompt_built_on_an_earlier_one_keeps_its_window_and_pieces(
    qwen_tokenizer: QwenTokenizer,
) -> None:
    def count(text: str) -> int:
        return len(qwen_tokenizer.encode(text))

    def ids(prompt: Prompt) -> list[int]:
        return qwen_tokenizer.encode_segments(prompt.segments)

    budget = PromptBudget(prefix_tokens=200, suffix_tokens=16)
    util = ContextPiece("util.py", "def helper(value):\n    return value")
    offset = CODE.index("def function_30")
    earlier = build_prompt("m.py", CODE, offset, count, budget, repo_name="r", context=[util])
    held = earlier.held()
    assert held.pieces == (util,) and CODE[held.prefix_start :].startswith(earlier.prefix)
    # Typing 17 lines moves the window chosen afresh on, and a definition is appended.
    typed = "".join(f"x{number} = helper({number})\n" for number in range(17))
    text, cursor = CODE[:offset] + typed + CODE[offset:], offset + len(typed)
    grown = [util, ContextPiece("more.py", "Z = 3")]
    fresh = build_prompt("m.py", text, cursor, count, budget, repo_name="r", context=grown)
    start = held.start_in(text, cursor)
    kept = build_prompt(
        "m.py", text, cursor, count, budget, repo_name="r", context=held.pieces, prefix_start=start
    )
    assert fresh.prefix_start > held.prefix_start == kept.prefix_start
    assert kept.prefix == text[held.prefix_start : cursor] and kept.pieces == (util,)
    # The kept prompt shares the earlier one's tokens up to its suffix (the engine's cache
    # holds them); the fresh one differs from the appended piece on.
    up_to_suffix = len(qwen_tokenizer.encode_segments(earlier.segments[:-3]))
    assert _shared(ids(kept), ids(earlier)) >= up_to_suffix - 1
    assert _shared(ids(fresh), ids(earlier)) < up_to_suffix // 2
    assert kept.tokens == len(ids(kept)) and count(kept.prefix) <= budget.held_prefix_tokens
    # Not past the held quota, nor where the line the window started on changed.
    far = len(CODE) // 2
    assert build_prompt("m.py", CODE, far, count, budget, prefix_start=start).prefix_start > start
    assert held.start_in("# edited\n" + CODE, offset + 9) is None
    assert held.start_in(CODE, held.prefix_start - 1) is None  # the cursor is above it


def test_the_lead_keeps_tokenization(qwen_tokenizer: QwenTokenizer) -> None:
    """The typed line moved after <|fim_middle|> is tokenized as it is in the file."""
    text = (
        "class A:\n    def f(self):  \n        return {'a': [1,\n  2]}\t\n"
        '\tx = \'é漢\' + """doc ( \n'
    )
    for offset in range(len(text) + 1):
        prompt = build_prompt("m.py", text, offset, lambda t: len(qwen_tokenizer.encode(t)))
        kept = prompt.prefix[: len(prompt.prefix) - len(prompt.heal)]
        in_file = qwen_tokenizer.encode(kept)
        split = qwen_tokenizer.encode(kept[: len(kept) - len(prompt.lead)])
        split += qwen_tokenizer.encode(prompt.lead)
        assert split == in_file, offset


def test_a_line_too_long_to_lead_stays_in_the_prefix(qwen_tokenizer: QwenTokenizer) -> None:
    text = "x = [" + ", ".join(str(i) for i in range(400)) + ", \n"
    prompt = build_prompt("m.py", text, len(text) - 1, lambda t: len(qwen_tokenizer.encode(t)))
    assert prompt.lead == ""
    assert prompt.text.endswith("<|fim_suffix|><|fim_middle|>")


def test_impossible_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        PromptBudget(prefix_tokens=4000, window_tokens=4096)


def test_select_context_prefers_whole_files_then_outlines() -> None:
    def count(text: str) -> int:
        return len(text)

    candidates = [
        ("a.py", "x" * 50, lambda room: "a-outline"),
        ("b.py", "y" * 500, lambda room: "b-outline"[:room]),
        ("c.py", "z" * 500, lambda room: ""),
    ]
    chosen = select_context(candidates, count, 80)
    assert [(p.path, p.outlined) for p in chosen] == [("a.py", False), ("b.py", True)]


@pytest.mark.parametrize("offset", [0, len(CODE)])
def test_cursor_at_the_ends(qwen_tokenizer: QwenTokenizer, offset: int) -> None:
    prompt = build_prompt("m.py", CODE, offset, lambda t: len(qwen_tokenizer.encode(t)))
    assert prompt.tokens == len(qwen_tokenizer.encode_segments(prompt.segments))


@pytest.mark.parametrize(
    ("line", "lead", "heal"),
    [
        ("    total = count(a, ", "    total = count(a,", " "),
        ("    total = ", "    total =", " "),
        ("    total =", "    total =", ""),
        ("    total = count(", "    total = count", "("),
        ("    items.", "    items", "."),
        ("    rows[", "    rows", "["),
        ("    f(g(", "    f(g", "("),
        ("    f()(", "", ""),
        ("    f().", "", ""),
        ("    retu", "", ""),
        ("    total = compute_total", "", ""),
        ("        ", "", ""),
        ("    if (done) {", "", ""),
        ("    return total;", "", ""),
        ("    def run(self):", "", ""),
        ("    }", "", ""),
        ("    call(a, b)", "", ""),
    ],
)
def test_which_lines_lead_the_middle(
    qwen_tokenizer: QwenTokenizer, line: str, lead: str, heal: str
) -> None:
    """Lines that go on lead (a trailing blank, or a word's `(`, `.` or `[`, healed); a blank
    line, a line that may be complete or a word being typed stay in the prefix, where the model
    does better on them."""
    text = f"class Job:\n{line}\n    pass\n"
    offset = len("class Job:\n") + len(line)
    prompt = build_prompt("m.py", text, offset, lambda t: len(qwen_tokenizer.encode(t)))
    assert (prompt.lead, prompt.heal) == (lead, heal)
    assert prompt.text.endswith("<|fim_middle|>" + lead)
    assert prompt.tokens == len(qwen_tokenizer.encode_segments(prompt.segments))


def test_psm_order_on_request(qwen_tokenizer: QwenTokenizer) -> None:
    text = "def add(a, b):\n    return \n"
    offset = text.index("return ") + len("return ")
    prompt = build_prompt(
        "calc.py",
        text,
        offset,
        lambda t: len(qwen_tokenizer.encode(t)),
        layout=PromptLayout(typed_line_leads=False, suffix_from_next_line=False),
    )
    assert (prompt.lead, prompt.heal) == ("", "")
    assert prompt.text == "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"


@pytest.mark.parametrize(
    ("text", "offset", "fim_suffix"),
    [
        # At the end of a line: the suffix starts at the next line, CRLF or LF.
        ("x = 1\ny = 2\n", 5, "y = 2\n"),
        ("x = 1\r\ny = 2\r\n", 5, "y = 2\r\n"),
        # Code after the cursor on its line, or a blank run before the break: unchanged.
        ("f(x)\ny = 2\n", 2, "x)\ny = 2\n"),
        ("x = 1  \ny = 2\n", 5, "  \ny = 2\n"),
        # End of file: nothing to leave out.
        ("x = 1", 5, ""),
    ],
)
def test_suffix_from_next_line(
    qwen_tokenizer: QwenTokenizer, text: str, offset: int, fim_suffix: str
) -> None:
    def count(part: str) -> int:
        return len(qwen_tokenizer.encode(part))

    # (No line leads the middle here, so that the prompt ends with the suffix's segment.)
    prompt = build_prompt("m.py", text, offset, count, layout=PromptLayout(typed_line_leads=False))
    assert prompt.suffix == text[offset:]
    assert prompt.text.endswith(f"<|fim_suffix|>{fim_suffix}<|fim_middle|>"), prompt.text
    assert prompt.tokens == len(qwen_tokenizer.encode_segments(prompt.segments))
    kept = build_prompt(
        "m.py", text, offset, count, layout=PromptLayout(False, suffix_from_next_line=False)
    )
    assert kept.text.endswith(f"<|fim_suffix|>{text[offset:]}<|fim_middle|>"), kept.text


def test_layout_for_model() -> None:
    # Measured per model (context/prompt.py): the 0.5B keeps the line break; explicit settings win.
    assert PromptLayout.for_model("qwen2.5-coder-1.5b").suffix_from_next_line
    assert PromptLayout.for_model(None).suffix_from_next_line
    assert not PromptLayout.for_model("qwen2.5-coder-0.5b").suffix_from_next_line
    forced = PromptLayout.for_model("qwen2.5-coder-0.5b", suffix_from_next_line=True)
    assert forced.suffix_from_next_line
    assert not PromptLayout.for_model(None, typed_line_leads=False).typed_line_leads
