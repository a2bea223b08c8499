"""LSP positions: lines and UTF-16 code-unit columns against Python string offsets.

Lone surrogates (undecodable bytes an editor passed through) count one unit, as they do in the
editor, and never raise.
"""

from __future__ import annotations


def utf16_len(text: str) -> int:
    """How many UTF-16 code units `text` takes (astral characters take two)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def column_offset(line: str, character: int) -> int | None:
    """The index into `line` of UTF-16 column `character`; a column inside an astral character
    points before it; None when outside the line."""
    if character < 0:
        return None
    units = 0
    for index, char in enumerate(line):
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > character:
            return index
        units += width
    return len(line) if units == character else None


def offset_at(text: str, line: int, character: int) -> int | None:
    """The index into `text` of an LSP position (0-based line, UTF-16 column), or None when the
    position is outside the text."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    column = column_offset(lines[line], character)
    if column is None:
        return None
    return sum(len(item) + 1 for item in lines[:line]) + column
