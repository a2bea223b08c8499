"""Where things are, as LSP says it: positions (0-based lines, UTF-16 code-unit columns) against
Python string offsets, and document URIs against file paths. The one home of these conversions:
the LSP surface, the code actions and the command line all use it.

Lone surrogates (undecodable bytes an editor passed through) count one unit, as they do in the
editor, and never raise.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pygls.uris import from_fs_path, to_fs_path


class PositionError(ValueError):
    """A position outside the text; the message says which part is out and the valid range."""


def utf16_len(text: str) -> int:
    """How many UTF-16 code units `text` takes (astral characters take two)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _column_offset(line: str, character: int) -> int | None:
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


def offset_of(text: str, line: int, character: int) -> int:
    """The index into `text` of an LSP position; PositionError when it is outside the text."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        raise PositionError(f"line {line} is outside the file (0..{len(lines) - 1}, 0-based)")
    column = _column_offset(lines[line], character)
    if column is None:
        width = utf16_len(lines[line])
        raise PositionError(f"character {character} is outside line {line} (0..{width}, 0-based)")
    return sum(len(item) + 1 for item in lines[:line]) + column


def position_of(text: str, offset: int) -> types.Position:
    """The LSP position of character `offset` in `text`."""
    start = text.rfind("\n", 0, offset) + 1
    return types.Position(line=text.count("\n", 0, offset), character=utf16_len(text[start:offset]))


def path_of(uri: str) -> Path | None:
    """The file path of a `file:` URI; None for other schemes."""
    path = to_fs_path(uri)
    return Path(path) if path is not None else None


def path_or_name(uri: str) -> Path:
    """The file path of `uri`, or for another scheme (an untitled buffer) its last segment,
    which still names the language and the file in prompts."""
    return path_of(uri) or Path(uri.rsplit("/", 1)[-1])


def uri_of(path: Path) -> str:
    """The `file:` URI of `path`."""
    return from_fs_path(str(path)) or path.as_uri()
