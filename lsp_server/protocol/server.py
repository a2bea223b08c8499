"""The language server object: its state (options, engine, workspaces, scheduler) and the
background model load. Features live in lsp_server/protocol/features/, one module each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from lsprotocol.types import EXIT
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import RPCRequest

from context.files import FileRefused, FileRules, read_text_file
from context.workspaces import Workspaces
from lsp_server.completion.live import LiveGeneration
from lsp_server.completion.pipeline import CompletionPipeline
from lsp_server.positions import PositionError, offset_of, path_of
from lsp_server.protocol.debounce import DocumentScheduler
from lsp_server.protocol.feedback import FeedbackStats
from lsp_server.protocol.options import ServerOptions
from runtime.client import RemoteEngine, RemoteOptions
from runtime.engine import Engine, EngineOptions, LocalEngine

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
MAX_DOCUMENT_BYTES = 1 << 20  # an unopened document bigger than this is not read
# Sent when the suggestion at a cursor answered earlier is another now (see _announce).
COMPLETION_READY = "coderLsp/completionReady"


class EngineState(Enum):
    """Where the model is: requests get an empty answer until READY."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class DocumentUnreadable(JsonRpcException):
    """A request names a document that is not open and cannot be read as text (missing, a
    directory or FIFO, binary, not UTF-8, too big): answered with this one-line message."""

    CODE = -32803  # LSP's RequestFailed

    def __init__(self, message: str) -> None:
        super().__init__(code=self.CODE, message=message)


@dataclass(frozen=True)
class Snapshot:
    """A document's text as a request sees it: the editor's buffer, else the file on disk."""

    text: str
    version: int | None
    language_id: str


@dataclass(frozen=True)
class ReadyAsk:
    """An answer given in an open document: where, in which version, and what it showed."""

    uri: str
    version: int | None
    position: types.Position
    shown: str


