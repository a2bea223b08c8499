"""The in-memory index of one workspace: which files exist, their text, the open editor buffers.

Texts are read lazily and kept in a bounded LRU cache keyed by the file's (mtime, size) stamp:
a full scan only lists and stats files (0.1 s for the 2,900 source files of transformers, 0.4 s
for a 24,500-file site-packages) where reading and redacting everything up front would take
10 s and hold 250 MB for the latter. `text()` re-stats the file on every call, so it never
returns stale disk text even before the watcher has caught up.

Thread-safety: one lock guards the state and is never held while reading files, scanning or
calling listeners; a second lock serializes mutations (scans and batches) so that a slow
refresh and a watcher batch cannot interleave; a third delivers listener calls in order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from context.files import (
    FileLister,
    FileRules,
    Stamp,
    is_secret_path,
    normalize_rel_path,
    path_refusal,
    read_source,
)
from context.recent import RecentEdits
from context.redaction import redact_secrets

logger = logging.getLogger(__name__)

Listener = Callable[[set[str]], None]

DEFAULT_CACHE_CHARS = 64_000_000
RECENT_CAPACITY = 256
EXCLUDED = "excluded by .gitignore or the workspace rules"


# A watcher batch this small is someone editing files (an editor without LSP, a formatter,
# an agent); a bigger one is a checkout or a build, which says nothing about recency.
RECENT_BATCH_LIMIT = 8


@dataclass
class _Buffer:
    text: str
    redacted: str | None = None  # computed on first read, dropped on every change


class WorkspaceIndex:
    """Files of a workspace folder, their (redacted) texts and the editor's open buffers.

    Paths are relative POSIX paths (`pkg/mod.py`). Disk files come from `FileLister` under
    `rules` (git-aware, secret- and ignore-safe); open buffers (LSP didOpen/didChange) take
    precedence over disk until closed. Every change bumps `version` and calls the listeners
    with the set of changed paths, once per batch.
    """

    def __init__(
        self,
        root: Path,
        rules: FileRules | None = None,
        *,
        name: str | None = None,
        cache_chars: int = DEFAULT_CACHE_CHARS,
    ) -> None:
        """Index the folder `root` (not scanned until `refresh`); `name` defaults to its name."""
        self.rules = rules if rules is not None else FileRules()
        self._given_root = os.path.abspath(root)
        self.root = Path(os.path.realpath(root))
        self.name = name if name is not None else self.root.name
        self._lister = FileLister(self.root, self.rules)
        self._cache_chars = cache_chars

        self._lock = threading.RLock()
        self._mutate_lock = threading.Lock()
        self._notify_lock = threading.Lock()

        self._files: dict[str, Stamp] = {}
        self._buffers: dict[str, _Buffer] = {}
        # Files on disk found excluded (ignored), at their stamp then; cleared by a rescan.
        self._excluded: dict[str, Stamp | None] = {}
        # rel path -> (stamp it was read at, redacted text or None if unreadable)
        self._cache: OrderedDict[str, tuple[Stamp, str | None]] = OrderedDict()
        self._cached_chars = 0
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.edits = RecentEdits()  # what the user changed in the open buffers, lately
        self._listeners: list[Listener] = []
        self._version = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Increments on every change (scan, batch, buffer edit); 0 before the first."""
        with self._lock:
            return self._version

    @property
    def uses_git(self) -> bool:
        """True if the file list comes from git rather than a .gitignore-aware walk."""
        with self._mutate_lock:
            return self._lister.uses_git

    def paths(self) -> list[str]:
        """Indexed disk files plus open buffers (secret paths never), sorted."""
        with self._lock:
            return sorted(self._files.keys() | self._buffers.keys())

    def __contains__(self, rel_path: object) -> bool:
        """True if `rel_path` is an indexed file or an open buffer."""
        if not isinstance(rel_path, str):
            return False
        clean = normalize_rel_path(rel_path)
        with self._lock:
            return clean is not None and (clean in self._files or clean in self._buffers)

    def __len__(self) -> int:
        """Number of paths `paths()` would return."""
        with self._lock:
            return len(self._files.keys() | self._buffers.keys())

    def is_open(self, rel_path: str) -> bool:
        """True if the editor has `rel_path` open (its buffer overrides the disk)."""
        clean = normalize_rel_path(rel_path)
        with self._lock:
            return clean is not None and clean in self._buffers

    def recent(self, limit: int = 20) -> list[str]:
        """Up to `limit` paths, most recently opened or edited first."""
        with self._lock:
            alive = [
                path
                for path in reversed(self._recent)
                if path in self._files or path in self._buffers
            ]
        return alive[:limit]

    def relative_path(self, path: str | os.PathLike[str]) -> str | None:
        """`path` (absolute, or relative to the current directory) as an index path.

        None if it lies outside the workspace. Tries the root as given and as resolved, so
        both `/tmp/ws/a.py` and its symlink-free spelling work.
        """
        absolute = os.path.abspath(path)
        for root in (str(self.root), self._given_root):
            if absolute.startswith(root + os.sep):
                return normalize_rel_path(absolute[len(root) + 1 :].replace(os.sep, "/"))
        parent, base = os.path.split(absolute)
        real = os.path.join(os.path.realpath(parent), base)
        root = str(self.root)
        if real.startswith(root + os.sep):
            return normalize_rel_path(real[len(root) + 1 :].replace(os.sep, "/"))
        return None

    def text(self, rel_path: str) -> str | None:
        """The text of `rel_path`, secrets redacted: the open buffer if any, else the disk.

        None for secret paths, paths that are not indexed (ignored, skipped, missing) and
        files that cannot be read as text (binary, not UTF-8, over the size limit).
        """
        clean = normalize_rel_path(rel_path)
        if clean is None or is_secret_path(clean, self.rules):
            return None
        with self._lock:
            buffer = self._buffers.get(clean)
            if buffer is None:
                if clean not in self._files:
                    return None
                cached = self._cache.get(clean)
        if buffer is not None:
            redacted = buffer.redacted
            if redacted is None:
                # Outside the lock (a large buffer takes milliseconds); a racing edit
                # replaces the _Buffer object, so this result never lands on newer text.
                redacted = buffer.redacted = redact_secrets(buffer.text)
            return redacted
        stamp = self._stamp(clean)
        if stamp is None:
            return None
        if cached is not None and cached[0] == stamp:
            with self._lock:
                if clean in self._cache:
                    self._cache.move_to_end(clean)
            return cached[1]
        # Read outside the lock: a 1 MB file takes tens of ms to read and redact.
        text = read_source(self.root, clean, self.rules)
        with self._lock:
            if clean in self._files and clean not in self._buffers:
                self._store(clean, stamp, text)
        return text

    def _stamp(self, rel_path: str) -> Stamp | None:
        try:
            info = os.stat(self.root / rel_path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _store(self, rel_path: str, stamp: Stamp, text: str | None) -> None:
        self._evict(rel_path)
        self._cache[rel_path] = (stamp, text)
        self._cached_chars += len(text) if text else 0
        while self._cached_chars > self._cache_chars and len(self._cache) > 1:
            _, (_, old) = self._cache.popitem(last=False)
            self._cached_chars -= len(old) if old else 0

    def _evict(self, rel_path: str) -> None:
        entry = self._cache.pop(rel_path, None)
        if entry is not None and entry[1]:
            self._cached_chars -= len(entry[1])

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(changed_paths)` after each change batch, in the changing thread.

        Keep it cheap: buffer edits (every keystroke) notify too. Exceptions are logged and
        do not stop other listeners.
        """
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling `callback`; unknown callbacks are ignored."""
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self, changed: set[str]) -> None:
        if not changed:
            return
        with self._lock:
            listeners = list(self._listeners)
        with self._notify_lock:
            for listener in listeners:
                try:
                    listener(set(changed))
                except Exception:
                    logger.exception("index listener %r failed", listener)

    # -- disk changes ------------------------------------------------------------------------

    def refresh(self) -> set[str]:
        """Rescan the workspace from scratch; returns (and notifies) the changed paths."""
        with self._mutate_lock:
            scanned = self._lister.scan()
            with self._lock:
                old = self._files
                changed = old.keys() ^ scanned.keys()
                changed.update(p for p, stamp in scanned.items() if old.get(p, stamp) != stamp)
                self._files = scanned
                self._excluded.clear()
                for path in changed:
                    self._evict(path)
                changed |= self._prune_buffers()
                if changed:
                    self._version += 1
        logger.debug("indexed %s: %d files, %d changed", self.root, len(scanned), len(changed))
        self._notify(changed)
        return changed

    def apply_changes(self, rel_paths: Iterable[str]) -> set[str]:
        """Re-check these paths (files or directories) against the disk and the rules.

        What a path now is decides: an eligible file is added or re-stamped, a directory
        contributes the eligible files below it, anything else (deleted, ignored, secret) is
        dropped together with any indexed file below it. One version bump and one listener
        call for the whole batch; returns the changed paths.
        """
        clean = {p for p in (normalize_rel_path(path) for path in rel_paths) if p}
        if not clean:
            return set()
        with self._mutate_lock:
            found = self._lister.eligible(clean)
            with self._lock:
                changed = self._apply(clean, found)
                changed |= self._prune_buffers()
                if changed:
                    self._version += 1
                if len(clean) <= RECENT_BATCH_LIMIT:
                    for path in sorted(clean):
                        if path in found:
                            self._touch_recent(path)
        self._notify(changed)
        return changed

    def _apply(self, asked: set[str], found: dict[str, Stamp]) -> set[str]:
        """Bring `_files` in line with `found` for the `asked` paths; lock held."""
        changed: set[str] = set()
        for path in asked:
            stale = {path} if path in self._files else set()
            if path not in found:
                # Gone, or a directory: indexed files below it may be gone too.
                prefix = path + "/"
                stale.update(p for p in self._files if p.startswith(prefix))
            for gone in stale - found.keys():
                del self._files[gone]
                self._evict(gone)
                changed.add(gone)
        for path, stamp in found.items():
            if self._files.get(path) != stamp:
                self._files[path] = stamp
                self._evict(path)
                changed.add(path)
        return changed

    def _prune_buffers(self) -> set[str]:
        """Drop the buffers of files on disk that the index no longer lists (newly ignored or
        secret); lock held. Buffers with no file on disk (unsaved) stay."""
        gone = {
            path
            for path in self._buffers
            if path not in self._files and os.path.lexists(self.root / path)
        }
        for path in gone:
            del self._buffers[path]
            logger.info("dropped the buffer of %s: no longer a workspace file", path)
        return gone

    def update(self, rel_path: str) -> set[str]:
        """Re-check one path (created or modified on disk) and mark it recently edited."""
        return self.apply_changes([rel_path])

    def remove(self, rel_path: str) -> set[str]:
        """Drop a path (and, for a directory, everything below it) without looking at disk."""
        clean = normalize_rel_path(rel_path)
        if clean is None:
            return set()
        with self._mutate_lock, self._lock:
            changed = self._drop(clean)
            if changed:
                self._version += 1
        self._notify(changed)
        return changed

    def _drop(self, path: str) -> set[str]:
        prefix = path + "/"
        gone = {p for p in self._files if p == path or p.startswith(prefix)}
        for p in gone:
            del self._files[p]
            self._evict(p)
        return gone

    def rename(self, old: str, new: str) -> set[str]:
        """`old` was moved to `new` (a file or a directory): one batch for both ends.

        An open buffer and the recency of `old` follow it to `new`.
        """
        old_clean, new_clean = normalize_rel_path(old), normalize_rel_path(new)
        if old_clean is None or new_clean is None or old_clean == new_clean:
            return self.apply_changes([p for p in (old_clean, new_clean) if p])
        with self._mutate_lock:
            found = self._lister.eligible([new_clean])
            with self._lock:
                changed = self._drop(old_clean)
                changed |= self._apply({new_clean}, found)
                buffer = self._buffers.pop(old_clean, None)
                if buffer is not None and not is_secret_path(new_clean, self.rules):
                    self._buffers[new_clean] = buffer
                    changed.update((old_clean, new_clean))
                if old_clean in self._recent:
                    del self._recent[old_clean]
                    self._touch_recent(new_clean)
                if changed:
                    self._version += 1
        self._notify(changed)
        return changed

    # -- admission and editor buffers --------------------------------------------------------

    def refusal(self, rel_path: str) -> str | None:
        """Why `rel_path` must not reach a model (`path_refusal`, or excluded by .gitignore and
        the rules), or None. A file on disk that the index lacks (created since the last scan
        or watcher batch) is checked against the rules now."""
        why = path_refusal(self.root, rel_path, self.rules)
        clean = normalize_rel_path(rel_path)
        if why is not None or clean is None:
            return why or "outside the workspace"
        with self._lock:
            if clean in self._files:
                return None
        if not os.path.lexists(self.root / clean):
            return None
        stamp = self._stamp(clean)
        with self._lock:
            # Kept until the file or the rules change: an open ignored file asks per keystroke.
            if clean in self._excluded and self._excluded[clean] == stamp:
                return EXCLUDED
        self.apply_changes([clean])
        with self._lock:
            if clean in self._files:
                return None
            self._excluded[clean] = stamp
        return EXCLUDED

    def set_buffer(self, rel_path: str, text: str) -> None:
        """The editor opened or changed `rel_path`: its text now overrides the disk (and what
        changed is noted in `edits`).

        Buffers that `refusal` turns down (secret or ignored files, links to secrets, FIFOs)
        are never stored, so an open `.env` or `helpers.py -> .env` cannot leak into a prompt.
        """
        clean = normalize_rel_path(rel_path)
        why = self.refusal(rel_path)
        if clean is None or why is not None:
            logger.info("not using the buffer of %s: %s", rel_path, why)
            if clean is not None:
                self.close_buffer(clean)
            return
        with self._lock:
            before = self._buffers.get(clean)
            self._buffers[clean] = _Buffer(text)
            self._touch_recent(clean)
            self._version += 1
        if before is not None:
            self.edits.note(clean, before.text, text)
        self._notify({clean})

    def close_buffer(self, rel_path: str) -> None:
        """The editor closed `rel_path`: the disk text applies again."""
        clean = normalize_rel_path(rel_path)
        if clean is None:
            return
        with self._lock:
            if self._buffers.pop(clean, None) is None:
                return
            self._version += 1
        self.edits.forget(clean)
        self._notify({clean})

    def _touch_recent(self, path: str) -> None:
        self._recent[path] = None
        self._recent.move_to_end(path)
        while len(self._recent) > RECENT_CAPACITY:
            self._recent.popitem(last=False)
