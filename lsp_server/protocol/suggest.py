"""What inline completion and the completion fallback share: validate the request, snapshot the
document, debounce per document, run the pipeline off the event loop, drop stale results."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types

from lsp_server.completion.pipeline import Completion, CompletionRefused
from lsp_server.positions import PositionError, offset_of, path_or_name, utf16_len
from lsp_server.protocol.debounce import Superseded
from lsp_server.protocol.server import CoderLanguageServer, EngineState, ReadyAsk
from runtime.generate import CancellationToken

logger = logging.getLogger(__name__)

# Why a request got no suggestion, by the generation's finish reason (else "empty").
EMPTY_OUTCOMES = {"cancelled": "cancelled", "deadline": "over the time budget"}
# Answers given before their generation ended (nothing yet, a line's words, its first lines):
# the client hears when the rest is ready.
SHOWN_BEFORE_THE_END = ("deadline", "partial_line", "first_line")


@dataclass(frozen=True)
class Suggestion:
    """Text to insert at `range` (empty range = insert at the cursor)."""

    text: str
    range: types.Range
    language: str
    source: str  # "repository" when other files were in the prompt, else "in-file"


@dataclass(frozen=True)
class Cursor:
    """A request's snapshot: the document's text and version, the cursor's offset, its path
    and workspace folder."""

    text: str
    version: int | None
    offset: int
    path: Path
    folder: Path | None
    language: str


async def _cursor(
    ls: CoderLanguageServer, method: str, uri: str, position: types.Position
) -> Cursor | None:
    """The request's snapshot, or None when there is nothing to do (model not ready, language
    off, position outside the text); an unreadable unopened document raises
    DocumentUnreadable."""
    if ls.state is not EngineState.READY or ls.pipeline is None:
        logger.info("%s: model %s, answering empty", method, ls.state.value)
        ls.outcomes["not ready"] += 1
        return None
    document = await ls.snapshot(uri)
    if not ls.options.language_enabled(document.language_id):
        return None
    try:
        offset = offset_of(document.text, position.line, position.character)
    except PositionError as error:
        logger.info("%s: %s in %s", method, error, uri)
        ls.outcomes["bad position"] += 1
        return None
    path = path_or_name(uri)
    folder = ls.folder_of(uri)
    return Cursor(document.text, document.version, offset, path, folder, document.language_id)


async def show_prompt(
    ls: CoderLanguageServer, uri: str, position: types.Position
) -> dict[str, Any] | None:
    """The prompt a completion at this cursor would send (`coderLsp.showPrompt`):
    {"prompt", "files", "tokens"}, or {"refused": reason} for a file that stays local; None
    when there is nothing to complete (model not ready, position outside the text)."""
    cursor = await _cursor(ls, "showPrompt", uri, position)
    if cursor is None or ls.pipeline is None:
        return None
    pipeline, use_context = ls.pipeline, ls.options.use_context and cursor.folder is not None

    def work() -> dict[str, Any]:
        try:
            prompt = pipeline.prompt(
                cursor.path,
                cursor.text,
                cursor.offset,
                workspace=cursor.folder,
                use_context=use_context,
            )
        except CompletionRefused as error:
            return {"refused": str(error)}
        tokens = len(pipeline.engine.encode_prompt(prompt.segments))
        return {"prompt": prompt.text, "files": prompt.files, "tokens": tokens}

    return await asyncio.get_running_loop().run_in_executor(ls.executor, work)


async def suggest(
    ls: CoderLanguageServer, method: str, uri: str, position: types.Position
) -> Suggestion | None:
    """The suggestion for a cursor, or None when there is nothing (useful) to offer."""
    cursor = await _cursor(ls, method, uri, position)
    if cursor is None or ls.pipeline is None:
        return None
    text, offset, path, folder = cursor.text, cursor.offset, cursor.path, cursor.folder
    pipeline, options = ls.pipeline, ls.options
    started = time.monotonic()
    # The time a suggestion may take (0: none, wait for the whole answer).
    deadline = started + options.max_latency_ms / 1000 if options.max_latency_ms else None

    def work(cancel: CancellationToken) -> Completion:
        return pipeline.complete(
            path,
            text,
            offset,
            workspace=folder,
            use_context=options.use_context and folder is not None,
            max_tokens=options.max_tokens,
            cancel=cancel,
            deadline=deadline,
        )

    # Typing what the last suggestion predicted is answered at once: no debounce, no model.
    done = pipeline.predicted(
        path,
        text,
        offset,
        workspace=folder,
        use_context=options.use_context and folder is not None,
        max_tokens=options.max_tokens,
        deadline=deadline,
    )
    if done is None:
        try:
            done = await ls.scheduler.run(uri, options.debounce_ms / 1000, work)
        except Superseded:
            logger.info("%s: superseded by a newer request for %s", method, uri)
            ls.outcomes["superseded"] += 1
            return None
        except CompletionRefused as error:
            logger.info("%s: %s", method, error)
            ls.outcomes["refused"] += 1
            return None
        except asyncio.CancelledError:
            logger.info("%s: cancelled by the client", method)
            ls.outcomes["cancelled"] += 1
            raise
    if ls.version_of(uri) != cursor.version:
        logger.info("%s: document changed during generation; result dropped", method)
        ls.outcomes["stale"] += 1
        return None
    if cursor.version is not None:  # an open document (see CoderLanguageServer._announce)
        ls.answered[str(path)] = ReadyAsk(uri, cursor.version, position, done.text)
    result = done.result
    logger.info(
        "%s %s: %d ms (prompt %d tok, cached %d, prefill %.0f ms, decode %.0f ms, %d tok, %s)",
        method,
        uri,
        (time.monotonic() - started) * 1000,
        result.prompt_tokens,
        result.cached_tokens,
        result.prefill_ms,
        result.decode_ms,
        result.generated_tokens,
        result.finish_reason,
    )
    if done.pending is not None and result.finish_reason in SHOWN_BEFORE_THE_END:
        ls.notify_when_ready(str(path), done.pending)
    if result.finish_reason in ("cancelled", "deadline") or not done.text:
        ls.outcomes[EMPTY_OUTCOMES.get(result.finish_reason, "empty")] += 1
        return None
    ls.outcomes["forward cache" if result.finish_reason == "forward_cache" else "answered"] += 1
    source = "repository" if len(done.prompt.files) > 1 else "in-file"
    # The range covers the auto-closed characters the text replaces, in UTF-16 units.
    replaced = utf16_len(text[offset : offset + done.replace_chars])
    end = types.Position(position.line, position.character + replaced)
    return Suggestion(done.text, types.Range(position, end), cursor.language, source)
