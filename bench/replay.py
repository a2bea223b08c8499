"""What a user feels: function bodies typed again through the real `coder-lsp` process over
stdio, side by side with the server at a baseline revision and with llama-cpp-python.

    python -m bench.replay [--configs new,today,llama] [--baseline 5f7fc42] [--model NAME]
        [--sessions 4] [--seed 0] [--plan jumps|callers|unimported] [--pace-ms 100] [--open-ms 1000]
        [--timeout-s 30] [--patience-ms MS] [--read-ms MS]
        [--packages pygls,httpx,pathspec] [--log-dir DIR] [--plot out.png] [--json out.json]

Workspace: the sources of installed packages we did not write (pygls 2, httpx, pathspec by
default: newer than the models, with real imports between their modules) copied into a
temporary folder, `git init` and committed, so the server builds repository context from them.

Sessions (the same for every configuration, from `--seed`): open a file (`didOpen`), wait
`--open-ms` (the user finds the function; also before each jump below), delete the body of a
function (the statements after its docstring; the indentation of the first line stays), then
type it again key by key with `didChange` (incremental or full, as the server advertises; a
newline brings the next line's indentation with it, as an editor's auto-indent does),
`--pace-ms` per key counted from each answer. At each pause one `textDocument/inlineCompletion`
is sent and its answer awaited (at most `--timeout-s`): right after the deletion, after a
newline, `(`, `,`, `=`, `:`, `.`, and after 8 keys without a pause. With `--patience-ms` the
user waits at most that long at a pause and then types on, as a user does: a later answer is
cancelled (`$/cancelRequest`, as editors do when the buffer changes) and counts as not shown
(latency recorded as the patience, `late`), and the server's unfinished work meets the next
keys. With `--read-ms` the user stays at every pause that long at least (counted from the
question) and looks at the suggestion: a `coderLsp/completionReady` for that cursor meanwhile
(the server finished a suggestion it answered before its end: empty, a line's words, or its
first lines) is followed by one more request, as the editors do, whose answer replaces what
was shown; the pause's latency stays the first answer's (`grown` counts these pauses). Then
the session jumps to another function of the same file and then to a function of another file
(opened then), and closes both files. With `--plan callers` a session is a helper written,
then used: the body of a function, then in another file the body of a function that calls it
(imported there by name), as a user who adds a helper and then its first caller; with
`--plan unimported` the same, the caller's import of the helper taken out (`didChange`) before
its body is deleted: a helper the user has not imported yet.

Configurations:
- `new`: the working tree this module lives in (`python -m lsp_server`, cwd and PYTHONPATH at
  the working tree);
- `today`: the same command in a `git worktree` of `--baseline` (cwd and PYTHONPATH there, the
  same Python; checked that it imports that tree);
- `llama`: llama-cpp-python on the same GGUF (`runtime.models.assemble`), given the prompt the
  working tree's pipeline builds in this process for the same buffer, cursor, workspace and
  open files (the server's default settings: repository context, layout, budgets), as token
  ids; its own prefix cache across requests (as llama-server keeps); the stop tokens, stop
  rule, healing and post-processing of `bench.latency`'s llama side; and llama.vim's time cap
  (llama-server's `t_max_predict_ms` = 1000: generation stops 1 s after the first generated
  token once a newline has been generated). Its latency is prompt processing + generation +
  post-processing (building our prompt is not counted: llama.vim builds its own in the editor);
  it needs no pacing (no background work), so it runs without waiting.
Both servers run with default settings (only `model` is sent when `--model` is given), one
after the other, each alone on the machine; each server's stderr goes to `--log-dir`.

Per configuration (markdown to stdout, progress to stderr): pause -> suggestion latency
p50/p75/p90/p99 (a timed-out request counts as `--timeout-s`, a late one as `--patience-ms`),
pauses over 1 s, the first suggestion after opening a file (mean / max), shown rate (non-empty
answers / pauses), line-match rate (the suggestion's first line equals the rest of the line
the user then types, trailing blanks ignored; at the end of a line "first line" is the next one
that holds code; an empty answer never matches), acceptable characters (per pause, the
longest common prefix of the suggestion and what the user then types; summed) and the same
characters each counted once ("each once": a block shown whole and again, rest by rest, at the
following pauses counts once, as a user accepts it once); goals (issue
21): p90 <= 1,000 ms, p99 <= 2,500 ms, first suggestion after opening a file <= 3,000 ms,
line-match and acceptable characters >= the baseline's; each configuration's p50/p90/p99
against `new`'s. `--plot` draws the latency CDF, `--json` keeps every pause.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lsprotocol import types
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient

from bench.context import percentile
from bench.latency import LlamaSide
from bench.llama import PromptEngine, llama_generate
from bench.sources import line_starts
from context.files import FileRules
from context.workspaces import Workspaces
from lsp_server.completion.pipeline import CompletionPipeline, after_heal
from lsp_server.completion.postprocess import CursorContext, postprocess, stop_rule
from lsp_server.protocol.options import ServerOptions
from lsp_server.protocol.server import COMPLETION_READY
from runtime import models
from runtime.client import load_tokenizer
from runtime.generate import GenerationConfig

logger = logging.getLogger("bench.replay")

REPO = Path(__file__).resolve().parents[1]
PAUSE_AFTER = "(,=:."
PAUSE_EVERY = 8  # keys without a pause before the next one
DEFAULT_PACKAGES = ("pygls", "httpx", "pathspec")
BODY_LINES = (2, 12)
BODY_CHARS = (40, 400)
HUNG_AFTER = 3  # consecutive timeouts that mean the server hangs
LATE = "late"  # an answer that came after the user typed on (--patience-ms)
LLAMA_T_MAX_PREDICT_MS = 1000.0  # llama.vim's t_max_predict_ms
GOAL_P90_MS = 1000.0
GOAL_P99_MS = 2500.0
GOAL_FIRST_MS = 3000.0
SLOW_MS = 1000.0
LOG_LINE = re.compile(
    r"inlineCompletion \S+: \d+ ms \(prompt (\d+) tok, cached (\d+), prefill \d+ ms, "
    r"decode \d+ ms, (\d+) tok, (\w+)\)"
)
LOADED_LINE = re.compile(r"model (\S+) \((\w+)\) loaded from cache")
PREPARED_LINE = re.compile(r"onnx/([^.\s]\S*?)-(int4|int8|w8a8|fp32)-")


# --- workspace and sessions ---------------------------------------------------------------


def make_workspace(packages: list[str], root: Path) -> Path:
    """Copy the installed packages' Python sources into `root`/ws, `git init` and commit."""
    workspace = root / "ws"
    workspace.mkdir(parents=True)
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"package {name!r} is not installed")
        source = Path(spec.origin).parent
        shutil.copytree(
            source,
            workspace / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.pyd"),
        )
    git = ["git", "-C", str(workspace), "-c", "user.name=replay", "-c", "user.email=replay@local"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "packages"], check=True)
    return workspace.resolve()


@dataclass(frozen=True)
class Body:
    """A function body to delete and type again: `text` = file[start:end]; `start` is after the
    first line's indentation, `end` the end of its last line (newline excluded)."""

    relative: str
    function: str
    start: int
    end: int
    text: str


