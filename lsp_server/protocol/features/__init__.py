"""One module per LSP feature; `register_all` attaches them to a server."""

from __future__ import annotations

from lsp_server.protocol.features import (
    code_actions,
    commands,
    completion,
    documents,
    inline_completion,
    lifecycle,
)
from lsp_server.protocol.server import CoderLanguageServer


def register_all(server: CoderLanguageServer) -> None:
    """Attach every feature's handlers to `server`."""
    for feature in (lifecycle, documents, inline_completion, completion, commands, code_actions):
        feature.register(server)
