"""The language server end to end: the real server process over stdio, the real 0.5B model,
driven by pytest-lsp with the capabilities of real editors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server.protocol.options import ServerOptions

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MODEL = "qwen2.5-coder-0.5b"
SERVER = [sys.executable, "-m", "lsp_server", "--log-level", "INFO"]
# Keep the user's acceptance statistics out of the tests.
STATS = Path(tempfile.gettempdir()) / f"coder-lsp-test-stats-{os.getpid()}.json"
CALC = "def add(a, b):\n    '''Return the sum of a and b.'''\n    return \n"
LONG = "def describe_every_planet():\n"
STATS_HEAD = (
    "def summary(values):\n"
    "    '''Print the count, sum, mean, min and max of `values`, one line each.'''\n"
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one Python module."""
    root = tmp_path_factory.mktemp("lsp-ws")
    (root / "calc.py").write_text(CALC)
    return root


async def execute(client: LanguageClient, command: str) -> Any:
    """Run a workspace command and return its result."""
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=[])
    )


async def wait_ready(client: LanguageClient, timeout_s: float = 600) -> None:
    """Poll the server's status command until the model is loaded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        status = await execute(client, "coderLsp.status")
        if status["state"] == "ready":
            return
        assert status["state"] == "loading", status
        await asyncio.sleep(0.5)
    raise AssertionError("the model did not load in time")


async def send_raw(client: LanguageClient, method: str, params: Any) -> Any:
    """Send a request whose params the client's own types would refuse (a broken client)."""
    msg_id = f"raw-{uuid.uuid4()}"
    future: Future[Any] = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wrap_future(future)


def open_document(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    """didOpen a Python document."""
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)
        )
    )


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    """inlineCompletion at a position, invoked automatically (as typing does)."""
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic
        ),
    )


@pytest_lsp.fixture(
    params=["neovim", "visual_studio_code"],
    config=ClientServerConfig(
        server_command=SERVER, server_env={**os.environ, "CODER_LSP_STATS": str(STATS)}
    ),
    scope="module",
)
async def client(request: pytest.FixtureRequest, lsp_client: LanguageClient, workspace: Path):
    """A client with the given editor's capabilities, initialized against the workspace."""
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(request.param),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="lsp-ws")],
            initialization_options={"model": MODEL, "debounceMs": 0, "maxTokens": 48},
        )
    )
    await wait_ready(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def test_inline_completion_fills_the_hole(client: LanguageClient, workspace: Path) -> None:
    uri = (workspace / "calc.py").as_uri()
    open_document(client, uri, CALC)
    with max_latency(client, 0):  # the whole answer, however loaded the machine
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 11))
    assert result is not None
    items = result.items if isinstance(result, types.InlineCompletionList) else result
    assert len(items) == 1
    assert items[0].insert_text.replace(" ", "") == "a+b"
    assert items[0].range == types.Range(types.Position(2, 11), types.Position(2, 11))


async def test_feedback_is_counted_per_language_and_source(
    client: LanguageClient, workspace: Path
) -> None:
    uri = (workspace / "calc.py").as_uri()
    open_document(client, uri, CALC, version=5)
    result = await client.text_document_inline_completion_async(inline_params(uri, 2, 11))
    assert isinstance(result, types.InlineCompletionList)
    (item,) = result.items
    assert item.command is not None and item.command.arguments
    before = (await execute(client, "coderLsp.status"))["feedback"]["language"].get("python", {})
    raw_item = client.protocol._converter.unstructure(item)
    client.protocol.notify("textDocument/didShowCompletion", {"item": raw_item})
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
    )
    client.protocol.notify(
        "textDocument/didPartiallyAcceptCompletion", {"item": raw_item, "acceptedLength": 2}
    )
    after = (await execute(client, "coderLsp.status"))["feedback"]["language"]["python"]
    for event in ("shown", "accepted", "partial"):
        assert after[event] == before.get(event, 0) + 1
    # The workspace holds calc.py alone, so the prompt had no other files in it.
    assert "in-file" in (await execute(client, "coderLsp.status"))["feedback"]["source"]


