"""Fill-in-the-middle prompts for Qwen2.5-Coder under an exact token budget.

The prompt is kept as (text, is_special) segments so that the engine can emit control tokens by
id while user text is tokenized as plain text (a file containing "<|endoftext|>" stays text).
The prefix window starts on a line boundary that moves in steps of `LINE_STRIDE` lines, so
consecutive keystrokes produce prompts that share a long token prefix and hit the KV cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
Segments = list[tuple[str, bool]]
LINE_STRIDE = 16


@dataclass(frozen=True)
class FimBudget:
    """Token quotas of the parts of an in-file prompt."""

    prefix_tokens: int = 1024
    suffix_tokens: int = 256


@dataclass(frozen=True)
class FimPrompt:
    """A prompt ready to encode, and the text it was cut from."""

    segments: Segments
    prefix: str
    suffix: str
    tokens: int

    @property
    def text(self) -> str:
        """The prompt as one string (what --show-prompt prints)."""
        return "".join(text for text, _ in self.segments)


def _fim_segments(prefix: str, suffix: str) -> Segments:
    return [
        ("<|fim_prefix|>", True),
        (prefix, False),
        ("<|fim_suffix|>", True),
        (suffix, False),
        ("<|fim_middle|>", True),
    ]


def _prefix_window(lines: list[str], cursor_line: str, count: TokenCounter, budget: int) -> int:
    """Index of the first line kept before the cursor line: as early as the budget allows,
    rounded forward to a multiple of LINE_STRIDE so that it rarely moves."""
    used = count(cursor_line)
    start = len(lines)
    while start > 0 and used + count(lines[start - 1]) <= budget:
        start -= 1
        used += count(lines[start])
    return -(-start // LINE_STRIDE) * LINE_STRIDE if start > 0 else 0


def build_fim_prompt(
    text: str, offset: int, count: TokenCounter, budget: FimBudget | None = None
) -> FimPrompt:
    """The in-file FIM prompt for a cursor at character `offset` of `text`, within `budget`."""
    budget = budget or FimBudget()
    before, after = text[:offset], text[offset:]
    *lines, cursor_line = before.split("\n")
    lines = [line + "\n" for line in lines]
    start = _prefix_window(lines, cursor_line, count, budget.prefix_tokens)
    prefix = "".join(lines[start:]) + cursor_line
    # Whole lines of suffix from the cursor on, while they fit.
    suffix_lines = after.splitlines(keepends=True)
    kept, used = 0, 0
    while kept < len(suffix_lines) and used + count(suffix_lines[kept]) <= budget.suffix_tokens:
        used += count(suffix_lines[kept])
        kept += 1
    suffix = "".join(suffix_lines[:kept])
    # Line-by-line counts can differ from the joined text's by a merge at line ends: check the
    # real totals and drop whole strides/lines until both parts fit exactly.
    while count(prefix) > budget.prefix_tokens and start < len(lines):
        start += LINE_STRIDE
        prefix = "".join(lines[start:]) + cursor_line
    while count(suffix) > budget.suffix_tokens and kept > 0:
        kept -= 1
        suffix = "".join(suffix_lines[:kept])
    prefix_tokens, suffix_tokens = count(prefix), count(suffix)
    if prefix_tokens > budget.prefix_tokens:
        # A single cursor line longer than the budget: keep its end, cut by characters.
        prefix = _tail_within(prefix, count, budget.prefix_tokens)
        prefix_tokens = count(prefix)
    logger.debug("FIM prompt: prefix %d tokens, suffix %d tokens", prefix_tokens, suffix_tokens)
    return FimPrompt(
        _fim_segments(prefix, suffix), prefix, suffix, prefix_tokens + suffix_tokens + 3
    )


def _tail_within(text: str, count: TokenCounter, budget: int) -> str:
    """The longest tail of `text` that fits `budget` tokens (binary search on characters)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if count(text[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    return text[low:]