def _is_docstring(statement: ast.stmt) -> bool:
    """Whether a statement is a bare string (a docstring)."""
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def find_bodies(workspace: Path, relative: str) -> list[Body]:
    """Function bodies of a file worth typing: 2-12 lines, 40-400 ASCII characters, on lines
    of their own (the docstring stays)."""
    text = (workspace / relative).read_text(encoding="utf-8")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines, starts = text.split("\n"), line_starts(text)
    bodies = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        statements = node.body[1:] if _is_docstring(node.body[0]) else node.body
        if not statements:
            continue
        first, last = statements[0], statements[-1]
        last_line = last.end_lineno or last.lineno
        head = lines[first.lineno - 1]
        if head[: first.col_offset].strip() or not head.isascii():
            continue  # shares its line with the signature
        start = starts[first.lineno - 1] + first.col_offset
        end = starts[last_line - 1] + len(lines[last_line - 1])
        body = text[start:end]
        count = last_line - first.lineno + 1
        if not (BODY_LINES[0] <= count <= BODY_LINES[1] and BODY_CHARS[0] <= len(body)):
            continue
        if len(body) <= BODY_CHARS[1] and body.isascii() and "\t" not in body:
            bodies.append(Body(relative, node.name, start, end, body))
    return sorted(bodies, key=lambda body: body.start)


@dataclass(frozen=True)
class Visit:
    """One body typed in a session; `opens` when its file is opened for it. `before`: an edit
    above the body made first (start, end, new text), as a user who has not written an
    import yet."""

    body: Body
    opens: bool
    before: tuple[int, int, str] | None = None


def plan_sessions(workspace: Path, count: int, seed: int) -> list[list[Visit]]:
    """`count` sessions: two bodies of one file, then one of another file; no body twice."""
    files = sorted(str(path.relative_to(workspace)) for path in workspace.rglob("*.py"))
    bodies = {relative: find_bodies(workspace, relative) for relative in files}
    rich = [relative for relative in files if len(bodies[relative]) >= 2]
    rng = random.Random(seed)
    sessions = []
    for _ in range(count):
        first_file = rng.choice(rich)
        one, two = rng.sample(bodies[first_file], 2)
        other_file = rng.choice([relative for relative in rich if relative != first_file])
        three = rng.choice(bodies[other_file])
        sessions.append([Visit(one, True), Visit(two, False), Visit(three, True)])
        for body in (one, two, three):  # no body is typed twice
            bodies[body.relative].remove(body)
        rich = [relative for relative in rich if len(bodies[relative]) >= 2]
    return sessions


def plan_callers(
    workspace: Path, count: int, seed: int, unimported: bool = False
) -> list[list[Visit]]:
    """`count` sessions of a helper written, then used: the body of a function, then the body
    of a function of another file that calls it (imported there by name); no body twice. With
    `unimported` the caller's import of the helper is taken out before its body is typed (a
    helper the user has not imported yet)."""
    files = sorted(str(path.relative_to(workspace)) for path in workspace.rglob("*.py"))
    bodies = {relative: find_bodies(workspace, relative) for relative in files}
    by_name = {(body.relative, body.function): body for found in bodies.values() for body in found}
    pairs = []
    for relative in files:
        imported = _imported_functions(workspace, relative)
        for body in bodies[relative]:
            for name in dict.fromkeys(CALLED.findall(body.text)):
                helper = by_name.get(imported.get(name, ("", "")))
                if helper is not None:
                    pairs.append((helper, body, name))
    random.Random(seed).shuffle(pairs)
    sessions: list[list[Visit]] = []
    used: set[Body] = set()
    for helper, caller, name in pairs:
        if len(sessions) < count and not {helper, caller} & used:
            before = _unimport(workspace, caller.relative, name) if unimported else None
            sessions.append([Visit(helper, True), Visit(caller, True, before)])
            used |= {helper, caller}
    return sessions


def _unimport(workspace: Path, relative: str, name: str) -> tuple[int, int, str] | None:
    """The edit that takes `name` out of the `from m import ...` statement importing it in
    `relative` (the whole statement when it imports nothing else), or None."""
    text = (workspace / relative).read_text(encoding="utf-8")
    starts = line_starts(text)
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.ImportFrom) or node.col_offset != 0:
            continue
        kept = [alias for alias in node.names if (alias.asname or alias.name) != name]
        if len(kept) == len(node.names) or node.end_lineno is None:
            continue
        start = starts[node.lineno - 1]
        end = starts[node.end_lineno - 1] + (node.end_col_offset or 0)
        if not kept:
            return start, end + 1, ""  # the statement and its line break
        lines = text[start:end].split("\n")
        own = [line for line in lines if line.strip().rstrip(",").split(" as ")[-1] == name]
        if len(lines) > 1 and own:  # one name a line: that line goes
            return start, end, "\n".join(line for line in lines if line not in own)
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in kept)
        return start, end, f"from {'.' * node.level}{node.module or ''} import {names}"
    return None


PLANS: dict[str, Callable[[Path, int, int], list[list[Visit]]]] = {
    "jumps": plan_sessions,
    "callers": plan_callers,
    "unimported": lambda workspace, count, seed: plan_callers(workspace, count, seed, True),
}
CALLED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")


def _imported_functions(workspace: Path, relative: str) -> dict[str, tuple[str, str]]:
    """Names `relative` imports by name from another file of the workspace (`from m import
    f as g`, relative or absolute): g -> (that file, f)."""
    try:
        tree = ast.parse((workspace / relative).read_text(encoding="utf-8"))
    except SyntaxError:
        return {}
    package = Path(relative).parent
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level - 1 > len(package.parents):
            continue
        base = package.parents[node.level - 2] if node.level > 1 else package
        parts = (node.module or "").split(".") if node.module else []
        module = (base if node.level else Path()) / Path(*parts) if parts else base
        for candidate in (module.with_suffix(".py"), module / "__init__.py"):
            if (workspace / candidate).is_file() and str(candidate) != relative:
                for alias in node.names:
                    found[alias.asname or alias.name] = (str(candidate), alias.name)
                break
    return found


def keystrokes(text: str) -> list[str]:
    """The keys that type `text`: one character each, except that a newline brings the next
    line's indentation (an editor's auto-indent)."""
    keys, index = [], 0
    while index < len(text):
        if text[index] == "\n":
            end = index + 1
            while end < len(text) and text[end] in " \t":
                end += 1
            keys.append(text[index:end])
            index = end
        else:
            keys.append(text[index])
            index += 1
    return keys


