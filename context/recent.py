"""Code the user edited lately in other files, as a source of repository context.

Continue puts the ranges the user edited recently into its prompts, Copilot the neighbouring
tabs: what the user just wrote elsewhere is often what the line at the cursor calls or mirrors
(a helper written in one module, then used in another). The workspace index reports every
change of an editor buffer; the lines it changed are kept as regions (the newest `REGIONS`; an
edit within `NEAR_LINES` of a region of its file extends that region) until the buffer is
closed, and a prompt shows the newest regions of files other than the cursor's, each widened
to the definition that holds it (the function or method written, not only its last line),
`MAX_LINES` at most.

Only buffers the index accepts are noted (never a secret or an ignored file), and the text
shown is the index's text of the file now, so a region of a file that became unreadable shows
nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from context.similar import Snippet, Source

REGIONS = 8  # regions kept, newest first
NEAR_LINES = 3  # an edit this close to a region of its file extends it
MAX_LINES = 30  # lines of one region shown at most
CLOSERS = ("}", ")", "]")  # a block's last line in brace-like languages
# What opens a definition: a region inside one shows it from there, not its whole class.
DEFINES = ("def ", "async def ", "class ", "func ", "fn ", "pub fn ", "function ")


@dataclass(frozen=True)
class Region:
    """Lines `first`..`last` (0-based, inclusive) of `path`'s text after its latest edit."""

    path: str
    first: int
    last: int


class Change(NamedTuple):
    """Where two texts differ, in lines (0-based): lines `first`..`old_end` of the old text
    became `first`..`new_end` of the new one (`old_end` / `new_end`: where the unchanged rest
    starts), `last` being the last line of the new text with a changed character."""

    first: int
    old_end: int
    new_end: int
    last: int


def changed_lines(old: str, new: str) -> Change | None:
    """Where `new` differs from `old`, in lines; None when they are equal."""
    if old == new:
        return None
    shorter = min(len(old), len(new))
    start = _longest(lambda size: new.startswith(old[:size]), shorter)
    end = _longest(lambda size: new.endswith(old[len(old) - size :]), shorter - start)
    stop = len(new) - end
    first = new.count("\n", 0, start)
    last = new.count("\n", 0, stop - 1) if stop > start else first
    return Change(first, old.count("\n", 0, len(old) - end), new.count("\n", 0, stop), last)


def _longest(holds: Callable[[int], bool], limit: int) -> int:
    """The largest size up to `limit` for which `holds` (true up to some size, false beyond),
    by halving: each test compares a whole slice in C."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if holds(middle):
            low = middle
        else:
            high = middle - 1
    return low


class RecentEdits:
    """The regions of the workspace the user edited lately (thread-safe)."""

    def __init__(self) -> None:
        self._regions: list[Region] = []  # oldest first
        self._lock = threading.Lock()

    def note(self, path: str, old: str, new: str) -> None:
        """The buffer of `path` changed from `old` to `new`."""
        change = changed_lines(old, new)
        if change is None:
            return
        shift = change.new_end - change.old_end  # lines the edit added (removed: < 0)
        with self._lock:
            kept, merged = [], Region(path, change.first, max(change.first, change.last))
            for region in self._regions:
                near = (change.first - NEAR_LINES, change.old_end + NEAR_LINES)
                if region.path != path:
                    kept.append(region)
                elif region.last >= near[0] and region.first <= near[1]:
                    last = region.last + shift if region.last > change.old_end else 0
                    merged = Region(path, min(region.first, merged.first), max(last, merged.last))
                elif region.first > change.old_end:  # below the edit
                    kept.append(Region(path, region.first + shift, region.last + shift))
                else:
                    kept.append(region)
            self._regions = [*kept, merged][-REGIONS:]

    def forget(self, path: str) -> None:
        """The editor closed `path`: its edits are no longer a source (as Copilot's
        neighbouring tabs are the open ones)."""
        with self._lock:
            self._regions = [region for region in self._regions if region.path != path]

    def regions(self, current: str) -> list[Region]:
        """The regions of files other than `current`, newest first."""
        with self._lock:
            return [region for region in reversed(self._regions) if region.path != current]

    def snippets(self, current: str, source: Source) -> list[Snippet]:
        """The text of each region of a file other than `current` (`source`: a file's text
        now, or None), widened to the top-level statements holding it, newest first."""
        found = []
        for region in self.regions(current):
            text = source(region.path)
            if text is None:
                continue
            lines = text.split("\n")
            start, end = _block_span(lines, region)
            shown = "\n".join(lines[start : end + 1]).strip("\n")
            if shown.strip():
                found.append(Snippet(region.path, start, shown, 1.0))
        return found


def _block_span(lines: list[str], region: Region) -> tuple[int, int]:
    """Lines (first, last) of the definition holding `region` in `lines`: from the nearest
    line above it that opens a definition (`DEFINES`: a method's `def` inside a class), else
    the top-level statement holding it, to the end of that block (a closing brace there still
    belongs to it), `MAX_LINES` at most (the last of them ending at the edit when it is further
    down)."""
    first = min(region.first, len(lines) - 1)
    last = min(max(region.last, first), len(lines) - 1)
    while first < last and not lines[first].strip():  # blank lines say nothing of where
        first += 1
    while last > first and not lines[last].strip():
        last -= 1
    start = first
    while _indent(lines[start]) > 0 or not lines[start].strip():
        opener = _opener(lines, start)
        if opener == start:
            break
        start = opener
        if lines[start].lstrip().startswith(DEFINES):
            break
    while start > 0 and lines[start].lstrip().startswith(CLOSERS):  # a signature's last line
        start = _statement_above(lines, start)
    indent, end = _indent(lines[start]), last
    while end + 1 < len(lines) and not _ends_block(lines[end + 1], indent):
        end += 1
    start = max(start, last - MAX_LINES + 1)  # the edited lines, if not all of the block
    return start, min(end, start + MAX_LINES - 1)


def _opener(lines: list[str], number: int) -> int:
    """The nearest non-blank line above line `number` indented less than it (the line that
    opens its block), else `number`."""
    indent = _indent(lines[number])
    for above in range(number - 1, -1, -1):
        if lines[above].strip() and _indent(lines[above]) < indent:
            return above
    return number


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _statement_above(lines: list[str], number: int) -> int:
    """The nearest non-blank line above line `number` indented no deeper (where the statement
    that line `number` closes starts), else `number`."""
    indent = _indent(lines[number])
    for above in range(number - 1, -1, -1):
        if lines[above].strip() and _indent(lines[above]) <= indent:
            return above
    return number


def _ends_block(line: str, indent: int) -> bool:
    """Whether `line` ends a block opened at `indent`: code indented no deeper, other than a
    closer."""
    code = line.strip()
    if not code or _indent(line) > indent:
        return False
    return not code.startswith(CLOSERS) and code != "end"
