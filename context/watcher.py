"""Keeps a `WorkspaceIndex` in step with the disk: watchdog events -> debounced index batches.

Events are filtered in the observer thread with string checks only (skipped directories, .git,
secret paths), collected by a `Debouncer`, and applied as one incremental batch once the file
system has been quiet for `delay` seconds. A storm (a checkout, a build, an unpacked archive)
arrives as a few large batches; a batch of `refresh_threshold` paths or more, or one that
touches a `.gitignore`, becomes a single full rescan instead, which is cheaper than checking
every path and cannot miss a change in what is ignored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from context.files import is_secret_path
from context.index import WorkspaceIndex

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DELAY = 0.2
DEFAULT_MAX_DELAY = 2.0
DEFAULT_REFRESH_THRESHOLD = 500

# Opened/closed-without-writing events fire whenever anyone reads a file (including this
# index), so they are not even requested from the kernel.
_WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class Debouncer(Generic[T]):
    """Collects items and hands them to `callback` as one set once additions pause.

    A batch is delivered `delay` seconds after the last addition, or `max_delay` seconds
    after the first one if additions never pause, so a continuous storm still makes
    progress. Delivery happens on the debouncer's own thread, one batch at a time; items
    added while a batch is being handled go into the next batch.
    """

    def __init__(
        self,
        callback: Callable[[set[T]], None],
        *,
        delay: float = DEFAULT_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        name: str = "debouncer",
    ) -> None:
        """Start the delivery thread (a daemon named `name`)."""
        self._callback = callback
        self._delay = delay
        self._max_delay = max_delay
        self._condition = threading.Condition()
        self._items: set[T] = set()
        self._first_added = 0.0
        self._last_added = 0.0
        self._busy = False
        self._flush_requested = False
        self._closed = False
        self.batches = 0  # delivered so far; read by tests and logs
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, item: T) -> None:
        """Add one item to the pending batch and restart the quiet-period timer."""
        self.add_many((item,))

    def add_many(self, items: Iterable[T]) -> None:
        """Add several items at once (one timer restart)."""
        with self._condition:
            if self._closed:
                return
            now = time.monotonic()
            if not self._items:
                self._first_added = now
            self._items.update(items)
            self._last_added = now
            self._condition.notify_all()

    @property
    def pending(self) -> int:
        """Number of items waiting for delivery."""
        with self._condition:
            return len(self._items)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver pending items now and wait until nothing is pending or being handled.

        Returns False if that did not happen within `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            self._flush_requested = True
            self._condition.notify_all()
            while self._items or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def close(self, *, flush: bool = False, timeout: float = 5.0) -> None:
        """Stop the thread; pending items are delivered first if `flush`, else dropped."""
        if flush:
            self.flush(timeout)
        with self._condition:
            self._closed = True
            self._items.clear()
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _due(self) -> float:
        return min(self._last_added + self._delay, self._first_added + self._max_delay)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._closed:
                    if self._items:
                        wait = 0.0 if self._flush_requested else self._due() - time.monotonic()
                        if wait <= 0:
                            break
                        self._condition.wait(wait)
                    else:
                        self._flush_requested = False
                        self._condition.wait()
                if self._closed:
                    return
                batch, self._items = self._items, set()
                self._flush_requested = False
                self._busy = True
            try:
                self._callback(batch)
            except Exception:
                logger.exception("debounced callback failed on %d items", len(batch))
            finally:
                with self._condition:
                    self._busy = False
                    self.batches += 1
                    self._condition.notify_all()


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: WorkspaceWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)


class WorkspaceWatcher:
    """Watches an index's root with watchdog and applies debounced batches to the index.

    `start(index)` begins watching (and by default rescans once the watch is in place, so
    nothing created in between is missed); `stop()` ends it. Symlinked directories are never
    followed, so symlink loops cannot hang the watch.
    """

    def __init__(
        self,
        *,
        delay: float = DEFAULT_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        refresh_threshold: int = DEFAULT_REFRESH_THRESHOLD,
    ) -> None:
        """Configure the quiet period, the storm cap and the full-rescan threshold."""
        self.delay = delay
        self.max_delay = max_delay
        self.refresh_threshold = refresh_threshold
        self._index: WorkspaceIndex | None = None
        self._observer: BaseObserver | None = None
        self._debouncer: Debouncer[str] | None = None
        self._root_prefix = ""
        self.refreshes = 0  # full rescans triggered by storms or .gitignore edits
        self.batches = 0  # incremental batches applied

    @property
    def running(self) -> bool:
        """True between a successful `start` and `stop`."""
        return self._observer is not None

    def start(self, index: WorkspaceIndex, *, refresh: bool = True) -> bool:
        """Watch `index.root`; False (logged) if the OS refuses (e.g. no inotify watches left).

        With `refresh`, the index is rescanned after the watch is in place.
        """
        if self._observer is not None:
            raise RuntimeError("the watcher is already running")
        self._index = index
        root = str(index.root)
        self._root_prefix = root + os.sep
        self._debouncer = Debouncer(
            self._apply, delay=self.delay, max_delay=self.max_delay, name=f"watch:{index.name}"
        )
        observer = Observer()
        try:
            observer.schedule(_Handler(self), root, recursive=True, event_filter=_WATCHED_EVENTS)
            observer.start()
        except OSError as error:
            logger.warning(
                "cannot watch %s (%s); the index will only change on refresh", root, error
            )
            self._debouncer.close()
            self._debouncer = None
            return False
        self._observer = observer
        logger.info("watching %s", root)
        if refresh:
            index.refresh()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; pending changes are dropped (the next refresh covers them)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)
        debouncer, self._debouncer = self._debouncer, None
        if debouncer is not None:
            debouncer.close(timeout=timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Apply what has been collected so far without waiting for the quiet period."""
        debouncer = self._debouncer
        return debouncer.flush(timeout) if debouncer is not None else True

    # -- observer thread ---------------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        """Runs in watchdog's thread: string checks only, then hand the paths on."""
        if event.event_type in ("opened", "closed_no_write", "attrib"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # a child changed; the child's own event says which
        paths = [event.src_path]
        if event.dest_path:
            paths.append(event.dest_path)
        relevant = [
            rel for rel in (self._relevant(path, event.is_directory) for path in paths) if rel
        ]
        debouncer = self._debouncer
        if relevant and debouncer is not None:
            debouncer.add_many(relevant)

    def _relevant(self, path: bytes | str, is_directory: bool) -> str | None:
        index = self._index
        if index is None:
            return None
        text = os.fsdecode(path)
        if not text.startswith(self._root_prefix):
            return None  # the root itself, or outside it
        rel = text[len(self._root_prefix) :].replace(os.sep, "/")
        parts = rel.split("/")
        rules = index.rules
        # A file may be named like a skipped directory ("build" scripts); only directories
        # are skipped by name.
        directories = parts if is_directory else parts[:-1]
        if any(part == ".git" or rules.skips_dir(part) for part in directories):
            return None
        if is_secret_path(rel, rules):
            return None  # never read, never indexed: nothing to update
        return rel

    # -- debouncer thread --------------------------------------------------------------------

    def _apply(self, batch: set[str]) -> None:
        index = self._index
        if index is None:
            return
        gitignore = any(path == ".gitignore" or path.endswith("/.gitignore") for path in batch)
        if gitignore or len(batch) >= self.refresh_threshold:
            reason = "a .gitignore changed" if gitignore else f"{len(batch)} paths changed"
            logger.info("rescanning %s: %s", index.root, reason)
            index.refresh()
            self.refreshes += 1
            return
        changed = index.apply_changes(batch)
        self.batches += 1
        logger.debug("applied %d events: %d paths changed", len(batch), len(changed))