def position_at(text: str, offset: int) -> types.Position:
    """The LSP position (UTF-16 column) of a character offset."""
    line = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    return types.Position(line, len(text[line_start:offset].encode("utf-16-le")) // 2)


# --- what a pause records and how it scores -------------------------------------------------


@dataclass
class Answer:
    """A configuration's answer to one pause."""

    text: str
    latency_ms: float
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pause:
    """One request: where, how long, what was suggested and what the user typed next."""

    config: str
    session: int
    file: str
    function: str
    typed: int  # characters of the body typed before the pause
    after: str  # "start" (the body just deleted), the key before the cursor, or "8 keys"
    first_after_open: bool
    latency_ms: float
    suggestion: str
    rest: str  # what the user types next: the rest of the body
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def line_match(self) -> bool:
        """The suggestion's first line is the rest of the line the user then types."""
        return bool(self.suggestion.strip()) and first_line(self.suggestion) == first_line(
            self.rest
        )

    @property
    def accepted_chars(self) -> int:
        """Characters of the suggestion the user could have accepted (common prefix)."""
        return common_prefix(self.suggestion, self.rest)


def first_line(text: str) -> str:
    """`text` up to the end of its first line holding code, trailing blanks of lines removed
    (a suggestion at the end of a line starts with a newline: its first line is the next)."""
    code = len(text) - len(text.lstrip())
    end = text.find("\n", code)
    head = text if end < 0 else text[:end]
    return "\n".join(line.rstrip() for line in head.split("\n"))


def covered_chars(pauses: list[Pause]) -> int:
    """Characters of the typed bodies that some pause's suggestion offered before the user
    typed them, each counted once: a user accepts a character once, while the per-pause sum
    counts a block again at every pause that shows the rest of it."""
    covered: dict[tuple[int, str, str], set[int]] = {}
    for pause in pauses:
        body = covered.setdefault((pause.session, pause.file, pause.function), set())
        body.update(range(pause.typed, pause.typed + pause.accepted_chars))
    return sum(len(body) for body in covered.values())


def insert_text(result: Any) -> str:
    """The first item's text of an inlineCompletion answer ("" for none)."""
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    if not items:
        return ""
    insert = items[0].insert_text
    return insert if isinstance(insert, str) else insert.value


def common_prefix(one: Sequence[Any], two: Sequence[Any]) -> int:
    """Length of the longest common prefix."""
    return next(
        (index for index, (a, b) in enumerate(zip(one, two, strict=False)) if a != b),
        min(len(one), len(two)),
    )


# --- drivers ----------------------------------------------------------------------------------


class ServerGone(Exception):
    """The configuration cannot go on: its server died or hangs."""


class Driver(Protocol):
    """One configuration as the replay sees it."""

    name: str
    paced: bool  # whether typing time passes (servers work in the background meanwhile)
    patience_ms: float | None  # how long the user waits at a pause (None: for the answer)

    async def open(self, relative: str, text: str) -> None:
        """A file is opened in the editor."""
        ...

    async def change(self, relative: str, before: str, start: int, end: int, new: str) -> None:
        """`before`[start:end] of an open file is replaced by `new`."""
        ...

    async def close(self, relative: str) -> None:
        """A file is closed."""
        ...

    async def ask(self, relative: str, text: str, offset: int) -> Answer:
        """The suggestion at `offset` of the buffer `text`."""
        ...


def client_capabilities() -> types.ClientCapabilities:
    """An editor with inline completion, incremental sync and progress (VS Code-like)."""
    return types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(workspace_folders=True),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(did_save=True),
            inline_completion=types.InlineCompletionClientCapabilities(),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
    )


def _sync_kind(capabilities: types.ServerCapabilities) -> types.TextDocumentSyncKind:
    """How the server wants didChange: incremental or the full text."""
    sync = capabilities.text_document_sync
    if isinstance(sync, types.TextDocumentSyncOptions):
        return sync.change or types.TextDocumentSyncKind.None_
    return sync if sync is not None else types.TextDocumentSyncKind.None_


