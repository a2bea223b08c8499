"""didOpen / didChange / didClose: pygls keeps the text; open buffers also go to the
workspace index so repository context sees unsaved edits (mutate on notifications, cheaply)."""

from __future__ import annotations

import logging
from pathlib import Path

from lsprotocol import types

from lsp_server.positions import path_of, path_or_name
from lsp_server.protocol.server import CoderLanguageServer

logger = logging.getLogger(__name__)


def _sync_buffer(ls: CoderLanguageServer, uri: str, closed: bool = False) -> None:
    folder = ls.folder_of(uri)
    path = path_of(uri)
    if folder is None or path is None or not ls.options.use_context:
        return
    repo = ls.workspaces.opened(folder)
    if repo is None:
        return  # not indexed yet: the first completion indexes it and reads the buffer then
    relative = repo.index.relative_path(Path(path))
    if relative is None:
        return
    if closed:
        repo.index.close_buffer(relative)
        return
    text = ls.workspace.get_text_document(uri).source
    if len(text) > repo.index.rules.max_bytes:
        return  # huge buffers are completed in-file only; indexing them costs every keystroke
    repo.index.set_buffer(relative, text)


def _warm_context(ls: CoderLanguageServer, document: types.TextDocumentItem) -> None:
    """Start prefilling the file's repository context (see CompletionPipeline.warm_file) when
    completions would use it: model ready, language enabled, file in a workspace folder."""
    folder = ls.folder_of(document.uri)
    path = path_of(document.uri)
    options, pipeline = ls.options, ls.pipeline
    if pipeline is None or folder is None or path is None:
        return
    if options.use_context and options.language_enabled(document.language_id or ""):
        pipeline.warm_file(Path(path), document.text, folder)


def register(server: CoderLanguageServer) -> None:
    """Attach document synchronisation handlers."""

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CoderLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        _sync_buffer(ls, params.text_document.uri)
        _warm_context(ls, params.text_document)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CoderLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        _sync_buffer(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CoderLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.scheduler.cancel(params.text_document.uri)
        ls.answered.pop(str(path_or_name(params.text_document.uri)), None)
        _sync_buffer(ls, params.text_document.uri, closed=True)
