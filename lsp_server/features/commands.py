"""workspace/executeCommand: `coderLsp.status` (model state, for clients and health checks)."""

from __future__ import annotations

from typing import Any

from lsp_server.server import CoderLanguageServer

STATUS = "coderLsp.status"


def register(server: CoderLanguageServer) -> None:
    """Attach command handlers."""

    @server.command(STATUS)
    def status(ls: CoderLanguageServer, *args: Any) -> dict[str, Any]:
        return {
            "state": ls.state.value,
            "detail": ls.state_detail,
            "model": ls.options.model,
            "folders": [str(folder) for folder in ls.folders],
            "outcomes": dict(ls.outcomes),
        }