class ServerDriver:
    """The real server process over stdio, driven by pygls' LanguageClient."""

    paced = True

    def __init__(
        self,
        name: str,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        workspace: Path,
        log_path: Path,
        options: dict[str, Any],
        timeout_s: float,
        patience_ms: float | None = None,
        read_ms: float = 0.0,
    ) -> None:
        self.name, self.command, self.cwd, self.env = name, command, cwd, env
        self.workspace, self.log_path, self.options = workspace, log_path, options
        self.timeout_s, self.patience_ms, self.read_ms = timeout_s, patience_ms, read_ms
        # coderLsp/completionReady heard since the last question: (uri, version, line, char)
        self.announced: set[tuple[str, int | None, int, int]] = set()
        self.announcement = asyncio.Event()
        self.late: list[tuple[float, Future[Any]]] = []  # cancelled requests not answered yet
        self.client = LanguageClient("bench-replay", "1")
        self.process: asyncio.subprocess.Process | None = None
        self.sync = types.TextDocumentSyncKind.Incremental
        self.versions: dict[str, int] = {}
        self.loaded = asyncio.Event()  # the load's $/progress ended (model and index ready)
        self.progress_begun = False
        self.messages: list[str] = []
        self.errors: Counter[str] = Counter()
        self.unanswered = 0  # consecutive timeouts
        self.load_s = 0.0
        self._ids = itertools.count()
        self._register_handlers()

    def _register_handlers(self) -> None:
        """Answer the server's requests and collect its messages and progress."""

        def create_progress(params: types.WorkDoneProgressCreateParams) -> None:
            return None

        def progress(params: types.ProgressParams) -> None:
            value = params.value
            kind = value.get("kind") if isinstance(value, dict) else None
            self.progress_begun = self.progress_begun or kind == "begin"
            if kind == "end":
                self.loaded.set()

        def show_message(params: types.ShowMessageParams) -> None:
            self.messages.append(str(params.message))

        def log_message(params: types.LogMessageParams) -> None:
            if params.type in (types.MessageType.Error, types.MessageType.Warning):
                self.messages.append(str(params.message))

        self.client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(create_progress)
        self.client.feature(types.PROGRESS)(progress)
        self.client.feature(types.WINDOW_SHOW_MESSAGE)(show_message)
        self.client.feature(types.WINDOW_LOG_MESSAGE)(log_message)

        def completion_ready(params: Any) -> None:
            document, position = params.textDocument, params.position
            self.announced.add((document.uri, document.version, position.line, position.character))
            self.announcement.set()

        self.client.feature(COMPLETION_READY)(completion_ready)

    def uri(self, relative: str) -> str:
        """The document URI of a workspace file."""
        return (self.workspace / relative).as_uri()

    async def start(self, load_timeout_s: float) -> None:
        """Start the process (stderr to the log), initialize, wait until model and index are
        ready; raises ServerGone when it exits, fails or takes longer than `load_timeout_s`."""
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=self.cwd,
                env=self.env,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        client = self.client
        client.protocol.set_writer(self.process.stdin)
        client._server = self.process
        client._async_tasks += [
            asyncio.create_task(
                run_async(
                    stop_event=client._stop_event,
                    reader=self.process.stdout,
                    protocol=client.protocol,
                    logger=logger,
                    error_handler=client.report_server_error,
                )
            ),
            asyncio.create_task(client._server_exit()),
        ]
        folder = types.WorkspaceFolder(uri=self.workspace.as_uri(), name=self.workspace.name)
        params = types.InitializeParams(
            capabilities=client_capabilities(),
            process_id=os.getpid(),
            root_uri=folder.uri,
            workspace_folders=[folder],
            initialization_options=self.options,
        )
        result = await self._wait(client.initialize_async(params), 120, "initialize")
        self.sync = _sync_kind(result.capabilities)
        client.initialized(types.InitializedParams())
        await self._wait_ready(started + load_timeout_s)
        self.load_s = time.monotonic() - started

    async def _wait(self, awaitable: Any, timeout_s: float, what: str) -> Any:
        """Await a request, turning a dead or silent server into ServerGone."""
        try:
            return await asyncio.wait_for(awaitable, timeout_s)
        except TimeoutError as error:
            raise ServerGone(f"{what}: no answer in {timeout_s:.0f} s") from error
        except Exception as error:
            if self.dead():
                raise ServerGone(f"{what}: {self.dead()}") from error
            raise

    def dead(self) -> str:
        """Why the process is gone ("" while it runs)."""
        if self.process is None or self.process.returncode is None:
            return ""
        return f"server exited with code {self.process.returncode}"

    async def status(self) -> dict[str, Any]:
        """The server's `coderLsp.status`."""
        params = types.ExecuteCommandParams(command="coderLsp.status", arguments=[])
        answer = await self._wait(self.client.workspace_execute_command_async(params), 30, "status")
        return answer if isinstance(answer, dict) else {}

    async def _wait_ready(self, deadline: float) -> None:
        """Poll the status until the model is ready and the load's progress (if the server
        reports one) ended: the workspace is indexed after the model."""
        while time.monotonic() < deadline:
            state = await self.status()
            if state.get("state") == "failed":
                raise ServerGone(f"the model failed to load: {state.get('detail')}")
            if state.get("state") == "ready" and (self.loaded.is_set() or not self.progress_begun):
                return
            await asyncio.sleep(0.5)
        raise ServerGone("the model did not load in time")

    async def open(self, relative: str, text: str) -> None:
        """didOpen."""
        self.versions[relative] = self.versions.get(relative, 0) + 1
        item = types.TextDocumentItem(self.uri(relative), "python", self.versions[relative], text)
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(item))

    async def change(self, relative: str, before: str, start: int, end: int, new: str) -> None:
        """didChange, incremental or full as advertised."""
        self.versions[relative] += 1
        change: types.TextDocumentContentChangeEvent
        if self.sync == types.TextDocumentSyncKind.Full:
            change = types.TextDocumentContentChangeWholeDocument(
                before[:start] + new + before[end:]
            )
        else:
            where = types.Range(position_at(before, start), position_at(before, end))
            change = types.TextDocumentContentChangePartial(range=where, text=new)
        document = types.VersionedTextDocumentIdentifier(
            self.versions[relative], self.uri(relative)
        )
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(document, [change]))

    async def close(self, relative: str) -> None:
        """didClose."""
        document = types.TextDocumentIdentifier(self.uri(relative))
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(document))

    async def ask(self, relative: str, text: str, offset: int) -> Answer:
        """inlineCompletion, awaited up to the timeout (then cancelled); raises ServerGone
        when the process exited or several requests in a row went unanswered."""
        if self.dead():
            raise ServerGone(self.dead())
        self._check_late()
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(self.uri(relative)),
            position=position_at(text, offset),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        msg_id = f"replay-{next(self._ids)}"
        self.announced.clear()
        started = time.perf_counter()
        future: Future[Any] = self.client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
        )
        wait_s = self.timeout_s
        if self.patience_ms is not None:
            wait_s = min(wait_s, self.patience_ms / 1000)
        try:
            result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait_s)
        except TimeoutError:
            self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            if wait_s < self.timeout_s:  # the user types on; the server still owes an answer
                self.late.append((started, future))
                return Answer("", wait_s * 1000, LATE)
            self.errors["timeout"] += 1
            self.unanswered += 1
            if self.unanswered >= HUNG_AFTER:
                raise ServerGone(f"hangs: {HUNG_AFTER} requests in a row unanswered") from None
            return Answer("", self.timeout_s * 1000, "timeout")
        except Exception as error:
            latency = (time.perf_counter() - started) * 1000
            if self.dead():
                raise ServerGone(self.dead()) from error
            self.errors[f"error response: {error}"[:120]] += 1
            return Answer("", latency, f"error: {error}")
        latency = (time.perf_counter() - started) * 1000
        self.unanswered = 0
        answer = Answer(insert_text(result), latency)
        if self.read_ms:
            answer = await self._read(relative, params, started, answer)
        return answer

    async def _read(
        self, relative: str, params: types.InlineCompletionParams, started: float, answer: Answer
    ) -> Answer:
        """The user looks at `answer` until `read_ms` after asking (`started`): when the server
        announces a suggestion for this cursor meanwhile, it is asked for once more and another
        text replaces `answer` (`extra["grown_ms"]`: when it came, from `started`)."""
        cursor = params.position
        key = (params.text_document.uri, self.versions.get(relative), cursor.line, cursor.character)
        until = started + self.read_ms / 1000
        while key not in self.announced and time.perf_counter() < until:
            self.announcement.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.announcement.wait(), until - time.perf_counter())
        if key in self.announced:
            future = self.client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params
            )
            try:
                again = insert_text(
                    await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
                )
            except Exception as error:  # the first answer stands
                self.errors[f"asked again: {error}"[:120]] += 1
                again = ""
            grown_ms = (time.perf_counter() - started) * 1000
            extra = {**answer.extra, "asked_again": True}
            if again and again != answer.text:
                answer = Answer(
                    again, answer.latency_ms, answer.error, {**extra, "grown_ms": grown_ms}
                )
            else:
                answer = replace(answer, extra=extra)
        await asyncio.sleep(max(0.0, until - time.perf_counter()))
        return answer

    def _check_late(self) -> None:
        """Raise ServerGone when a cancelled request is still unanswered after the timeout
        (the server hangs), forgetting the answered ones."""
        self.late = [(sent, future) for sent, future in self.late if not future.done()]
        if any(time.perf_counter() - sent > self.timeout_s for sent, _ in self.late):
            raise ServerGone(f"hangs: a cancelled request unanswered after {self.timeout_s:.0f} s")

    async def stop(self) -> None:
        """shutdown + exit, then make sure the process is gone."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            try:
                await asyncio.wait_for(self.client.shutdown_async(None), 15)
                self.client.exit(None)
                await asyncio.wait_for(process.wait(), 15)
            except Exception:  # a hung or dead server: no clean exit to wait for
                logger.warning("%s: no clean shutdown; killing pid %d", self.name, process.pid)
        if process.returncode is None:
            process.kill()
            await process.wait()
        self.client._stop_event.set()
        for task in self.client._async_tasks:
            task.cancel()


# --- the replay -------------------------------------------------------------------------------


async def _pause(
    driver: Driver, visit: Visit, text: str, offset: int, after: str, first: bool, session: int
) -> Pause:
    """Ask at the cursor and record the answer with what the user types next."""
    body = visit.body
    answer = await driver.ask(body.relative, text, offset)
    patience = driver.patience_ms
    if patience is not None and not answer.error and answer.latency_ms > patience:
        answer = Answer("", patience, LATE, answer.extra)  # an unpaced driver's slow answer
    typed = offset - body.start
    return Pause(
        driver.name,
        session,
        body.relative,
        body.function,
        typed,
        after,
        first,
        answer.latency_ms,
        answer.text,
        body.text[typed:],
        answer.error,
        answer.extra,
    )


async def type_body(
    driver: Driver, visit: Visit, text: str, session: int, pace_ms: float
) -> tuple[list[Pause], str]:
    """Delete the body, ask, and type it again key by key, asking at each pause; returns the
    pauses and the buffer (the file as it was)."""
    body = visit.body
    pace = pace_ms / 1000 if driver.paced else 0.0
    await driver.change(body.relative, text, body.start, body.end, "")
    text = text[: body.start] + text[body.end :]
    offset = body.start
    pauses = [await _pause(driver, visit, text, offset, "start", visit.opens, session)]
    keys = keystrokes(body.text)
    since = 0
    for number, key in enumerate(keys):
        if pace:
            await asyncio.sleep(pace)
        await driver.change(body.relative, text, offset, offset, key)
        text, offset, since = text[:offset] + key + text[offset:], offset + len(key), since + 1
        if number == len(keys) - 1:
            break  # the body is typed: the user moves on
        if key.startswith("\n") or key in PAUSE_AFTER or since >= PAUSE_EVERY:
            after = "newline" if key.startswith("\n") else key if key in PAUSE_AFTER else "8 keys"
            pauses.append(await _pause(driver, visit, text, offset, after, False, session))
            since = 0
    return pauses, text


async def replay(
    driver: Driver,
    sessions: list[list[Visit]],
    workspace: Path,
    pace_ms: float,
    open_ms: float,
    keep: Callable[[list[Pause]], None] | None = None,
) -> list[Pause]:
    """Run every session on one configuration, handing each body's pauses to `keep` (raises
    ServerGone with what it has so far in `error.args[1]`)."""
    pauses: list[Pause] = []
    try:
        for number, session in enumerate(sessions):
            buffers: dict[str, str] = {}
            for visit in session:
                relative = visit.body.relative
                if relative not in buffers:
                    buffers[relative] = (workspace / relative).read_text(encoding="utf-8")
                    await driver.open(relative, buffers[relative])
                if driver.paced:
                    await asyncio.sleep(open_ms / 1000)
                if visit.before is not None:
                    buffers[relative], visit = await _edit_before(driver, visit, buffers[relative])
                done, text = await type_body(driver, visit, buffers[relative], number, pace_ms)
                assert text == buffers[relative], "the body was not typed back as it was"
                pauses += done
                _log_body(driver.name, number, visit, done)
                if keep is not None:
                    keep(done)
            for relative in buffers:
                await driver.close(relative)
    except ServerGone as gone:
        raise ServerGone(str(gone), pauses) from gone
    return pauses


async def _edit_before(driver: Driver, visit: Visit, text: str) -> tuple[str, Visit]:
    """Make the visit's edit above its body: the new text, and the visit with the body where
    it now stands."""
    assert visit.before is not None
    start, end, new = visit.before
    assert end <= visit.body.start, "the edit before a body stands above it"
    await driver.change(visit.body.relative, text, start, end, new)
    shift = len(new) - (end - start)
    body = replace(visit.body, start=visit.body.start + shift, end=visit.body.end + shift)
    return text[:start] + new + text[end:], replace(visit, body=body, before=None)


def _log_body(name: str, session: int, visit: Visit, pauses: list[Pause]) -> None:
    """One progress line per typed body."""
    values = [pause.latency_ms for pause in pauses]
    logger.info(
        "%s session %d %s:%s: %d pauses, p50 %.0f ms, max %.0f ms, %d shown, %d line matches",
        name,
        session,
        visit.body.relative,
        visit.body.function,
        len(pauses),
        percentile(values, 0.5),
        max(values),
        sum(bool(pause.suggestion) for pause in pauses),
        sum(pause.line_match for pause in pauses),
    )


# --- configurations ---------------------------------------------------------------------------


@dataclass
class ConfigRun:
    """A configuration's pauses and what happened to it."""

    name: str
    pauses: list[Pause]
    failure: str = ""
    notes: list[str] = field(default_factory=list)
    precision: str = ""