async def test_auto_closed_brackets_are_replaced_not_doubled(
    client: LanguageClient, workspace: Path
) -> None:
    uri = (workspace / "larger.js").as_uri()
    text = "function larger(a, b) {\n  return Math.max()\n}\n"
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "javascript", 1, text))
    )
    result = await client.text_document_inline_completion_async(inline_params(uri, 1, 18))
    assert isinstance(result, types.InlineCompletionList)
    (item,) = result.items
    line = text.split("\n")[1]
    start, end = item.range.start.character, item.range.end.character
    edited = line[:start] + item.insert_text + line[end:]
    assert edited.count("(") == edited.count(")"), edited


async def test_completion_fallback(client: LanguageClient, workspace: Path) -> None:
    uri = (workspace / "calc.py").as_uri()
    open_document(client, uri, CALC, version=2)
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=2, character=11),
        )
    )
    assert isinstance(result, types.CompletionList)
    (item,) = result.items
    assert isinstance(item.text_edit, types.TextEdit)
    assert item.text_edit.new_text.replace(" ", "") == "a+b"
    assert item.text_edit.range.start == types.Position(2, 11)


async def test_cancel_request_stops_generation(client: LanguageClient, workspace: Path) -> None:
    # A document no earlier request saw: nothing finished can answer it at once.
    uri = (workspace / f"long_{uuid.uuid4().hex}.py").as_uri()
    open_document(client, uri, LONG)
    before = (await execute(client, "coderLsp.status"))["outcomes"].get("cancelled", 0)
    future = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 0), msg_id="cancel-me"
    )
    await asyncio.sleep(0.05)  # the request is in (no debounce in this session)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wrap_future(future)
    status = await execute(client, "coderLsp.status")
    assert status["outcomes"].get("cancelled", 0) == before + 1
    # The server still answers (on a loaded machine maybe after the time budget: the answer
    # then comes at the next request, from the generation it left running).
    calc = (workspace / "calc.py").as_uri()
    for _ in range(20):
        if await client.text_document_inline_completion_async(inline_params(calc, 2, 11)):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("no answer after a cancelled request")


async def test_newer_request_supersedes_older(client: LanguageClient, workspace: Path) -> None:
    uri = (workspace / f"long_{uuid.uuid4().hex}.py").as_uri()
    open_document(client, uri, LONG)
    first = client.text_document_inline_completion_async(inline_params(uri, 1, 0))
    second = client.text_document_inline_completion_async(inline_params(uri, 1, 0))
    older, newer = await asyncio.gather(first, second)
    assert older is None
    # The newer one shares the older's generation; over the time budget it is answered empty
    # and the generation goes on, so asking again at the same pause gets its answer.
    for _ in range(20):
        if newer is not None:
            break
        await asyncio.sleep(0.5)
        newer = await client.text_document_inline_completion_async(inline_params(uri, 1, 0))
    assert newer is not None


@pytest.mark.parametrize(
    "line, character", [(99, 0), (2, 500), (-1, 0)], ids=["line", "column", "negative"]
)
async def test_positions_outside_the_document_are_empty(
    client: LanguageClient, workspace: Path, line: int, character: int
) -> None:
    uri = (workspace / "calc.py").as_uri()
    open_document(client, uri, CALC, version=3)
    params = {
        "textDocument": {"uri": uri},
        "position": {"line": line, "character": character},
        "context": {"triggerKind": 2},
    }
    try:
        result = await send_raw(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
    except Exception as error:  # a JSON-RPC error is acceptable; a crash is not
        assert "position" in str(error).lower() or "invalid" in str(error).lower(), error
    else:
        assert result is None
    assert (await execute(client, "coderLsp.status"))["state"] == "ready"


async def test_malformed_params_get_an_error(client: LanguageClient) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any JSON-RPC error; the point is no crash
        await send_raw(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, {"textDocument": 42})
    assert (await execute(client, "coderLsp.status"))["state"] == "ready"


async def test_surrogates_and_huge_documents_never_crash(
    client: LanguageClient, workspace: Path
) -> None:
    odd = (workspace / "odd.py").as_uri()
    open_document(client, odd, "name = '\udcff\udcfe'\nvalue = \n")
    result = await client.text_document_inline_completion_async(inline_params(odd, 1, 8))
    assert result is None or isinstance(result, types.InlineCompletionList)
    huge = (workspace / "huge.py").as_uri()
    body = "x = 1\n" * (10 * 1024 * 1024 // 6)
    open_document(client, huge, body + "def f():\n    return \n")
    last = body.count("\n") + 1
    result = await client.text_document_inline_completion_async(inline_params(huge, last, 11))
    assert result is None or isinstance(result, types.InlineCompletionList)
    assert (await execute(client, "coderLsp.status"))["state"] == "ready"


async def announced(client: LanguageClient, uri: str) -> Any:
    """The next `coderLsp/completionReady` for `uri` (those for other documents are skipped)."""
    while True:
        params = await client.wait_for_notification("coderLsp/completionReady")
        if params.textDocument.uri == uri:
            return params


@contextlib.contextmanager
def max_latency(client: LanguageClient, milliseconds: int) -> Iterator[None]:
    """The server's `maxLatencyMs` set to `milliseconds` for a while, then back to its default."""
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxLatencyMs": milliseconds})
    )
    try:
        yield
    finally:
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"maxLatencyMs": ServerOptions().max_latency_ms}
            )
        )


