"""Code elsewhere in the workspace that looks like the code at the cursor, and what follows it.

A line often repeats a pattern another file already has (`raise Abort() from None` after
`except KeyboardInterrupt:`, the same call with the same arguments in a sibling handler), and
the definitions of the names it uses do not say which of them it uses. So, as RepoCoder and
llama.vim's chunk ring do, the lines before the cursor are compared with windows of the other
files' lines (Jaccard similarity of their sets of names and keywords), and the best windows go
into the prompt together with the lines that follow them: what came next there is the guess
for what comes next here.

Windows are `WINDOW_LINES` non-blank lines long, starting every `STRIDE` lines; their name sets
are cached per file text, so a request tokenises only the cursor's lines.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from context.prompt import ContextPiece, TokenCounter

Source = Callable[[str], str | None]

CONTEXT_LINES = 3  # non-blank lines before a line that say where it is
FOLLOWING_LINES = 2  # lines after the line shown with it
MIN_SIMILARITY = 0.3  # Jaccard similarity below which lines are not worth their tokens
MAX_SNIPPETS = 4
FILE_CACHE = 512  # files whose lines are kept (least recently used dropped)
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

        A line is alike when the lines above it share names with the lines above the cursor's
        (Jaccard similarity, at least `MIN_SIMILARITY`), and more so when it starts as the
        cursor's line does up to the cursor (`url = ` finds `url = URL(scope=scope)`)."""
        lines = text[:offset].split("\n")
        typed = lines[-1].strip()
        query = names_of("\n".join(lines[n] for n in _above(lines, len(lines) - 1)))
        if not query:
            return []
        anchored = bool(_NAME.search(typed))
        scored: list[tuple[float, str, _Line]] = []
        for path in paths:
            if path == current:
                continue
            for line in self._file_lines(path):
                union = len(query | line.names)
                similarity = len(query & line.names) / union if union else 0.0
                if anchored and line.code.startswith(typed):
                    similarity += 1.0
                if similarity >= MIN_SIMILARITY:
                    scored.append((similarity, path, line))
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
