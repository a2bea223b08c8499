"""WorkspaceIndex, the Debouncer and the WorkspaceWatcher on real files and a real observer.

Nothing is mocked: trees are built in tmp dirs (git repos with gitpython), the watcher runs
watchdog's native observer, and tests poll the index with a timeout instead of sleeping fixed
amounts. No assertion depends on how fast anything is.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support import commit_all, init_repo, write

from context.files import FileRules
from context.index import WorkspaceIndex
from context.redaction import REDACTED
from context.watcher import Debouncer, WorkspaceWatcher

# watchdog may register a watch twice when `mkdir -p` races its own recursive scan and says so
# with a RuntimeWarning from its thread; the watch works either way.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

CANARY = "CANARY-51d2e8"
TIMEOUT = 20.0


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `predicate` until it holds; fail with a clear message after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


class Recorder:
    """A thread-safe listener that keeps every batch of changed paths."""

    def __init__(self) -> None:
        self.batches: list[set[str]] = []
        self._lock = threading.Lock()

    def __call__(self, changed: set[str]) -> None:
        with self._lock:
            self.batches.append(changed)

    def all(self) -> set[str]:
        with self._lock:
            return set().union(*self.batches) if self.batches else set()


# -- the index -------------------------------------------------------------------------------


@pytest.fixture
def repo_tree(tmp_path: Path) -> Path:
    """A git repo with committed, untracked, ignored and secret files."""
    repo = init_repo(tmp_path)
    write(tmp_path, ".gitignore", "*.log\nbuild_artifacts/\n")
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/core.py", "def core():\n    return 1\n")
    write(tmp_path, "pkg/util.py", "from pkg.core import core\n")
    write(tmp_path, "config.py", f'API_KEY = "AKIA{CANARY[:6].upper()}0123456789"\nDEBUG = 1\n')
    commit_all(repo)
    write(tmp_path, "scratch.py", "tmp = 2\n")  # untracked, not ignored
    write(tmp_path, "run.log", CANARY)  # ignored
    write(tmp_path, "build_artifacts/out.py", CANARY)  # ignored directory
    write(tmp_path, ".env", f"SECRET={CANARY}\n")
    write(tmp_path, "id_rsa", CANARY)
    write(tmp_path, "config/secrets/x.txt", CANARY)
    return tmp_path


def test_refresh_lists_and_reads(repo_tree: Path) -> None:
    index = WorkspaceIndex(repo_tree)
    assert index.name == repo_tree.name
    assert index.version == 0 and index.paths() == []
    changed = index.refresh()
    expected = [".gitignore", "config.py", "pkg/__init__.py", "pkg/core.py", "pkg/util.py"]
    expected = sorted([*expected, "scratch.py"])
    assert index.paths() == expected
    assert changed == set(expected)
    assert index.version == 1
    assert index.uses_git
    assert index.text("pkg/core.py") == "def core():\n    return 1\n"
    assert index.text("config.py") == f'API_KEY = "{REDACTED}"\nDEBUG = 1\n'
    for path in [".env", "id_rsa", "config/secrets/x.txt", "run.log", "build_artifacts/out.py"]:
        assert index.text(path) is None
        assert path not in index
    for path in index.paths():
        assert CANARY not in (index.text(path) or "")
    assert index.refresh() == set() and index.version == 1  # nothing changed: no new version


def test_text_follows_disk_without_events(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "one\n")
    index = WorkspaceIndex(tmp_path)
    index.refresh()
    assert index.text("a.py") == "one\n"
    write(tmp_path, "a.py", "two, longer\n")  # size changes: the stamp differs
    assert index.text("a.py") == "two, longer\n"
    os.remove(tmp_path / "a.py")
    assert index.text("a.py") is None


def test_cache_stays_bounded_and_correct(tmp_path: Path) -> None:
    for number in range(30):
        write(tmp_path, f"f{number}.py", f"value = {number}\n" * 20)
    index = WorkspaceIndex(tmp_path, cache_chars=500)
    index.refresh()
    for _ in range(2):
        for number in range(30):
            assert index.text(f"f{number}.py") == f"value = {number}\n" * 20
    assert index._cached_chars <= 500 or len(index._cache) == 1


def test_incremental_update_remove_rename(repo_tree: Path) -> None:
    index = WorkspaceIndex(repo_tree)
    index.refresh()
    recorder = Recorder()
    index.add_listener(recorder)
    version = index.version

    write(repo_tree, "pkg/new.py", "new = 1\n")
    assert index.update("pkg/new.py") == {"pkg/new.py"}
    assert index.text("pkg/new.py") == "new = 1\n"
    assert index.version == version + 1
    assert recorder.batches == [{"pkg/new.py"}]

    write(repo_tree, "ignored.log", CANARY)
    assert index.update("ignored.log") == set()  # ignored: not indexed, no version bump
    assert index.version == version + 1

    os.rename(repo_tree / "pkg/new.py", repo_tree / "pkg/renamed.py")
    assert index.rename("pkg/new.py", "pkg/renamed.py") == {"pkg/new.py", "pkg/renamed.py"}
    assert "pkg/new.py" not in index and index.text("pkg/renamed.py") == "new = 1\n"

    shutil.move(repo_tree / "pkg", repo_tree / "lib")
    assert index.rename("pkg", "lib") >= {"pkg/core.py", "lib/core.py"}
    assert [p for p in index.paths() if p.startswith(("pkg/", "lib/"))] == [
        "lib/__init__.py",
        "lib/core.py",
        "lib/renamed.py",
        "lib/util.py",
    ]

    assert index.remove("lib") == {
        "lib/__init__.py",
        "lib/core.py",
        "lib/renamed.py",
        "lib/util.py",
    }
    assert not any(p.startswith("lib/") for p in index.paths())
    assert index.refresh() >= {"lib/core.py"}  # a rescan finds them on disk again


def test_apply_changes_handles_deleted_directories(tmp_path: Path) -> None:
    write(tmp_path, "keep.py")
    write(tmp_path, "gone/a.py")
    write(tmp_path, "gone/deep/b.py")
    index = WorkspaceIndex(tmp_path)
    index.refresh()
    shutil.rmtree(tmp_path / "gone")
    assert index.apply_changes(["gone"]) == {"gone/a.py", "gone/deep/b.py"}
    assert index.paths() == ["keep.py"]


def test_buffers_override_disk_until_closed(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "disk\n")
    index = WorkspaceIndex(tmp_path)
    index.refresh()
    recorder = Recorder()
    index.add_listener(recorder)
    version = index.version

    index.set_buffer("a.py", 'edited\ntoken = "ghp_' + "x1Y2z3" * 6 + '"\n')
    assert index.is_open("a.py")
    assert index.text("a.py") == f'edited\ntoken = "{REDACTED}"\n'
    index.set_buffer("unsaved.py", "brand new\n")  # not on disk yet
    assert "unsaved.py" in index.paths() and index.text("unsaved.py") == "brand new\n"
    assert index.version == version + 2
    assert recorder.batches == [{"a.py"}, {"unsaved.py"}]

    index.close_buffer("a.py")
    assert index.text("a.py") == "disk\n"
    index.close_buffer("unsaved.py")
    assert "unsaved.py" not in index.paths()
    index.close_buffer("never-open.py")  # harmless
    assert index.version == version + 4


def test_secret_buffers_are_refused(tmp_path: Path) -> None:
    index = WorkspaceIndex(tmp_path)
    index.set_buffer(".env", f"A={CANARY}")
    index.set_buffer("deploy/id_rsa", CANARY)
    index.set_buffer("../outside.py", CANARY)
    assert index.paths() == [] and index.version == 0
    assert index.text(".env") is None


def test_recent_orders_by_last_edit(tmp_path: Path) -> None:
    for name in ["a.py", "b.py", "c.py"]:
        write(tmp_path, name)
    index = WorkspaceIndex(tmp_path)
    index.refresh()
    assert index.recent() == []  # a scan is not an edit
    index.set_buffer("a.py", "1")
    index.set_buffer("b.py", "2")
    write(tmp_path, "c.py", "changed = 3\n")
    index.update("c.py")
    index.set_buffer("a.py", "again")
    assert index.recent() == ["a.py", "c.py", "b.py"]
    assert index.recent(limit=2) == ["a.py", "c.py"]
    index.close_buffer("b.py")
    assert index.recent() == ["a.py", "c.py", "b.py"]  # still on disk
    os.remove(tmp_path / "c.py")
    index.update("c.py")
    assert index.recent() == ["a.py", "b.py"]


def test_relative_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    index = WorkspaceIndex(tmp_path / "alias")
    assert index.root == (tmp_path / "real").resolve()
    assert index.relative_path(tmp_path / "alias" / "a" / "b.py") == "a/b.py"
    assert index.relative_path(tmp_path / "real" / "c.py") == "c.py"
    assert index.relative_path(tmp_path / "elsewhere.py") is None
    assert index.relative_path(tmp_path / "real") is None


def test_listener_errors_do_not_break_the_index(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    index = WorkspaceIndex(tmp_path)

    def broken(changed: set[str]) -> None:
        raise RuntimeError("listener bug")

    recorder = Recorder()
    index.add_listener(broken)
    index.add_listener(recorder)
    index.refresh()
    assert recorder.batches == [{"a.py"}]
    index.remove_listener(recorder)
    index.set_buffer("a.py", "b")
    assert len(recorder.batches) == 1


def test_concurrent_reads_and_updates(tmp_path: Path) -> None:
    for number in range(50):
        write(tmp_path, f"m{number}.py", f"n = {number}\n")
    index = WorkspaceIndex(tmp_path)
    index.refresh()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for path in index.paths():
                    text = index.text(path)
                    assert text is None or text.startswith("n = ")
                index.recent()
        except BaseException as error:  # collected and re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for round_number in range(20):
        for number in range(0, 50, 7):
            # Atomic replace, as editors save: a reader never sees a half-written file.
            write(tmp_path, "tmp.swp", f"n = {number} {round_number}\n")
            os.replace(tmp_path / "tmp.swp", tmp_path / f"m{number}.py")
            index.update(f"m{number}.py")
        index.set_buffer("m1.py", f"n = buffer {round_number}\n")
        index.refresh()
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT)
    assert errors == []


# -- the debouncer ---------------------------------------------------------------------------


class Batches:
    """Collects debouncer batches and lets a test wait for them."""

    def __init__(self) -> None:
        self.items: list[set[int]] = []
        self.condition = threading.Condition()

    def __call__(self, batch: set[int]) -> None:
        with self.condition:
            self.items.append(batch)
            self.condition.notify_all()

    def wait(self, count: int) -> list[set[int]]:
        with self.condition:
            assert self.condition.wait_for(lambda: len(self.items) >= count, TIMEOUT)
            return list(self.items)


@pytest.fixture
def batches() -> Iterator[Batches]:
    yield Batches()


def test_debouncer_coalesces_a_burst(batches: Batches) -> None:
    debouncer: Debouncer[int] = Debouncer(batches, delay=0.3, max_delay=30)
    for number in range(100):
        debouncer.add(number)
    debouncer.add_many([1, 2, 3])
    assert batches.wait(1) == [set(range(100))]
    debouncer.add(7)
    assert batches.wait(2)[1] == {7}
    debouncer.close()


def test_debouncer_waits_for_quiet(batches: Batches) -> None:
    debouncer: Debouncer[int] = Debouncer(batches, delay=5.0, max_delay=60)
    debouncer.add(1)
    # Each addition restarts the quiet-period timer; nothing is due for seconds.
    for number in range(2, 6):
        time.sleep(0.02)
        debouncer.add(number)
    assert batches.items == [] and debouncer.pending == 5
    assert debouncer.flush(TIMEOUT)
    assert batches.items == [{1, 2, 3, 4, 5}]
    debouncer.close()


def test_debouncer_max_delay_bounds_a_continuous_storm(batches: Batches) -> None:
    # The quiet period (5 s) is never reached; only max_delay can deliver.
    debouncer: Debouncer[int] = Debouncer(batches, delay=5.0, max_delay=0.3)
    number = 0
    while not batches.items:
        debouncer.add(number)
        number += 1
        time.sleep(0.01)
        assert number < 100_000
    debouncer.close(flush=True)
    delivered = set().union(*batches.items)
    assert delivered == set(range(number))


def test_debouncer_flush_and_close(batches: Batches) -> None:
    debouncer: Debouncer[int] = Debouncer(batches, delay=60, max_delay=60)
    debouncer.add_many([1, 2])
    assert debouncer.pending == 2
    assert debouncer.flush(TIMEOUT)
    assert batches.items == [{1, 2}] and debouncer.pending == 0
    assert debouncer.batches == 1
    debouncer.add(3)
    debouncer.close()  # pending items are dropped
    debouncer.add(4)  # ignored after close
    assert batches.items == [{1, 2}]


def test_debouncer_survives_callback_errors() -> None:
    seen: list[set[int]] = []

    def flaky(batch: set[int]) -> None:
        seen.append(batch)
        if len(seen) == 1:
            raise ValueError("first batch fails")

    debouncer: Debouncer[int] = Debouncer(flaky, delay=0.05)
    debouncer.add(1)
    assert debouncer.flush(TIMEOUT)
    debouncer.add(2)
    assert debouncer.flush(TIMEOUT)
    assert seen == [{1}, {2}]
    debouncer.close()


# -- the watcher -----------------------------------------------------------------------------


@pytest.fixture
def watched(repo_tree: Path) -> Iterator[tuple[WorkspaceIndex, WorkspaceWatcher]]:
    index = WorkspaceIndex(repo_tree)
    watcher = WorkspaceWatcher(delay=0.1)
    assert watcher.start(index)
    try:
        yield index, watcher
    finally:
        watcher.stop()
    assert not watcher.running


def test_watcher_follows_creations_edits_deletes_and_renames(
    watched: tuple[WorkspaceIndex, WorkspaceWatcher],
) -> None:
    index, _ = watched
    root = index.root
    recorder = Recorder()
    index.add_listener(recorder)
    assert "pkg/core.py" in index.paths()  # start() scanned

    write(root, "pkg/fresh.py", "fresh = 1\n")
    wait_for(lambda: index.text("pkg/fresh.py") == "fresh = 1\n")
    assert "pkg/fresh.py" in recorder.all()

    write(root, "pkg/core.py", "def core():\n    return 2\n")
    wait_for(lambda: "pkg/core.py" in recorder.all())
    assert index.text("pkg/core.py") == "def core():\n    return 2\n"

    os.remove(root / "pkg/util.py")
    wait_for(lambda: "pkg/util.py" not in index.paths())

    os.rename(root / "pkg/fresh.py", root / "pkg/moved.py")
    wait_for(lambda: "pkg/moved.py" in index.paths() and "pkg/fresh.py" not in index.paths())

    write(root, "newdir/deeper/mod.py", "m = 1\n")
    wait_for(lambda: "newdir/deeper/mod.py" in index.paths())

    shutil.move(root / "newdir", root / "renamed_dir")
    wait_for(lambda: "renamed_dir/deeper/mod.py" in index.paths())
    wait_for(lambda: not any(p.startswith("newdir/") for p in index.paths()))

    shutil.rmtree(root / "renamed_dir")
    wait_for(lambda: not any(p.startswith("renamed_dir/") for p in index.paths()))


def test_watcher_never_indexes_secret_ignored_or_skipped_files(
    watched: tuple[WorkspaceIndex, WorkspaceWatcher],
) -> None:
    index, watcher = watched
    root = index.root
    write(root, ".env.local", f"X={CANARY}\n")
    write(root, "keys/id_ed25519", CANARY)
    write(root, "config/secrets/y.txt", CANARY)
    write(root, "more.log", CANARY)
    write(root, "node_modules/pkg/index.js", CANARY)
    write(root, "marker.py", "marker = 1\n")  # written last: once it shows, the rest was seen
    wait_for(lambda: "marker.py" in index.paths())
    assert watcher.flush(TIMEOUT)
    for path in index.paths():
        assert CANARY not in (index.text(path) or ""), path
    assert not any("node_modules" in p or "secrets" in p for p in index.paths())


def test_gitignore_change_triggers_a_rescan(
    watched: tuple[WorkspaceIndex, WorkspaceWatcher],
) -> None:
    index, watcher = watched
    root = index.root
    assert "scratch.py" in index.paths()
    refreshes = watcher.refreshes
    with open(root / ".gitignore", "a", encoding="utf-8") as handle:
        handle.write("scratch.py\n")
    wait_for(lambda: "scratch.py" not in index.paths())
    assert watcher.refreshes > refreshes


def test_event_storm_ends_with_a_correct_index(tmp_path: Path) -> None:
    write(tmp_path, "base.py")
    index = WorkspaceIndex(tmp_path)
    # A long max_delay keeps even a slow storm in one batch unless writing pauses for 0.5 s.
    watcher = WorkspaceWatcher(delay=0.5, max_delay=30, refresh_threshold=500)
    recorder = Recorder()
    index.add_listener(recorder)
    assert watcher.start(index)
    try:
        storm = tmp_path / "storm"
        storm.mkdir()
        for number in range(1000):
            (storm / f"f{number}.py").write_text(f"v = {number}\n", encoding="utf-8")
        for number in range(0, 1000, 3):
            os.remove(storm / f"f{number}.py")
        expected = sorted(["base.py", *(f"storm/f{n}.py" for n in range(1000) if n % 3 != 0)])
        wait_for(lambda: index.paths() == expected, timeout=60)
        assert watcher.flush(TIMEOUT)
        assert index.paths() == expected
        assert index.text("storm/f1.py") == "v = 1\n" and index.text("storm/f3.py") is None
        # Coalesced: far fewer batches than the thousands of events, at least one a rescan.
        assert watcher.refreshes >= 1
        assert watcher.refreshes + watcher.batches < 50
    finally:
        watcher.stop()


def test_watcher_survives_symlink_loops(tmp_path: Path) -> None:
    write(tmp_path, "a/real.py")
    os.symlink("..", tmp_path / "a" / "up")
    os.symlink(tmp_path, tmp_path / "self")
    index = WorkspaceIndex(tmp_path)
    watcher = WorkspaceWatcher(delay=0.05)
    started = threading.Event()

    def start() -> None:
        watcher.start(index)
        started.set()

    threading.Thread(target=start, daemon=True).start()
    try:
        assert started.wait(TIMEOUT), "watcher start hung on a symlink loop"
        assert index.paths() == ["a/real.py"]
        write(tmp_path, "a/later.py")
        os.symlink("../a", tmp_path / "a" / "loop_again")
        wait_for(lambda: "a/later.py" in index.paths())
        assert watcher.flush(TIMEOUT)
        assert index.paths() == ["a/later.py", "a/real.py"]
    finally:
        watcher.stop()


def test_watcher_outside_git_and_restart(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.tmp\n")
    write(tmp_path, "a.py")
    index = WorkspaceIndex(tmp_path, FileRules())
    watcher = WorkspaceWatcher(delay=0.05)
    assert watcher.start(index)
    with pytest.raises(RuntimeError):
        watcher.start(index)
    write(tmp_path, "b.tmp", CANARY)
    write(tmp_path, "b.py")
    wait_for(lambda: "b.py" in index.paths())
    assert "b.tmp" not in index.paths()
    watcher.stop()
    write(tmp_path, "c.py")  # not watched: appears only on the next start's rescan
    assert "c.py" not in index.paths()
    assert watcher.start(index)
    try:
        assert "c.py" in index.paths()
    finally:
        watcher.stop()
