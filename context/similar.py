"""Code elsewhere in the workspace that looks like the code at the cursor, and what follows it.

A line often repeats a pattern another file already has (`url = URL(scope=scope)` after the
same guard, the same call with the same arguments in a sibling handler), and the definitions of
the names it uses do not say which of them it uses. So, in the spirit of RepoCoder's retrieval
and llama.vim's ring of chunks, the lines of other files that start as the cursor's line does
up to the cursor are looked up (only when that start names something: `parsed_host = `, not a
bare `if `), ranked by how many names and keywords the `CONTEXT_LINES` non-blank lines above
them share with those above the cursor (Jaccard similarity), and the best go into the prompt
with those lines and `FOLLOWING_LINES` after: what was written there is the guess for what
comes next here. Measured on `bench/repo_quality.py`'s holes (bench/RESULTS.md, "Repository
context"): lines found by similarity alone, or after a bare keyword, were copied where they did
not apply as often as they helped.

A file's lines and their name sets are cached per file text, so a request tokenises only the
cursor's lines. Sources are the workspace index's texts (secret files never read, ignored
files never indexed) and never the cursor's own file.
"""

from __future__ import annotations

import keyword
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from context.prompt import ContextPiece, TokenCounter

Source = Callable[[str], str | None]

CONTEXT_LINES = 2  # non-blank lines above a line that say where it is
FOLLOWING_LINES = 1  # lines after the line shown with it
MAX_SNIPPETS = 4
FILE_CACHE = 512  # files whose lines are kept (least recently used dropped)
# Words that say too little of a line's start to look for it elsewhere (`if `, `return `):
# Python's keywords and common ones of the other languages the index parses.
KEYWORDS = frozenset(keyword.kwlist) | {
    *("const", "let", "var", "function", "new", "throw", "export", "switch", "case"),
    *("fn", "pub", "mut", "use", "func", "go", "static", "struct", "type"),
}
_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Snippet:
    """Lines of another file like the cursor's, and how alike (0..1)."""

    path: str
    start: int  # first line (0-based)
    text: str
    similarity: float


@dataclass(frozen=True)
class _Line:
    number: int  # 0-based
    start: int  # first line shown with it: `CONTEXT_LINES` non-blank lines above
    code: str  # the line without its indentation
    names: frozenset[str]  # of the lines above it


def names_of(text: str) -> frozenset[str]:
    """The names and keywords in `text`."""
    return frozenset(_NAME.findall(text))


def _above(lines: list[str], number: int) -> list[int]:
    """The numbers of the `CONTEXT_LINES` non-blank lines above line `number`, in order."""
    found: list[int] = []
    for above in range(number - 1, -1, -1):
        if len(found) == CONTEXT_LINES:
            break
        if lines[above].strip():
            found.append(above)
    return found[::-1]


class SimilarCode:
    """Finds the windows of other files most like the code before a cursor."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._lines: OrderedDict[str, tuple[str, list[_Line]]] = OrderedDict()

    def find(self, current: str, text: str, offset: int, paths: list[str]) -> list[Snippet]:
        """Up to `MAX_SNIPPETS` snippets of `paths` (not `current`) like the code before
        `offset` in `text`, most alike first, none overlapping another of the same file.

        Only lines that start as the cursor's line does up to the cursor are candidates
        (`url = ` finds `url = URL(scope=scope)`), and only when that start names something
        (not a bare `if ` or `return `); they are ranked by how many names the lines above them
        share with the lines above the cursor (Jaccard similarity)."""
        lines = text[:offset].split("\n")
        typed = lines[-1].strip()
        if not set(_NAME.findall(typed)) - KEYWORDS:
            return []
        query = names_of("\n".join(lines[n] for n in _above(lines, len(lines) - 1)))
        scored: list[tuple[float, str, _Line]] = []
        for path in paths:
            if path == current:
                continue
            for line in self._file_lines(path):
                if line.code.startswith(typed):
                    union = len(query | line.names)
                    scored.append((len(query & line.names) / union if union else 0.0, path, line))
        scored.sort(key=lambda item: (-item[0], item[1], item[2].number))
        chosen: list[Snippet] = []
        taken: dict[str, list[tuple[int, int]]] = {}
        for similarity, path, line in scored:
            spans = taken.setdefault(path, [])
            end = line.number + 1 + FOLLOWING_LINES
            if any(
                line.start < taken_end and taken_start < end for taken_start, taken_end in spans
            ):
                continue
            spans.append((line.start, end))
            chosen.append(self._snippet(path, line.start, end, similarity))
            if len(chosen) == MAX_SNIPPETS:
                break
        return chosen

    def _snippet(self, path: str, start: int, end: int, similarity: float) -> Snippet:
        lines = (self._source(path) or "").split("\n")
        return Snippet(path, start, "\n".join(lines[start:end]).rstrip(), similarity)

    def _file_lines(self, path: str) -> list[_Line]:
        """`path`'s non-blank lines, cached while its text is unchanged."""
        text = self._source(path)
        if text is None:
            self._lines.pop(path, None)
            return []
        cached = self._lines.get(path)
        if cached is not None and cached[0] == text:
            self._lines.move_to_end(path)
            return cached[1]
        lines = _lines_of(text)
        self._lines[path] = (text, lines)
        if len(self._lines) > FILE_CACHE:
            self._lines.popitem(last=False)
        return lines


def _lines_of(text: str) -> list[_Line]:
    """Every non-blank line with the names of the lines above it."""
    lines = text.split("\n")
    found = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        above = _above(lines, number)
        names = names_of("\n".join(lines[n] for n in above))
        found.append(_Line(number, above[0] if above else number, line.strip(), names))
    return found


def snippet_pieces(
    snippets: list[Snippet], count: TokenCounter, budget_tokens: int
) -> tuple[list[ContextPiece], int]:
    """Pieces for `snippets` (most alike first) while they fit `budget_tokens`, each costing
    its text plus the <|file_sep|> token; and the tokens left."""
    pieces: list[ContextPiece] = []
    left = budget_tokens
    for snippet in snippets:
        piece = ContextPiece(snippet.path, snippet.text, outlined=True)
        cost = count(piece.text()) + 1
        if cost <= left:
            pieces.append(piece)
            left -= cost
    return pieces, left


def fit_snippet(snippet: Snippet, count: TokenCounter, budget_tokens: int) -> Snippet | None:
    """`snippet` as a piece of at most `budget_tokens` (its text and the <|file_sep|> token):
    whole, or its first lines; None when not even the first fits."""
    lines = snippet.text.split("\n")
    while lines:
        cut = replace(snippet, text="\n".join(lines))
        if count(ContextPiece(cut.path, cut.text, outlined=True).text()) + 1 <= budget_tokens:
            return cut
        lines = lines[: len(lines) * 3 // 4]
    return None