async def test_a_suggestion_over_budget_is_announced_when_ready(
    client: LanguageClient, workspace: Path
) -> None:
    # A budget nothing fits in: the answer is empty and the generation goes on.
    with max_latency(client, 1):
        uri = (workspace / "budget.py").as_uri()
        text = "def circle_area(radius):\n    return "
        open_document(client, uri, text, version=7)
        ready = asyncio.ensure_future(announced(client, uri))
        assert await client.text_document_inline_completion_async(inline_params(uri, 1, 11)) is None
        params = await asyncio.wait_for(ready, 120)
        assert params.textDocument.uri == uri and params.textDocument.version == 7
        assert (params.position.line, params.position.character) == (1, 11)
        # Asked again, as the editor does on that notification: the finished answer, at once.
        again = await client.text_document_inline_completion_async(inline_params(uri, 1, 11))
        assert again is not None and again.items[0].insert_text.strip()


async def test_a_first_line_shown_first_is_announced_when_its_block_is_ready(
    client: LanguageClient, workspace: Path
) -> None:
    # A budget the first line fits in: it is shown as soon as it is written.
    with max_latency(client, 60000):
        uri = (workspace / "stats.py").as_uri()
        text = STATS_HEAD + "    "
        open_document(client, uri, text, version=4)
        ready = asyncio.ensure_future(announced(client, uri))
        first = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        assert first is not None
        line = first.items[0].insert_text
        assert line.strip() and "\n" not in line.rstrip("\n"), line
        params = await asyncio.wait_for(ready, 120)
        assert params.textDocument.version == 4
        assert (params.position.line, params.position.character) == (2, 4)
        # Asked again: the whole block, which goes on from the line shown.
        again = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
        assert again is not None
        block = again.items[0].insert_text
        assert block.startswith(line) and len(block.strip().splitlines()) > 1, block


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=SERVER, server_env={**os.environ, "CODER_LSP_STATS": str(STATS)}
    ),
    scope="module",
)
async def cold_client(lsp_client: LanguageClient, workspace: Path):
    """A client of the default models (the 1.5B, the 0.5B as its small model) with a time
    budget nothing fits in: the first request in a file is cold, so the small model answers."""
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="lsp-ws")],
            initialization_options={"debounceMs": 0, "maxTokens": 48, "maxLatencyMs": 1},
        )
    )
    await wait_ready(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def test_the_targets_answer_after_the_small_models_is_announced(
    cold_client: LanguageClient, workspace: Path
) -> None:
    uri = (workspace / "area.py").as_uri()
    open_document(cold_client, uri, "def square_area(side):\n    return ", version=2)

    async def twice() -> list[Any]:
        return [await announced(cold_client, uri), await announced(cold_client, uri)]

    ready = asyncio.ensure_future(twice())
    empty = await cold_client.text_document_inline_completion_async(inline_params(uri, 1, 11))
    assert empty is None  # nothing in 1 ms: the small model goes on, then the target
    # Told when the small model's answer is ready, then when the target's replaces it.
    for params in await asyncio.wait_for(ready, 300):
        assert params.textDocument.version == 2
        assert (params.position.line, params.position.character) == (1, 11)
    again = await cold_client.text_document_inline_completion_async(inline_params(uri, 1, 11))
    assert again is not None and again.items[0].insert_text.strip()
