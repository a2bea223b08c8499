"""Workspace admission: the indexed workspaces by root, and which buffers may reach a model
(secret and gitignored files may not), with the repository context of those that may."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from context.files import FileRules, path_refusal
from context.index import WorkspaceIndex
from context.prompt import ContextPiece, TokenCounter
from context.repo import RepoContext
from context.watcher import WorkspaceWatcher

logger = logging.getLogger(__name__)


class AdmissionRefused(Exception):
    """The file must not reach a model (a secret, or excluded by .gitignore): nothing is sent."""


def workspace_root(path: Path) -> Path:
    """The git work tree holding `path`, else its folder."""
    folder = path.parent if not path.is_dir() else path
    try:
        top = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return folder
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else folder


@dataclass(frozen=True)
class SourceFile:
    """A buffer cleared to reach a model: its name in prompts and, with context, its workspace."""

    name: str  # workspace-relative path, else the file name
    repo: RepoContext | None = None
    relative: str | None = None

    def context(
        self, count: TokenCounter, budget_tokens: int, text: str, offset: int
    ) -> list[ContextPiece]:
        """Repository context for this buffer (`text`, cursor at `offset`): the definitions the
        cursor's code uses, then file outlines, within `budget_tokens` ([] without a repo)."""
        if self.repo is None or self.relative is None:
            return []
        return self.repo.context_for(self.relative, count, budget_tokens, text=text, offset=offset)


@dataclass
class Workspaces:
    """Indexed workspaces by root, opened on first use (index + import graph). With `watch`
    (the language server), each is watched from then on (context.watcher): files created,
    deleted or newly ignored reach the index and the import graph; the CLI re-checks the
    current file per request instead."""

    rules: FileRules = field(default_factory=FileRules)
    watch: bool = False
    _open: dict[Path, RepoContext] = field(default_factory=dict)
    _watchers: list[WorkspaceWatcher] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def opened(self, root: Path) -> RepoContext | None:
        """The repository context of `root` if it is already indexed."""
        with self._lock:
            return self._open.get(root.resolve())

    def get(self, root: Path) -> RepoContext:
        """The repository context of `root`, indexing it the first time."""
        root = root.resolve()
        with self._lock:
            repo = self._open.get(root)
            if repo is None:
                started = time.monotonic()
                index = WorkspaceIndex(root, self.rules)
                if not self._watch(index):
                    index.refresh()
                repo = RepoContext(index)
                repo.build()
                self._open[root] = repo
                logger.info("indexed %s in %.2f s", root, time.monotonic() - started)
            return repo

    def _watch(self, index: WorkspaceIndex) -> bool:
        """Start watching `index` (which scans it once the watch is in place); False when not
        watching (off, or the OS refused: then the caller scans)."""
        if not self.watch:
            return False
        watcher = WorkspaceWatcher()
        if not watcher.start(index):
            return False
        self._watchers.append(watcher)
        return True

    def apply_rules(self, rules: FileRules) -> None:
        """Adopt new file rules: when they differ, every watcher stops and every workspace is
        indexed again, under the new rules, on its next use."""
        with self._lock:
            if rules == self.rules:
                return
            watchers, self._watchers = self._watchers, []
            self._open = {}
            self.rules = rules
        for watcher in watchers:
            watcher.stop()

    def close(self) -> None:
        """Stop every watcher (the indexes stay usable, unwatched)."""
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.stop()

    def admit(
        self,
        path: Path,
        text: str,
        *,
        workspace: Path | None = None,
        use_context: bool = True,
    ) -> SourceFile:
        """Where `path` (buffer `text`) sits, once it may reach a model: raises AdmissionRefused
        for secret files, links to secrets or out of the workspace, non-regular files and files
        the workspace excludes (.gitignore); the buffer goes to the workspace index so that
        repository context sees it."""
        repo = self.get(workspace or workspace_root(path)) if use_context else None
        relative = repo.index.relative_path(path) if repo is not None else None
        if repo is not None and relative is not None:
            why = repo.index.refusal(relative)
        else:
            # No workspace (or a file outside it): the file's own folder is its workspace.
            absolute = Path(os.path.abspath(path))
            base = Path(os.path.abspath(workspace)) if workspace is not None else None
            root = base if base is not None and absolute.is_relative_to(base) else absolute.parent
            relative_to_root = absolute.relative_to(root).as_posix()
            why = path_refusal(root, relative_to_root, self.rules)
        name = relative or path.name
        if why is not None:
            raise AdmissionRefused(f"{name}: {why}; nothing is sent to a model")
        if repo is not None and relative is not None:
            repo.index.set_buffer(relative, text)
        return SourceFile(name, repo, relative)
