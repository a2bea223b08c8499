"""textDocument/inlineCompletion (LSP 3.18): ghost text at the cursor."""

from __future__ import annotations

from lsprotocol import types

from lsp_server.protocol.features.commands import ACCEPT
from lsp_server.protocol.feedback import Shown
from lsp_server.protocol.server import CoderLanguageServer
from lsp_server.protocol.suggest import suggest


def register(server: CoderLanguageServer) -> None:
    """Attach the inline completion handler."""

    # With options, so pygls advertises inlineCompletionProvider (without, it leaves it out and
    # standard clients such as vscode-languageclient never ask).
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: CoderLanguageServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList | None:
        found = await suggest(ls, "inlineCompletion", params.text_document.uri, params.position)
        if found is None:
            return None
        shown = Shown(found.language, found.source, len(found.text))
        suggestion_id = ls.feedback.track(shown)
        item = types.InlineCompletionItem(
            insert_text=found.text,
            range=found.range,
            # Runs when the user accepts the item: how acceptance is counted.
            command=types.Command(
                title="coder-lsp: accepted", command=ACCEPT, arguments=[suggestion_id]
            ),
        )
        return types.InlineCompletionList(items=[item])