def baseline_tree(rev: str, directory: Path) -> Path:
    """A `git worktree` of `rev` (detached) in `directory`."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(directory), rev],
        check=True,
        capture_output=True,
    )
    return directory


def check_imports(python: str, tree: Path, env: dict[str, str]) -> str:
    """Where the server's packages import from, started as the server is; "" when all come
    from `tree`, else a description of the ones that do not."""
    code = (
        "import context, lsp_server, runtime; "
        "print(context.__file__, lsp_server.__file__, runtime.__file__)"
    )
    done = subprocess.run(
        [python, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    paths = done.stdout.split()
    if done.returncode != 0 or len(paths) != 3:
        return f"import check failed: {done.stderr.strip()[-300:]}"
    wrong = [path for path in paths if not Path(path).resolve().is_relative_to(tree.resolve())]
    return f"imports outside {tree}: {wrong}" if wrong else ""


def server_notes(driver: ServerDriver, status: dict[str, Any]) -> list[str]:
    """What the server said and did: outcomes, messages, error responses, exit."""
    notes = [f"load + index {driver.load_s:.1f} s; log {driver.log_path}"]
    if status.get("outcomes"):
        outcomes = ", ".join(f"{key} {value}" for key, value in sorted(status["outcomes"].items()))
        notes.append(f"server outcomes: {outcomes}")
    notes += [f"message: {message}" for message in driver.messages]
    notes += [f"{what}: {count}" for what, count in driver.errors.items()]
    return notes


def read_server_log(path: Path, pauses: list[Pause]) -> str:
    """Attach the server's per-request log lines (prompt/cached/generated tokens, finish
    reason) to the pauses when they pair up one to one; returns the precision it loaded."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = LOG_LINE.findall(text)
    # A pause asked again (--read-ms) logged two requests: its own, then the second's.
    if len(lines) == len(pauses) + sum(bool(pause.extra.get("asked_again")) for pause in pauses):
        found = iter(lines)
        for pause in pauses:
            prompt, cached, generated, reason = next(found)
            pause.extra.update(
                prompt_tokens=int(prompt),
                cached_tokens=int(cached),
                generated_tokens=int(generated),
                finish=reason,
            )
            if pause.extra.get("asked_again"):
                pause.extra["finish_again"] = next(found)[3]
    loaded = LOADED_LINE.findall(text) or PREPARED_LINE.findall(text)
    return ", ".join(f"{name} {precision}" for name, precision in dict(loaded).items())


