"""textDocument/completion: the fallback for clients without inline completion — one item
whose edit inserts the suggestion. Clients that announced inline completion get nothing here,
so they do not see the suggestion twice."""

from __future__ import annotations

from lsprotocol import types

from lsp_server.protocol.server import CoderLanguageServer
from lsp_server.protocol.suggest import suggest


def _client_has_inline_completion(ls: CoderLanguageServer) -> bool:
    text_document = ls.client_capabilities.text_document
    return text_document is not None and text_document.inline_completion is not None


def register(server: CoderLanguageServer) -> None:
    """Attach the completion handler."""

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(
        ls: CoderLanguageServer, params: types.CompletionParams
    ) -> types.CompletionList | None:
        if _client_has_inline_completion(ls):
            return None
        found = await suggest(ls, "completion", params.text_document.uri, params.position)
        if found is None:
            return None
        first_line = found.text.strip().split("\n", 1)[0]
        item = types.CompletionItem(
            label=first_line[:60] or found.text[:60],
            kind=types.CompletionItemKind.Snippet,
            detail="coder-lsp",
            text_edit=types.TextEdit(range=found.range, new_text=found.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            sort_text="0",
            filter_text=first_line,
        )
        return types.CompletionList(is_incomplete=True, items=[item])