class CoderProtocol(LanguageServerProtocol):
    """pygls' protocol, except that a request whose params do not parse gets an error response
    (pygls logs it and never answers, leaving the client waiting forever), and so does a
    request after `shutdown` (InvalidRequest, as LSP says; pygls drops it silently)."""

    exit_without_shutdown = False

    def handle_message(self, message: Any) -> None:
        """Answer requests after shutdown with InvalidRequest; pygls handles the rest."""
        if self._shutdown and isinstance(message, RPCRequest) and message.method != EXIT:
            error = JsonRpcInvalidRequest("the server is shutting down")
            self._send_response(message.id, error=error.to_response_error())
            return
        if getattr(message, "method", None) == EXIT and not self._shutdown:
            self.exit_without_shutdown = True
        super().handle_message(message)

    @property
    def exit_code(self) -> int:
        """The process's exit code: 1 after an `exit` that no `shutdown` preceded (as LSP
        says), else 0 (a client that closed the stream is not an error of ours)."""
        return 1 if self.exit_without_shutdown else 0

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Parse one JSON object of a message; answer unparseable requests with the error."""
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "id" in data and "method" in data:
                self._send_response(data["id"], error=error.to_response_error())
            raise


class CoderLanguageServer(LanguageServer):
    """pygls server holding everything a request needs; handlers stay thin."""

    def __init__(self) -> None:
        super().__init__("coder-lsp", VERSION, protocol_cls=CoderProtocol)
        self.options = ServerOptions()
        self.option_problems: list[str] = []  # found at initialize, shown once initialized
        self.state = EngineState.LOADING
        self.state_detail = "not started"
        self.engine: Engine | None = None  # set once the model is loaded
        self.pipeline: CompletionPipeline | None = None
        # The one set of indexed workspaces: the pipeline and the code actions are given it.
        self.workspaces = Workspaces(watch=True)
        self.folders: list[Path] = []
        # Generation runs here; two workers so a new request can start while a cancelled one
        # finishes its current step.
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="generate")
        self.scheduler = DocumentScheduler(self.executor)
        self.ready = threading.Event()
        # Outcomes of completion requests (answered, empty, cancelled, superseded, stale, ...).
        self.outcomes: Counter[str] = Counter()
        self.feedback = FeedbackStats()
        # Per open file (its path, as the pipeline keys it), the newest answer given there:
        # what `completionReady` compares the file's suggestion with (see _announce).
        self.answered: dict[str, ReadyAsk] = {}
        # The generations answered before their end that are watched (id(generation)).
        self._watched: set[int] = set()

    def apply_options(self, options: ServerOptions) -> None:
        """Adopt new settings (the model is loaded once; other settings apply at once)."""
        self.options = options
        if self.pipeline is not None:
            self.pipeline.set_prompt_settings(options.prompt_budget(), options.prompt_layout())
        self.workspaces.apply_rules(FileRules(extra_secret_globs=options.secret_globs))
        logging.getLogger().setLevel(options.log_level.upper())
        logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))

    def load_engine(self) -> None:
        """Prepare and open the model (blocking: call from a worker thread)."""
        options = self.options
        try:
            engine: Engine
            if options.remote:
                # The model runs elsewhere; only its tokenizer is loaded here.
                if not options.engine_url:
                    raise ValueError('engine is "remote" but engineUrl is not set')
                engine = RemoteEngine.connect(
                    RemoteOptions(options.engine_url, options.engine_token), options.model
                )
            else:
                engine = LocalEngine.load(
                    EngineOptions(
                        model=options.model,
                        precision=options.precision,
                        provider=options.provider,
                        draft_model=options.draft_model,
                    ),
                    progress=False,
                )
        except Exception as error:  # any failure must leave a usable (empty-answering) server
            self.state, self.state_detail = EngineState.FAILED, str(error)
            logger.exception("model %s failed to load", options.model)
            return
        self.engine = engine
        self.pipeline = CompletionPipeline(
            engine,
            self.workspaces,
            self.options.prompt_budget(),
            warm=not options.remote,
            layout=options.prompt_layout(),
        )
        self.state, self.state_detail = EngineState.READY, options.model
        self.ready.set()

    async def snapshot(self, uri: str) -> Snapshot:
        """The open buffer of `uri`, else its file read off the event loop by the rules every
        path follows (`context.files.read_text_file`: a FIFO or a directory is refused before it
        is opened, so one bad request never blocks the others); raises DocumentUnreadable."""
        document = self.workspace.text_documents.get(unquote(uri))
        if document is not None:
            return Snapshot(document.source, document.version, document.language_id or "")
        path = path_of(uri)
        if path is None:
            raise DocumentUnreadable(f"coder-lsp: {uri} is not open and not a file")
        try:
            text = await asyncio.to_thread(read_text_file, path, MAX_DOCUMENT_BYTES)
        except FileRefused as error:
            raise DocumentUnreadable(f"coder-lsp: cannot read {path}: {error.reason}") from None
        return Snapshot(text, None, "")

    def notify_when_ready(self, key: str, live: LiveGeneration) -> None:
        """When `live` (left running by a request answered before it ended: empty at its
        deadline, with the words of a line written so far, or with its first lines) ends,
        announce file `key`'s suggestion if it changed (`_announce`). Several answers from one
        generation (the user typing along it) make one watch."""
        if id(live) in self._watched:
            return
        self._watched.add(id(live))
        loop = asyncio.get_running_loop()

        def finished() -> None:  # on the generating thread
            with contextlib.suppress(RuntimeError):  # the event loop has closed: server gone
                loop.call_soon_threadsafe(self._watch_ended, id(live), key)

        live.when_finished(finished)

    def _watch_ended(self, generation: int, key: str) -> None:
        self._watched.discard(generation)
        self._announce(key)

    def watch_upgrades(self, loop: asyncio.AbstractEventLoop) -> None:
        """Announce file `key`'s suggestion (`_announce`) once the target's answer replaces
        the small model's there (a cold request is answered by the small model, the target
        reads the whole prompt after it)."""
        if self.pipeline is None:
            return

        def upgraded(key: str) -> None:  # on the warm-up's thread
            with contextlib.suppress(RuntimeError):  # the event loop has closed: server gone
                loop.call_soon_threadsafe(self._announce, key)

        self.pipeline.on_upgrade = upgraded

    def _announce(self, key: str) -> None:
        """Tell the client (`coderLsp/completionReady` {textDocument: {uri, version},
        position}) that the suggestion at the cursor of file `key`'s newest answer is now
        another than the one shown, while its document is unchanged, so that it asks again if
        its cursor is still there: the answer then comes at once (the finished generation,
        the forward cache)."""
        ask = self.answered.get(key)
        document = None if ask is None else self.workspace.text_documents.get(unquote(ask.uri))
        pipeline = self.pipeline
        if ask is None or document is None or document.version != ask.version or pipeline is None:
            return
        try:
            offset = offset_of(document.source, ask.position.line, ask.position.character)
        except PositionError:
            return
        rest = pipeline.suggestion_at(Path(key), document.source, offset)
        if rest is None or not rest.strip() or rest == ask.shown:
            return
        params = {
            "textDocument": {"uri": ask.uri, "version": ask.version},
            "position": {"line": ask.position.line, "character": ask.position.character},
        }
        self.protocol.notify(COMPLETION_READY, params)

    def version_of(self, uri: str) -> int | None:
        """The open buffer's version of `uri` (None when it is not open)."""
        document = self.workspace.text_documents.get(unquote(uri))
        return document.version if document is not None else None

    def folder_of(self, uri: str) -> Path | None:
        """The workspace folder holding the document at `uri`, if any."""
        path = path_of(uri)
        if path is None:
            return None
        resolved = path.resolve()
        for folder in self.folders:
            if resolved.is_relative_to(folder):
                return folder
        return None