async def run_server(
    name: str, cwd: Path, args: argparse.Namespace, workspace: Path, sessions: list[list[Visit]]
) -> ConfigRun:
    """One server configuration from start to shutdown."""
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "CODER_LSP_STATS": str(args.log_dir / f"stats-{name}.json"),
    }
    problem = check_imports(sys.executable, cwd, env)
    if problem:
        return ConfigRun(name, [], problem)
    options: dict[str, Any] = {"model": args.model} if args.model else {}
    options.update(args.variants.get(name, {}))
    driver = ServerDriver(
        name,
        [sys.executable, "-m", "lsp_server"],
        cwd,
        env,
        workspace,
        args.log_dir / f"server-{name}.log",
        options,
        args.timeout_s,
        args.patience_ms,
        args.read_ms,
    )
    run = ConfigRun(name, [])
    status: dict[str, Any] = {}
    try:
        logger.info("%s: starting the server in %s", name, cwd)
        await driver.start(args.load_timeout_s)
        logger.info("%s: ready after %.1f s", name, driver.load_s)
        run.pauses = await replay(driver, sessions, workspace, args.pace_ms, args.open_ms)
        status = await driver.status()
    except ServerGone as gone:
        run.failure = str(gone.args[0])
        run.pauses = gone.args[1] if len(gone.args) > 1 else []
        logger.error("%s: %s", name, run.failure)
    finally:
        await driver.stop()
    run.notes = server_notes(driver, status)
    run.precision = read_server_log(driver.log_path, run.pauses)
    return run


def run_llama(args: argparse.Namespace, workspace: Path, new: ConfigRun | None) -> ConfigRun:
    """llama-cpp-python on the same GGUF and prompts, in a child process (`--llama-worker`):
    a crash of the library (a build with AMX segfaults on this project's Intel machine, see
    bench/README.md) is reported with what ran until then."""
    out = args.log_dir / "llama-pauses.jsonl"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.replay", "--llama-worker", str(workspace), str(out)]
    command += ["--sessions", str(args.sessions), "--seed", str(args.seed), "--plan", args.plan]
    command += ["--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    done = subprocess.run(command, cwd=REPO, check=False)
    pauses = [Pause(**json.loads(line)) for line in _lines(out)]
    run = ConfigRun("llama", pauses, precision="GGUF (the model's Q4_K_M)")
    if done.returncode != 0:
        run.failure = f"the llama.cpp worker exited with code {done.returncode}" + (
            " (segmentation fault)" if done.returncode == -11 else ""
        )
    run.notes = [f"time cap hit on {sum(p.extra.get('capped', False) for p in pauses)} pauses"]
    if new is not None and pauses:
        pairs = [
            (ours.extra["prompt_tokens"], theirs.extra["prompt_tokens"])
            for ours, theirs in zip(new.pauses, pauses, strict=False)
            if ours.extra.get("finish") not in (None, "forward_cache")
            and ours.extra["prompt_tokens"]
        ]
        same = sum(a == b for a, b in pairs)
        run.notes.append(
            f"prompt length equal to the `new` server's on {same} of {len(pairs)} of its model "
            "calls (its continuations and small-model prompts differ by design)"
        )
    return run


def _lines(path: Path) -> list[str]:
    """The lines of a file that may not exist."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def llama_worker(args: argparse.Namespace) -> int:
    """The `llama` configuration in this process, each body's pauses appended to a JSON-lines
    file as soon as they are measured."""
    workspace, out = Path(args.llama_worker[0]), Path(args.llama_worker[1])
    sessions = PLANS[args.plan](workspace, args.sessions, args.seed)
    driver = LlamaDriver(args, workspace)

    def keep(pauses: list[Pause]) -> None:
        with out.open("a", encoding="utf-8") as sink:
            sink.writelines(json.dumps(asdict(pause)) + "\n" for pause in pauses)

    asyncio.run(replay(driver, sessions, workspace, args.pace_ms, args.open_ms, keep))
    return 0


class PromptSide:
    """The language server's prompts built in this process: its pipeline (default settings, or
    `options`) over the workspace, with the open buffers mirrored into its index."""

    def __init__(self, options: ServerOptions, workspace: Path) -> None:
        self.pipeline = CompletionPipeline(
            PromptEngine(load_tokenizer(options.model)),
            Workspaces(FileRules(extra_secret_globs=options.secret_globs)),
            options.prompt_budget(),
            layout=options.prompt_layout(),
        )
        self.pipeline.warm = False
        self.workspace = workspace
        self.repo = self.pipeline.workspaces.get(workspace)

    async def open(self, relative: str, text: str) -> None:
        """The server's index holds open buffers: so does this one."""
        self.repo.index.set_buffer(relative, text)

    async def change(self, relative: str, before: str, start: int, end: int, new: str) -> None:
        """Keep the index's buffer as the server's."""
        self.repo.index.set_buffer(relative, before[:start] + new + before[end:])

    async def close(self, relative: str) -> None:
        """The buffer goes; the file on disk counts again."""
        self.repo.index.close_buffer(relative)


class LlamaDriver(PromptSide):
    """llama-cpp-python fed the prompts this working tree's pipeline builds, with llama.vim's
    time cap."""

    name = "llama"
    paced = False  # slower answers than the patience count as late all the same

    def __init__(self, args: argparse.Namespace, workspace: Path) -> None:
        options = ServerOptions(model=args.model) if args.model else ServerOptions()
        super().__init__(options, workspace)
        self.model, self.max_tokens = options.model, options.max_tokens
        self.patience_ms: float | None = args.patience_ms
        gguf = models.assemble(options.model, progress=False)
        self.side = LlamaSide(gguf, self.pipeline, args.threads)

    async def ask(self, relative: str, text: str, offset: int) -> Answer:
        """Our prompt for this buffer and cursor (not timed), then llama.cpp (timed)."""
        path = self.workspace / relative
        prompt = self.pipeline.prompt(path, text, offset, workspace=self.workspace)
        ids = self.pipeline.engine.encode_prompt(prompt.segments)
        started = time.perf_counter()
        cursor = CursorContext.at(text, offset, str(path))
        config = GenerationConfig(max_new_tokens=self.max_tokens, stop_rule=stop_rule(cursor))
        run = llama_generate(
            self.side.llm, self.side.tokenizer, ids, config, LLAMA_T_MAX_PREDICT_MS
        )
        shown = postprocess(after_heal(run.stream.text, prompt.heal), cursor)
        latency = (time.perf_counter() - started) * 1000
        extra = {
            "prompt_tokens": len(ids),
            "cached_tokens": run.reused,
            "generated_tokens": len(run.stream.token_ids),
            "capped": run.capped,
        }
        return Answer(shown.text if shown is not None else "", latency, extra=extra)


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A configuration's numbers."""

    pauses: int
    errors: int
    late: int  # answers that came after the user typed on (--patience-ms)
    p50: float
    p75: float
    p90: float
    p99: float
    slow: int  # pauses over 1 s
    first_mean: float
    first_max: float
    opens: int
    first_shown: int  # of those first answers, the non-empty ones
    shown: int
    line_match: int
    accepted: int
    covered: int  # `covered_chars`
    grown: int  # pauses whose suggestion was replaced by an announced one (--read-ms)

    @staticmethod
    def of(pauses: list[Pause]) -> Summary | None:
        """The numbers of a list of pauses (None when empty)."""
        if not pauses:
            return None
        values = [pause.latency_ms for pause in pauses]
        first = [pause.latency_ms for pause in pauses if pause.first_after_open]
        return Summary(
            len(pauses),
            sum(bool(pause.error) and pause.error != LATE for pause in pauses),
            sum(pause.error == LATE for pause in pauses),
            percentile(values, 0.5),
            percentile(values, 0.75),
            percentile(values, 0.9),
            percentile(values, 0.99),
            sum(value > SLOW_MS for value in values),
            sum(first) / len(first) if first else 0.0,
            max(first, default=0.0),
            len(first),
            sum(bool(pause.suggestion) for pause in pauses if pause.first_after_open),
            sum(bool(pause.suggestion) for pause in pauses),
            sum(pause.line_match for pause in pauses),
            sum(pause.accepted_chars for pause in pauses),
            covered_chars(pauses),
            sum("grown_ms" in pause.extra for pause in pauses),
        )


