"""Commands and feedback notifications.

- `coderLsp.status`: model state and request outcomes (for clients and health checks);
- `coderLsp.showPrompt <uri> <line> <character>`: the prompt a completion there would send
  (what reaches the model, which files), or why the file stays local;
- `coderLsp.didAcceptCompletion <id>`: the command every inline item carries, run on accept;
- `textDocument/didShowCompletion {item}` and
  `textDocument/didPartiallyAcceptCompletion {item, acceptedLength}`: Copilot's notification
  shapes, counted per language and per context source (see `coder-lsp stats`).
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from lsp_server.protocol.server import CoderLanguageServer
from lsp_server.protocol.suggest import show_prompt

STATUS = "coderLsp.status"
SHOW_PROMPT = "coderLsp.showPrompt"
ACCEPT = "coderLsp.didAcceptCompletion"
DID_SHOW = "textDocument/didShowCompletion"
DID_PARTIALLY_ACCEPT = "textDocument/didPartiallyAcceptCompletion"


def _suggestion_id(params: Any) -> str | None:
    """The id in an item's accept command, from a notification's raw params."""
    item = params.get("item") if isinstance(params, dict) else getattr(params, "item", None)
    command = item.get("command") if isinstance(item, dict) else getattr(item, "command", None)
    arguments = (
        command.get("arguments")
        if isinstance(command, dict)
        else getattr(command, "arguments", None)
    )
    if isinstance(arguments, list) and arguments and isinstance(arguments[0], str):
        return arguments[0]
    return None


def _position_args(args: tuple[Any, ...]) -> tuple[str, int, int]:
    """[uri, line, character] (0-based, UTF-16 columns) from a command's arguments."""
    if (
        len(args) != 3
        or not isinstance(args[0], str)
        or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in args[1:])
    ):
        raise JsonRpcInvalidParams(f"{SHOW_PROMPT} takes [uri, line, character]")
    return args[0], args[1], args[2]


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
            "feedback": ls.feedback.counts,
        }

    @server.command(SHOW_PROMPT)
    async def prompt(ls: CoderLanguageServer, *args: Any) -> dict[str, Any] | None:
        uri, line, character = _position_args(args)
        return await show_prompt(ls, uri, types.Position(line, character))

    @server.command(ACCEPT)
    def accepted(ls: CoderLanguageServer, *args: Any) -> None:
        if args and isinstance(args[0], str):
            ls.feedback.record(args[0], "accepted")

    @server.feature(DID_SHOW)
    def did_show(ls: CoderLanguageServer, params: Any) -> None:
        suggestion_id = _suggestion_id(params)
        if suggestion_id is not None:
            ls.feedback.record(suggestion_id, "shown")

    @server.feature(DID_PARTIALLY_ACCEPT)
    def did_partially_accept(ls: CoderLanguageServer, params: Any) -> None:
        suggestion_id = _suggestion_id(params)
        if suggestion_id is not None:
            ls.feedback.record(suggestion_id, "partial")
