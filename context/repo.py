"""Repository context for a cursor: the import graph kept in step with the index, the files
worth showing, and a memo that keeps the chosen context identical across keystrokes."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from context.definitions import Definition, DefinitionResolver, Resolved, select_definitions
from context.graph import ImportGraph, prompt_order, rank_context_files
from context.imports import WorkspaceLayout, config_paths, extract_imports, resolve_imports
from context.index import WorkspaceIndex
from context.parsing import language_for_path
from context.prompt import ContextPiece, TokenCounter, select_context
from context.similar import SimilarCode, fit_snippet, snippet_pieces
from context.snippets import identifiers, outline

logger = logging.getLogger(__name__)

CANDIDATES = 16  # files ranked per request before the budget picks among them
# Share of the repository budget for file outlines when the cursor is known; the definitions
# the cursor's code uses get the rest (and what the outlines leave).
OUTLINE_SHARE = 0.5
# A smaller budget goes to the definitions whole: outlines in half of 256 tokens cost 7 points
# of definition recall (`python -m bench.repo_quality --prompts-only`: 89 % against 96 %).
MIN_OUTLINED_BUDGET = 512
# Tokens of the repository budget for code like the cursor's (`context.similar`), at most.
SIMILAR_TOKENS = 128
SIMILAR_FILES = 256  # files searched for it, at most (their lines are cached)
# Tokens of the repository budget for code the user edited lately in other files
# (`context.recent`), at most.
RECENT_TOKENS = 96


@dataclass(frozen=True)
class _Memo:
    """The repository part last chosen for a file, and what it was chosen for."""

    key: tuple[object, ...]  # what the outlines depend on
    scope: str | None  # the enclosing function the definitions were chosen in
    pieces: list[ContextPiece]
    seen: frozenset[tuple[str, str]]  # definitions considered: shown, or not fitting
    left: int  # tokens of the budget still free
    similar_left: int = 0  # of those, what code like the cursor's may still take
    similar_seen: frozenset[tuple[str, int]] = frozenset()  # snippets considered (path, line)


class RepoContext:
    """Import graph of one workspace, updated from its index's change notifications."""

    def __init__(self, index: WorkspaceIndex) -> None:
        self.index = index
        self.graph = ImportGraph()
        self._layout = WorkspaceLayout([])
        self._changes: defaultdict[str, int] = defaultdict(int)
        self._memo: dict[str, _Memo] = {}
        self._definitions = DefinitionResolver(index.text)
        self._similar = SimilarCode(index.text)
        self.similar_tokens = SIMILAR_TOKENS
        self.recent_tokens = RECENT_TOKENS
        self._lock = threading.Lock()
        index.add_listener(self._on_change)

    def build(self) -> None:
        """Analyse every file once (after the index's first refresh)."""
        started = time.monotonic()
        paths = self.index.paths()
        with self._lock:
            self._layout = self._make_layout(paths)
            for path in paths:
                self._analyse(path)
        logger.info(
            "import graph of %s: %d files in %.2f s",
            self.index.name,
            len(paths),
            time.monotonic() - started,
        )

    def _make_layout(self, paths: list[str]) -> WorkspaceLayout:
        configs = {path: self.index.text(path) or "" for path in config_paths(paths)}
        return WorkspaceLayout(paths, configs)

    def _analyse(self, path: str) -> None:
        if language_for_path(path) is None:
            return
        text = self.index.text(path)
        if text is None:
            self.graph.remove(path)
            return
        refs = extract_imports(path, text)
        self.graph.update(path, resolve_imports(path, refs, self._layout))

    def _on_change(self, changed: set[str]) -> None:
        with self._lock:
            present = set(self.index.paths())
            if changed - self._layout.paths or any(p not in present for p in changed):
                # Files appeared or vanished: imports elsewhere may now resolve differently.
                self._layout = self._make_layout(sorted(present))
            for path in changed:
                self._changes[path] += 1
                if path in present:
                    self._analyse(path)
                else:
                    self.graph.remove(path)

    def context_for(
        self,
        current: str,
        count: TokenCounter,
        budget_tokens: int,
        *,
        text: str | None = None,
        offset: int | None = None,
    ) -> list[ContextPiece]:
        """Files to show before `current`, within `budget_tokens`.

        Outlines of the ranked files come first, dependencies first, within
        `OUTLINE_SHARE` of the budget: they do not depend on the cursor, so the repository part
        of the prompt starts with the same bytes wherever the user types in the file (the KV
        prefix cache keeps them; a warm-up on open reads them). With the cursor (`text` of
        `current` and character `offset` in it), the definitions the code around it uses
        (`context.definitions`: one compact piece per defining file) follow in the tokens the
        outlines left, next to the current file; below `MIN_OUTLINED_BUDGET` they get the whole
        budget, no outlines. Last come lines of other files that start as the cursor's line
        does (`context.similar`), in up to `similar_tokens` of the budget, claimed before the
        definitions; and before the definitions, what the user edited lately in other files
        (`context.recent`), in up to `recent_tokens`. Without the cursor, outlines get the
        whole budget.

        The choice only grows while the cursor stays in one function: a definition the code
        starts to use there, or a line found elsewhere for a new line, is appended (if it
        fits) after those already shown, which stay byte-identical, so the model re-reads the
        new piece and the current file, not the whole repository part. A move to another
        function, a change to the files or imports the outlines come from, or an edit in
        another file, chooses afresh.
        """
        with self._lock:
            resolved = Resolved(None, [])
            if text is not None and offset is not None:
                resolved = self._definitions.resolve(current, text, offset, self._layout)
            ranked = rank_context_files(
                self.graph, current, [p for p in self.index.recent() if p != current], CANDIDATES
            )
            key = (
                budget_tokens,
                tuple(self.graph.dependencies(current)),
                tuple((path, self._changes[path]) for path in ranked),
                text is not None,
                self.similar_tokens,
                self.recent_tokens,
                tuple(self.index.edits.regions(current)),
            )
            memo = self._memo.get(current)
            cursor_at = (text, offset) if text is not None and offset is not None else None
            if memo is None or memo.key != key or memo.scope != resolved.scope:
                memo = self._choose(current, ranked, count, budget_tokens, key, resolved, cursor_at)
            else:
                memo = self._grow(memo, current, resolved.definitions, count)
                memo = self._grow_similar(memo, current, cursor_at, count)
            self._memo[current] = memo
            return memo.pieces

    def _choose(
        self,
        current: str,
        ranked: list[str],
        count: TokenCounter,
        budget_tokens: int,
        key: tuple[object, ...],
        resolved: Resolved,
        cursor_at: tuple[str, int] | None,
    ) -> _Memo:
        """The repository part chosen afresh: outlines (within `OUTLINE_SHARE` of the budget when
        there is a cursor, none below `MIN_OUTLINED_BUDGET`), code edited lately elsewhere,
        then the definitions that fit, then code like the cursor's."""
        pieces = self._outlines(
            current, ranked, count, _outline_budget(budget_tokens, cursor_at is not None)
        )
        used = sum(count(piece.text()) + 1 for piece in pieces)
        left = budget_tokens - used
        memo = _Memo(key, resolved.scope, pieces, frozenset(), left, min(self.similar_tokens, left))
        # Code like the cursor's claims its share before the definitions, and goes last.
        with_similar = self._grow_similar(memo, current, cursor_at, count)
        similar = with_similar.pieces[len(pieces) :]
        recent, left = self._recent(current, pieces, count, with_similar.left, cursor_at)
        memo = self._grow(
            replace(with_similar, pieces=pieces + recent, left=left),
            current,
            resolved.definitions,
            count,
        )
        return replace(memo, pieces=memo.pieces + similar)

    def _recent(
        self,
        current: str,
        pieces: list[ContextPiece],
        count: TokenCounter,
        left: int,
        cursor_at: tuple[str, int] | None,
    ) -> tuple[list[ContextPiece], int]:
        """Pieces of what the user edited lately in other files (`context.recent`, newest
        first; none from a file `pieces` show whole), in up to `recent_tokens` of the `left`
        tokens, a region too long for what is left cut to its first lines; and the tokens
        left."""
        room = min(self.recent_tokens, left)
        if cursor_at is None or room <= 0:
            return [], left
        whole = {piece.path for piece in pieces if not piece.outlined}
        found = [
            fitted
            for snippet in self.index.edits.snippets(current, self.index.text)
            if snippet.path not in whole and (fitted := fit_snippet(snippet, count, room))
        ]
        chosen, room_left = snippet_pieces(found, count, room)
        return chosen, left - (room - room_left)

    def _grow_similar(
        self, memo: _Memo, current: str, cursor_at: tuple[str, int] | None, count: TokenCounter
    ) -> _Memo:
        """`memo` with code like the cursor's (`context.similar`) it has not considered yet
        appended, within the tokens it may still take; none from a file shown whole."""
        if cursor_at is None or memo.similar_left <= 0:
            return memo
        whole = {piece.path for piece in memo.pieces if not piece.outlined}
        found = [
            snippet
            for snippet in self._similar.find(current, *cursor_at, self._similar_sources(current))
            if snippet.path not in whole and (snippet.path, snippet.start) not in memo.similar_seen
        ]
        if not found:
            return memo
        room = min(memo.similar_left, memo.left)
        pieces, left = snippet_pieces(found, count, room)
        return replace(
            memo,
            pieces=memo.pieces + pieces,
            left=memo.left - (room - left),
            similar_left=memo.similar_left - (room - left),
            similar_seen=memo.similar_seen | {(s.path, s.start) for s in found},
        )

    def _similar_sources(self, current: str) -> list[str]:
        """The files searched for code like the cursor's: those in `current`'s language, its
        import neighbours and the recent ones first, `SIMILAR_FILES` at most."""
        suffix = PurePosixPath(current).suffix
        near = [*self.graph.dependencies(current), *self.index.recent()]
        ordered = dict.fromkeys([*near, *self.index.paths()])
        same = [path for path in ordered if PurePosixPath(path).suffix == suffix]
        return same[:SIMILAR_FILES]

    def _grow(
        self, memo: _Memo, current: str, definitions: list[Definition], count: TokenCounter
    ) -> _Memo:
        """`memo` with the definitions it has not considered yet appended, as far as they fit
        in the tokens it has left (the pieces before stay as they were)."""
        new = [d for d in definitions if (d.path, d.name) not in memo.seen]
        if not new:
            return memo
        wanted = [d for d in new if not _already_shown(d, memo.pieces)]
        shown, left = select_definitions(wanted, count, memo.left)
        seen = memo.seen | {(d.path, d.name) for d in new}
        pieces = memo.pieces + self._in_order(shown, current)
        return replace(memo, pieces=pieces, seen=seen, left=left)

    def _outlines(
        self, current: str, ranked: list[str], count: TokenCounter, budget: int
    ) -> list[ContextPiece]:
        """The ranked files, whole or outlined, within `budget`, in prompt order."""
        used = self._used_names(current)
        candidates = []
        for path in ranked:
            text = self.index.text(path)
            if text is None:
                continue
            candidates.append(
                (
                    path,
                    text,
                    lambda room, p=path, t=text: outline(p, t, used, budget=room, count=count),
                )
            )
        return self._in_order(select_context(candidates, count, budget), current)

    def _in_order(self, pieces: list[ContextPiece], current: str) -> list[ContextPiece]:
        """`pieces` in prompt order: every file after the files it imports."""
        chosen = {piece.path: piece for piece in pieces}
        return [chosen[path] for path in prompt_order(self.graph, list(chosen), current)]

    def _used_names(self, current: str) -> set[str] | None:
        text = self.index.text(current)
        if text is None or language_for_path(current) is None:
            return None
        return identifiers(current, text)


def _outline_budget(budget_tokens: int, cursor: bool) -> int:
    """The tokens of the repository budget for outlines: all of it without a cursor, else
    `OUTLINE_SHARE` of it, or none below `MIN_OUTLINED_BUDGET`."""
    if not cursor:
        return budget_tokens
    return int(budget_tokens * OUTLINE_SHARE) if budget_tokens >= MIN_OUTLINED_BUDGET else 0


def _already_shown(definition: Definition, pieces: list[ContextPiece]) -> bool:
    """Whether the outlines show `definition` already: its file whole, or its `def` / `class`
    line or assignment (a module: never)."""
    name = re.escape(definition.name)
    shown = re.compile(rf"^(?:async\s+)?(?:def|class)\s+{name}\b|^{name}\s*[:=]", re.MULTILINE)
    for piece in pieces:
        if piece.path == definition.path and (
            not piece.outlined or (definition.name and shown.search(piece.content))
        ):
            return True
    return False