def _share(count: int, total: int) -> str:
    """`count (x %)`."""
    return f"{count} ({count / total:.1%})" if total else "-"


def _verdict(ok: bool) -> str:
    """PASS / FAIL."""
    return "PASS" if ok else "FAIL"


def machine() -> str:
    """The CPU's model name (lscpu) and how many cores this process may use."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    found = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
    name = found.group(1).strip() if found else "unknown CPU"
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def results_table(runs: list[ConfigRun]) -> list[str]:
    """One row per configuration."""
    rows = [
        "| config | pauses | p50 ms | p75 ms | p90 ms | p99 ms | over 1 s "
        "| first after open: mean / max ms (opens, shown) | shown | line match | acceptable chars "
        "| each once | grown | late | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        summary = Summary.of(run.pauses)
        if summary is None:
            rows.append(
                f"| {run.name} | 0 | - | - | - | - | - | - | - | - | - | - | - | - "
                f"| {run.failure} |"
            )
            continue
        rows.append(
            f"| {run.name} | {summary.pauses} | {summary.p50:.0f} | {summary.p75:.0f} "
            f"| {summary.p90:.0f} | {summary.p99:.0f} | {_share(summary.slow, summary.pauses)} "
            f"| {summary.first_mean:.0f} / {summary.first_max:.0f} "
            f"({summary.opens}, {summary.first_shown}) "
            f"| {_share(summary.shown, summary.pauses)} "
            f"| {_share(summary.line_match, summary.pauses)} | {summary.accepted} "
            f"| {summary.covered} | {summary.grown} "
            f"| {_share(summary.late, summary.pauses)} "
            f"| {summary.errors}{' + ' + run.failure if run.failure else ''} |"
        )
    return rows


def goals_table(runs: list[ConfigRun]) -> list[str]:
    """The issue's goals per configuration (line match and acceptable characters against
    `today`, the baseline)."""
    summaries = {run.name: Summary.of(run.pauses) for run in runs}
    baseline = summaries.get("today")
    rows = [
        f"| config | p90 ≤ {GOAL_P90_MS:,.0f} ms | p99 ≤ {GOAL_P99_MS:,.0f} ms "
        f"| first after open ≤ {GOAL_FIRST_MS:,.0f} ms (max) | line match ≥ today's "
        "| acceptable chars ≥ today's |",
        "|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        if summary is None:
            continue
        against = (
            (
                _verdict(summary.line_match >= baseline.line_match),
                _verdict(summary.accepted >= baseline.accepted),
            )
            if baseline is not None and name != "today"
            else ("-", "-")
        )
        rows.append(
            f"| {name} | {_verdict(summary.p90 <= GOAL_P90_MS)} "
            f"| {_verdict(summary.p99 <= GOAL_P99_MS)} "
            f"| {_verdict(summary.first_max <= GOAL_FIRST_MS)} | {against[0]} | {against[1]} |"
        )
    return rows


def ratios_table(runs: list[ConfigRun]) -> list[str]:
    """p50 / p90 / p99 of each configuration over `new`'s."""
    summaries = {run.name: Summary.of(run.pauses) for run in runs}
    new = summaries.get("new")
    if new is None:
        return []
    rows = ["| config ÷ new | p50 | p90 | p99 |", "|---|---:|---:|---:|"]
    for name, summary in summaries.items():
        if summary is None:
            continue
        cells = [
            f"{mine / theirs:.2f}x" if theirs else "-"
            for mine, theirs in zip(
                (summary.p50, summary.p90, summary.p99), (new.p50, new.p90, new.p99), strict=True
            )
        ]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return rows


