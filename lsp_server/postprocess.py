"""What happens to raw model text before anyone sees it.

The Instruct models fill the hole and then often keep going (more lines, test code): the notes
measured it. So generation stops at the end of what the cursor asks for — the rest of the line
when the cursor is mid-line, else the indented block it sits in — and text the editor already has
after the cursor is not inserted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True)
class CursorContext:
    """The cursor's line, split at the cursor."""

    line_prefix: str
    line_suffix: str

    @property
    def mid_line(self) -> bool:
        """Code follows the cursor on its line: complete that line only."""
        return bool(self.line_suffix.strip())

    @property
    def block_indent(self) -> int:
        """Indentation of the block the cursor is in."""
        return _indent(self.line_prefix) if self.line_prefix.strip() else len(self.line_prefix)

    @property
    def opens_block(self) -> bool:
        """The cursor ends a line that opens a block: the completion is that block's body."""
        return self.line_prefix.rstrip().endswith((":", "{"))


def stop_rule(context: CursorContext) -> Callable[[str], int | None]:
    """A function telling where to cut generated text: end of line, or end of the block."""

    def end_of_line(text: str) -> int | None:
        index = text.find("\n")
        return index if index >= 0 else None

    def end_of_block(text: str) -> int | None:
        position = text.find("\n")
        while position >= 0:
            following = text.find("\n", position + 1)
            if following < 0:
                return None  # the next line is still being written
            line = text[position + 1 : following]
            if line.strip() and (
                _indent(line) < context.block_indent
                or (context.opens_block and _indent(line) <= context.block_indent)
            ):
                return position
            position = following
        return None

    return end_of_line if context.mid_line else end_of_block


def finalize(text: str, context: CursorContext) -> str:
    """The text to insert: cut by the stop rule, trailing blank lines and suffix echo removed."""
    cut = stop_rule(context)(text + "\n")
    if cut is not None:
        text = text[:cut]
    text = text.rstrip()
    closing = context.line_suffix.strip()
    if context.mid_line and closing and text.endswith(closing):
        text = text[: -len(closing)]
    return text if text.strip() else ""
