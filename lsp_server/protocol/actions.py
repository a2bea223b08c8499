"""The code actions behind the thin handlers in features/code_actions.py.

- Listing (`textDocument/codeAction`) is instant: a repair action per diagnostic in the range
  (the client's, plus local Python checks) carrying `data` to resolve later, and an explain
  action with its command. No model runs here.
- `codeAction/resolve` generates and verifies the fix in the server's executor; an unverified
  fix is never offered: the action comes back without an edit, disabled with the reason.
- `coderLsp.explain` writes the Markdown under the cache dir and asks the client to open it
  (`window/showDocument`, else `window/showMessage`), with cancellable `$/progress`.
- `coderLsp.repair` does resolve's work for clients that cannot resolve an action's edit, and
  applies the fix with `workspace/applyEdit`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cattrs
from lsprotocol import converters, types
from pygls.exceptions import JsonRpcInvalidParams

from lsp_server.code_actions.assist import ActionContext, ActionError
from lsp_server.code_actions.explain import Explanation, explain, write_explanation
from lsp_server.code_actions.repair import RepairResult, local_diagnostics, repair
from lsp_server.positions import path_or_name, uri_of
from lsp_server.protocol.server import CoderLanguageServer, EngineState
from runtime.generate import CancellationToken
from runtime.models import cache_root

logger = logging.getLogger(__name__)

EXPLAIN = "coderLsp.explain"
REPAIR = "coderLsp.repair"
MAX_REPAIRS = 3  # repair actions listed per request
MAX_CHECK_CHARS = 1 << 20  # local checks skip bigger documents
PROGRESS_EVERY_S = 0.5
T = TypeVar("T")


def explanations_dir() -> Path:
    """Where explanations are written: <cache>/explanations."""
    return cache_root() / "explanations"


def _overlaps(diagnostic: types.Diagnostic, first: int, last: int) -> bool:
    return diagnostic.range.start.line <= last and diagnostic.range.end.line >= first


def _action_context(ls: CoderLanguageServer) -> ActionContext | None:
    """What the code actions run with (the server's engine, workspaces and prompt budget), or
    None while the model is not ready."""
    if ls.state is not EngineState.READY or ls.engine is None:
        return None
    return ActionContext(ls.engine, ls.workspaces, ls.options.prompt_budget())


def _resolves_edits(ls: CoderLanguageServer) -> bool:
    """Whether the client can fill in an action's edit with codeAction/resolve."""
    text_document = ls.client_capabilities.text_document
    action = text_document.code_action if text_document is not None else None
    support = action.resolve_support if action is not None else None
    return support is not None and "edit" in support.properties


async def list_actions(
    ls: CoderLanguageServer, params: types.CodeActionParams
) -> list[types.CodeAction] | None:
    """The actions for a range, without running the model."""
    if ls.state is EngineState.FAILED:
        return None
    uri = params.text_document.uri
    document = await ls.snapshot(uri)
    if not ls.options.language_enabled(document.language_id):
        return None
    text, version = document.text, document.version
    first, last = params.range.start.line, params.range.end.line
    only = params.context.only
    actions: list[types.CodeAction] = []
    if only is None or any(kind.startswith(types.CodeActionKind.QuickFix) for kind in only):
        local: list[types.Diagnostic] = []
        if len(text) <= MAX_CHECK_CHARS:
            local = await asyncio.to_thread(local_diagnostics, str(path_or_name(uri)), text)
        local = [d for d in local if _overlaps(d, first, last)]
        lines = {d.range.start.line for d in local}
        # A client diagnostic on a line we check ourselves is (most likely) the same problem:
        # ours can be re-checked after the fix, so it wins.
        client = [
            d
            for d in params.context.diagnostics
            if _overlaps(d, first, last) and d.range.start.line not in lines
        ]
        for diagnostic in (local + client)[:MAX_REPAIRS]:
            actions.append(_repair_action(ls, uri, version, diagnostic))
    if only is None:
        line = params.range.start.line
        end = max(params.range.end.line - (params.range.end.character == 0), line)
        explain_command = types.Command("coder-lsp: explain", EXPLAIN, arguments=[uri, line, end])
        actions.append(types.CodeAction(title="Explain with coder-lsp", command=explain_command))
    return actions or None


def _repair_action(
    ls: CoderLanguageServer, uri: str, version: int | None, diagnostic: types.Diagnostic
) -> types.CodeAction:
    data = {
        "uri": uri,
        "version": version,
        "diagnostic": converters.get_converter().unstructure(diagnostic),
    }
    title = f"Fix with coder-lsp: {diagnostic.message.splitlines()[0][:80]}"
    action = types.CodeAction(
        title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[diagnostic], data=data
    )
    if not _resolves_edits(ls):
        action.data = None
        action.command = types.Command(title, REPAIR, arguments=[data])
    return action


async def _in_executor(
    ls: CoderLanguageServer, work: Callable[[CancellationToken], T], token: CancellationToken
) -> T:
    """`work(token)` on the server's generation executor; a cancelled request stops it."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(ls.executor, work, token)
    except asyncio.CancelledError:
        token.cancel()
        raise


async def repair_data(ls: CoderLanguageServer, data: Any) -> tuple[str | None, RepairResult]:
    """Repair what an action's `data` describes: (uri, result). Expected failures (bad data,
    model not ready, document changed, no verified fix) are results with a reason."""
    try:
        uri = data["uri"]
        version = data.get("version")
        diagnostic = converters.get_converter().structure(data["diagnostic"], types.Diagnostic)
        if not isinstance(uri, str):
            raise TypeError("uri must be a string")
    except (KeyError, TypeError, AttributeError, cattrs.BaseValidationError) as error:
        logger.info("code action data not understood: %r (%s)", data, error)
        return None, RepairResult(False, [], "the action's data is not coder-lsp's")
    context = _action_context(ls)
    if context is None:
        return uri, RepairResult(False, [], f"the model is not ready ({ls.state.value})")
    document = await ls.snapshot(uri)
    if document.version != version:
        return uri, RepairResult(False, [], "the document changed; ask for the fix again")
    text, path, folder = document.text, path_or_name(uri), ls.folder_of(uri)
    use_context = ls.options.use_context and folder is not None

    def work(token: CancellationToken) -> RepairResult:
        return repair(
            context,
            path,
            text,
            diagnostic,
            workspace=folder,
            use_context=use_context,
            cancel=token,
        )

    result = await _in_executor(ls, work, CancellationToken())
    if ls.version_of(uri) != version:
        return uri, RepairResult(False, [], "the document changed during the repair")
    return uri, result


async def resolve_action(ls: CoderLanguageServer, action: types.CodeAction) -> types.CodeAction:
    """Fill in a repair action's edit, or disable it with the reason there is none."""
    if not isinstance(action.data, dict) or "diagnostic" not in action.data:
        return action
    uri, result = await repair_data(ls, action.data)
    action.data = {**action.data, "verified": result.verified, "reason": result.reason}
    if result.verified and uri is not None:
        action.edit = types.WorkspaceEdit(changes={uri: result.edits})
    else:
        action.disabled = types.CodeActionDisabled(reason=result.reason)
        message = f"coder-lsp: no fix offered: {result.reason}"
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, message))
    return action