def kinds_table(runs: list[ConfigRun]) -> list[str]:
    """p50 / p90 by what came before the pause, per configuration."""
    kinds = ("start", "newline", "(", ",", "=", ":", ".", "8 keys")
    rows = [
        "| pause after | " + " | ".join(f"{run.name} n, p50 / p90 ms" for run in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for kind in kinds:
        cells = []
        for run in runs:
            values = [pause.latency_ms for pause in run.pauses if pause.after == kind]
            cells.append(
                f"{len(values)}, {percentile(values, 0.5):.0f} / {percentile(values, 0.9):.0f}"
                if values
                else "-"
            )
        rows.append(f"| {kind} | {' | '.join(cells)} |")
    return rows


def _waiting(meta: dict[str, Any]) -> str:
    """How long the user waits at a pause."""
    patience = meta.get("patience_ms")
    read = meta.get("read_ms") or 0.0
    reading = (
        f"; the user stays {read:.0f} ms at a pause at least, and a suggestion the server "
        "announces meanwhile (`coderLsp/completionReady`) is asked for again and shown (`grown`)"
        if read
        else ""
    )
    if patience is None:
        return f"answers awaited up to {meta['timeout_s']:.0f} s{reading}"
    return (
        f"the user waits at most {patience:.0f} ms at a pause, then types on (a later answer "
        "is cancelled, counted `late` and not shown; its latency is counted as the wait)"
    )


def report(runs: list[ConfigRun], meta: dict[str, Any]) -> str:
    """The markdown report."""
    lines = [
        "## Replay through the real server (`bench/replay.py`)",
        "",
        f"- machine: {meta['machine']}; {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- model: {meta['model']}; precision: "
        + "; ".join(f"{run.name} {run.precision or '?'}" for run in runs),
        f"- workspace: {meta['workspace']}; {meta['sessions']} sessions (seed {meta['seed']}), "
        f"{meta['bodies']} bodies, {meta['chars']} characters typed per configuration; "
        f"{meta['pace_ms']:.0f} ms a key, {meta['open_ms']:.0f} ms from opening a file to the "
        f"deletion, {_waiting(meta)}",
        "",
        *results_table(runs),
        "",
        "Goals (issue 21):",
        "",
        *goals_table(runs),
        "",
    ]
    ratios = ratios_table(runs)
    if ratios:
        lines += ["Latency against `new`:", "", *ratios, ""]
    if any(run.pauses for run in runs):
        lines += ["By pause (`start`: right after the deletion):", "", *kinds_table(runs), ""]
    for run in runs:
        notes = ([f"FAILED: {run.failure}"] if run.failure else []) + run.notes
        if notes:
            lines.append(f"- {run.name}: " + "; ".join(notes))
    return "\n".join(lines)


def plot(runs: list[ConfigRun], meta: dict[str, Any], out: Path) -> None:
    """The pause -> suggestion latency CDF of every configuration as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for run in runs:
        values = sorted(pause.latency_ms for pause in run.pauses)
        if values:
            fractions = [(index + 1) / len(values) for index in range(len(values))]
            axes.step(values, fractions, where="post", label=f"{run.name} ({len(values)})")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlabel("pause → suggestion (ms)")
    axes.set_ylabel("fraction of pauses")
    axes.set_title(f"Replay through the server, {meta['model']}, {meta['machine']}", fontsize=9)
    for goal in (GOAL_P90_MS, GOAL_P99_MS):
        axes.axvline(goal, color="grey", linestyle=":", linewidth=1)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def write_json(runs: list[ConfigRun], meta: dict[str, Any], out: Path) -> None:
    """Every pause with its scores, and what happened to each configuration."""
    records = [
        {**asdict(pause), "line_match": pause.line_match, "accepted_chars": pause.accepted_chars}
        for run in runs
        for pause in run.pauses
    ]
    configs = {
        run.name: {"failure": run.failure, "notes": run.notes, "precision": run.precision}
        for run in runs
    }
    out.write_text(json.dumps({"meta": meta, "configs": configs, "pauses": records}, indent=1))


def read_json(path: Path) -> tuple[list[ConfigRun], dict[str, Any]]:
    """The runs and meta a `--json` file holds (to report or plot again without running)."""
    data = json.loads(path.read_text())
    fields = Pause.__dataclass_fields__  # the scores written beside them are derived
    runs = {
        name: ConfigRun(name, [], config["failure"], config["notes"], config["precision"])
        for name, config in data["configs"].items()
    }
    for record in data["pauses"]:
        pause = Pause(**{key: value for key, value in record.items() if key in fields})
        runs[pause.config].pauses.append(pause)
    return list(runs.values()), data["meta"]


# --- main -------------------------------------------------------------------------------------

CONFIGS = ("new", "today", "llama")


def run_configs(args: argparse.Namespace, scratch: Path) -> tuple[list[ConfigRun], dict[str, Any]]:
    """Build the workspace and the sessions, then run the configurations one after another."""
    workspace = make_workspace(args.packages.split(","), scratch)
    sessions = PLANS[args.plan](workspace, args.sessions, args.seed)
    visits = [visit for session in sessions for visit in session]
    meta = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.replay " + " ".join(sys.argv[1:]),
        "model": args.model or f"{ServerOptions().model} (the server's default)",
        "workspace": f"{args.packages} ({len(list(workspace.rglob('*.py')))} Python files)",
        "sessions": args.sessions,
        "plan": args.plan,
        "seed": args.seed,
        "bodies": len(visits),
        "chars": sum(len(visit.body.text) for visit in visits),
        "pace_ms": args.pace_ms,
        "open_ms": args.open_ms,
        "timeout_s": args.timeout_s,
        "patience_ms": args.patience_ms,
        "read_ms": args.read_ms,
    }
    chosen = [name for name in CONFIGS if name in args.configs.split(",")]
    chosen[1:1] = list(args.variants)  # working-tree variants run right after `new`
    runs: list[ConfigRun] = []
    for name in chosen:
        started = time.monotonic()
        if name == "new" or name in args.variants:
            runs.append(asyncio.run(run_server(name, REPO, args, workspace, sessions)))
        elif name == "today":
            tree = scratch / f"baseline-{args.baseline}"
            try:
                baseline_tree(args.baseline, tree)
                runs.append(asyncio.run(run_server("today", tree, args, workspace, sessions)))
            finally:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    capture_output=True,
                    check=False,
                )
        else:
            new = next((run for run in runs if run.name == "new"), None)
            runs.append(run_llama(args, workspace, new))
        logger.info("%s: done in %.0f s", name, time.monotonic() - started)
        if args.json:  # what ran so far survives a later configuration's crash
            write_json(runs, meta, args.json)
    return runs, meta


def main(argv: list[str] | None = None) -> int:
    """Run the replay and print the report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="new,today,llama")
    parser.add_argument("--baseline", default="5f7fc42", help="git revision of `today`")
    parser.add_argument("--model", help="model NAME sent to the server (default: its own)")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plan",
        choices=tuple(PLANS),
        default="jumps",
        help="sessions: two functions of a file and one of another, a helper then its caller "
        "(unimported: its import taken out first)",
    )
    parser.add_argument("--pace-ms", type=float, default=100.0, help="typing time per key")
    parser.add_argument("--open-ms", type=float, default=1000.0, help="open file -> deletion")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="longest wait per answer")
    parser.add_argument(
        "--patience-ms", type=float, help="the user types on after this long at a pause"
    )
    parser.add_argument(
        "--read-ms",
        type=float,
        default=0.0,
        help="the user stays at a pause this long at least, following completionReady",
    )
    parser.add_argument("--load-timeout-s", type=float, default=1200.0)
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--log-dir", type=Path, help="server logs (default: a new temp dir)")
    parser.add_argument("--plot", type=Path, help="write the latency CDF here (PNG)")
    parser.add_argument("--json", type=Path, help="write every pause here")
    parser.add_argument(
        "--from-json", type=Path, help="report (and --plot) a --json file again, running nothing"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="the working tree with these settings too, e.g. fast='{\"maxLatencyMs\": 600}'",
    )
    parser.add_argument("--llama-worker", nargs=2, help=argparse.SUPPRESS)  # WORKSPACE OUT
    args = parser.parse_args(argv)
    args.variants = _variants(parser, args.variant)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")
    if args.patience_ms is not None and args.read_ms:
        parser.error("--patience-ms and --read-ms: a user either types on or stays")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    models.logger.setLevel(logging.WARNING)
    logging.getLogger("pygls").setLevel(logging.WARNING)  # it logs every message it sends
    if args.llama_worker:
        return llama_worker(args)
    if args.from_json:
        runs, meta = read_json(args.from_json)
        return _finish(args, runs, meta)
    args.log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="coder-lsp-replay-"))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    logger.info("server logs in %s", args.log_dir)
    with tempfile.TemporaryDirectory(prefix="coder-lsp-replay-") as scratch:
        runs, meta = run_configs(args, Path(scratch))
    if args.json:
        write_json(runs, meta, args.json)
    return _finish(args, runs, meta)


def _finish(args: argparse.Namespace, runs: list[ConfigRun], meta: dict[str, Any]) -> int:
    """Print the report, then draw the plot (a missing matplotlib loses no table)."""
    print(report(runs, meta), flush=True)
    if args.plot:
        plot(runs, meta, args.plot)
    return 0 if all(not run.failure for run in runs) else 1


def _variants(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, dict[str, Any]]:
    """NAME=JSON settings objects of the working-tree variants, by name."""
    variants: dict[str, dict[str, Any]] = {}
    for item in given:
        name, _, settings = item.partition("=")
        try:
            options = json.loads(settings)
        except json.JSONDecodeError as error:
            parser.error(f"--variant {name}: not JSON ({error})")
        if not name or name in CONFIGS or not isinstance(options, dict):
            parser.error(f"--variant takes NAME=JSON-object with a new name, got {item!r}")
        variants[name] = options
    return variants


if __name__ == "__main__":
    sys.exit(main())
