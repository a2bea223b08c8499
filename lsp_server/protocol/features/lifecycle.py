"""initialize / initialized / configuration: options, workspace folders, background model load
reported with $/progress."""

from __future__ import annotations

import asyncio
import logging
import uuid

from lsprotocol import types

from lsp_server.positions import path_of
from lsp_server.protocol.options import parse_options
from lsp_server.protocol.server import CoderLanguageServer, EngineState

logger = logging.getLogger(__name__)


def _report_problems(ls: CoderLanguageServer, problems: list[str]) -> None:
    if not problems:
        return
    message = "coder-lsp: invalid settings: " + "; ".join(problems)
    logger.warning("%s", message)
    ls.window_show_message(types.ShowMessageParams(types.MessageType.Warning, message))


async def _load_with_progress(ls: CoderLanguageServer) -> None:
    """Load the model in a worker thread, telling the client with $/progress if it can show it."""
    window = ls.client_capabilities.window
    token = None
    if window is not None and window.work_done_progress:
        token = f"coder-lsp-load-{uuid.uuid4()}"
        await ls.work_done_progress.create_async(token)
        ls.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title="coder-lsp",
                message=f"loading {ls.options.model} (the first run converts it: ~1 min)",
                cancellable=False,
            ),
        )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ls.load_engine)
    ls.watch_upgrades(loop)
    for folder in ls.folders:
        if ls.options.use_context:
            if token is not None:
                report = types.WorkDoneProgressReport(message=f"indexing {folder.name}")
                ls.work_done_progress.report(token, report)
            await loop.run_in_executor(None, ls.workspaces.get, folder)
    if ls.state is EngineState.FAILED:
        message = f"coder-lsp: the model could not be loaded: {ls.state_detail}"
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Error, message))
    if token is not None:
        done = "ready" if ls.state is EngineState.READY else "failed: see the log"
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=done))


def register(server: CoderLanguageServer) -> None:
    """Attach lifecycle handlers."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: CoderLanguageServer, params: types.InitializeParams) -> None:
        options, problems = parse_options(params.initialization_options)
        ls.apply_options(options)
        ls.option_problems = problems
        folders = [f.uri for f in params.workspace_folders or []]
        if not folders and params.root_uri:
            folders = [params.root_uri]
        ls.folders = [p.resolve() for p in map(path_of, folders) if p is not None]

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CoderLanguageServer, params: types.InitializedParams) -> None:
        _report_problems(ls, ls.option_problems)
        await _load_with_progress(ls)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: CoderLanguageServer, params: None) -> None:
        ls.workspaces.close()
        if ls.pipeline is not None:
            ls.pipeline.close()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(
        ls: CoderLanguageServer, params: types.DidChangeConfigurationParams
    ) -> None:
        options, problems = parse_options(params.settings, ls.options)
        _report_problems(ls, problems)
        ls.apply_options(options)