async def repair_command(ls: CoderLanguageServer, args: tuple[Any, ...]) -> dict[str, Any]:
    """`coderLsp.repair <data>`: repair and apply the edit with workspace/applyEdit."""
    uri, result = await repair_data(ls, args[0] if args else None)
    applied = False
    if result.verified and uri is not None:
        edit = types.WorkspaceEdit(changes={uri: result.edits})
        response = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label="coder-lsp: fix")
        )
        applied = response.applied
    else:
        message = f"coder-lsp: no fix offered: {result.reason}"
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, message))
    return {"verified": result.verified, "applied": applied, "reason": result.reason}


def _explain_args(args: tuple[Any, ...]) -> tuple[str, int, int]:
    if (
        len(args) != 3
        or not isinstance(args[0], str)
        or not all(isinstance(a, int) and not isinstance(a, bool) for a in args[1:])
    ):
        raise JsonRpcInvalidParams(f"{EXPLAIN} takes [uri, first line, last line]")
    return args[0], args[1], args[2]


async def explain_command(ls: CoderLanguageServer, args: tuple[Any, ...]) -> dict[str, Any] | None:
    """`coderLsp.explain <uri> <first line> <last line>` (0-based): the Markdown document,
    shown to the user; returns {"uri", "markdown", "shown"}, or None when nothing was made."""
    uri, first, last = _explain_args(args)
    context = _action_context(ls)
    if context is None:
        message = f"coder-lsp: the model is not ready ({ls.state.value})"
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Info, message))
        return None
    document = await ls.snapshot(uri)
    text, path, folder = document.text, path_or_name(uri), ls.folder_of(uri)
    use_context = ls.options.use_context and folder is not None
    token = CancellationToken()
    progress = await _Progress.start(ls, f"explaining {path.name}", token)

    def work(cancel: CancellationToken) -> Explanation:
        return explain(
            context,
            path,
            text,
            first,
            last,
            workspace=folder,
            use_context=use_context,
            cancel=cancel,
            on_text=progress.on_text,
        )

    try:
        explanation = await _in_executor(ls, work, token)
    except ActionError as error:
        progress.end(f"failed: {error}")
        ls.window_show_message(
            types.ShowMessageParams(types.MessageType.Warning, f"coder-lsp: {error}")
        )
        return None
    except asyncio.CancelledError:
        progress.end("cancelled")
        raise
    if explanation.finish_reason == "cancelled":
        progress.end("cancelled")
        return None
    written = write_explanation(explanation, path.name, explanations_dir())
    progress.end("done")
    target = uri_of(written)
    shown = False
    window = ls.client_capabilities.window
    if window is not None and window.show_document is not None and window.show_document.support:
        answer = await ls.window_show_document_async(
            types.ShowDocumentParams(uri=target, take_focus=True)
        )
        shown = answer.success
    if not shown:
        ls.window_show_message(
            types.ShowMessageParams(types.MessageType.Info, explanation.markdown)
        )
    return {"uri": target, "markdown": explanation.markdown, "shown": shown}


