"""Repository context for a cursor: the import graph kept in step with the index, the files
worth showing, and a memo that keeps the chosen context identical across keystrokes."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from context.graph import ImportGraph, prompt_order, rank_context_files
from context.imports import WorkspaceLayout, config_paths, extract_imports, resolve_imports
from context.index import WorkspaceIndex
from context.parsing import language_for_path
from context.prompt import ContextPiece, TokenCounter, select_context
from context.snippets import identifiers, outline

logger = logging.getLogger(__name__)

CANDIDATES = 16  # files ranked per request before the budget picks among them


@dataclass(frozen=True)
class _Memo:
    key: tuple[object, ...]
    pieces: list[ContextPiece]


class RepoContext:
    """Import graph of one workspace, updated from its index's change notifications."""

    def __init__(self, index: WorkspaceIndex) -> None:
        self.index = index
        self.graph = ImportGraph()
        self._layout = WorkspaceLayout([])
        self._changes: defaultdict[str, int] = defaultdict(int)
        self._memo: dict[str, _Memo] = {}
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
        self, current: str, count: TokenCounter, budget_tokens: int
    ) -> list[ContextPiece]:
        """Files to show before `current`, dependencies first, within `budget_tokens`.

        The answer is memoised on what it depends on (the current file's imports and the
        candidates' contents), not on the current file's text: typing in a function body keeps
        the repository part of the prompt byte-identical, so the KV prefix cache keeps hitting.
        """
        with self._lock:
            ranked = rank_context_files(
                self.graph, current, [p for p in self.index.recent() if p != current], CANDIDATES
            )
            key = (
                budget_tokens,
                tuple(self.graph.dependencies(current)),
                tuple((path, self._changes[path]) for path in ranked),
            )
            memo = self._memo.get(current)
            if memo is not None and memo.key == key:
                return memo.pieces
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
            chosen = {
                piece.path: piece for piece in select_context(candidates, count, budget_tokens)
            }
            ordered = prompt_order(self.graph, list(chosen), current)
            pieces = [chosen[path] for path in ordered]
            self._memo[current] = _Memo(key, pieces)
            return pieces

    def _used_names(self, current: str) -> set[str] | None:
        text = self.index.text(current)
        if text is None or language_for_path(current) is None:
            return None
        return identifiers(current, text)
