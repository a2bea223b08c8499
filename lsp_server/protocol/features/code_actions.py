"""textDocument/codeAction, codeAction/resolve and the explain / repair commands: repair a
diagnostic with a verified fix, explain code in Markdown (logic in
lsp_server/protocol/actions.py)."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from lsp_server.protocol import actions
from lsp_server.protocol.server import CoderLanguageServer


def register(server: CoderLanguageServer) -> None:
    """Attach the code action handlers."""

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(
            code_action_kinds=[types.CodeActionKind.QuickFix], resolve_provider=True
        ),
    )
    async def code_action(
        ls: CoderLanguageServer, params: types.CodeActionParams
    ) -> list[types.CodeAction] | None:
        return await actions.list_actions(ls, params)

    @server.feature(types.CODE_ACTION_RESOLVE)
    async def resolve(ls: CoderLanguageServer, params: types.CodeAction) -> types.CodeAction:
        return await actions.resolve_action(ls, params)

    @server.command(actions.EXPLAIN)
    async def explain(ls: CoderLanguageServer, *args: Any) -> dict[str, Any] | None:
        return await actions.explain_command(ls, args)

    @server.command(actions.REPAIR)
    async def repair(ls: CoderLanguageServer, *args: Any) -> dict[str, Any]:
        return await actions.repair_command(ls, args)