class _Progress:
    """$/progress for one explanation (when the client shows progress), cancellable."""

    def __init__(self, ls: CoderLanguageServer, token: str | None) -> None:
        self.ls = ls
        self.token = token
        self.loop = asyncio.get_running_loop()
        self.characters = 0
        self.reported = time.monotonic()

    @classmethod
    async def start(
        cls, ls: CoderLanguageServer, title: str, cancel: CancellationToken
    ) -> _Progress:
        """Begin a progress bar whose cancel button cancels `cancel`."""
        window = ls.client_capabilities.window
        if window is None or not window.work_done_progress:
            return cls(ls, None)
        token = f"coder-lsp-explain-{uuid.uuid4()}"
        await ls.work_done_progress.create_async(token)
        begin = types.WorkDoneProgressBegin(title="coder-lsp", message=title, cancellable=True)
        ls.work_done_progress.begin(token, begin)
        ls.work_done_progress.tokens[token].add_done_callback(lambda _: cancel.cancel())
        return cls(ls, token)

    def on_text(self, piece: str) -> None:
        """Called from the generating thread with each new piece of the answer."""
        self.characters += len(piece)
        now = time.monotonic()
        if self.token is None or now - self.reported < PROGRESS_EVERY_S:
            return
        self.reported = now
        report = types.WorkDoneProgressReport(message=f"{self.characters} characters written")
        self.loop.call_soon_threadsafe(self.ls.work_done_progress.report, self.token, report)

    def end(self, message: str) -> None:
        """Close the progress bar (on the event loop)."""
        if self.token is not None:
            self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.ls.work_done_progress.tokens.pop(self.token, None)
