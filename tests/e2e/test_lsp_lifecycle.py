"""Start-up as an editor sees it: a cold model cache, requests while the model loads, $/progress,
and invalid settings reported by name."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from runtime import models

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

COLD_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / f"coder-lsp-cold-cache-{os.getpid()}"


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[sys.executable, "-m", "lsp_server"],
        server_env={**os.environ, "CODER_LSP_CACHE": str(COLD_CACHE)},
    ),
    scope="module",
)
async def client(lsp_client: LanguageClient, tmp_path_factory: pytest.TempPathFactory):
    """A VS Code-like client whose server has to build its model cache from scratch."""
    root = tmp_path_factory.mktemp("cold-ws")
    (root / "main.py").write_text("def square(x):\n    return \n")
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="cold-ws")],
            initialization_options={
                "model": models.DEFAULT_DRAFT,
                "maxTokens": -5,
                "colour": "blue",
                "debounceMs": 0,
            },
        )
    )
    lsp_client.root = root  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()
    import shutil

    shutil.rmtree(COLD_CACHE, ignore_errors=True)


async def test_requests_during_the_load_are_answered_empty_at_once(client: LanguageClient) -> None:
    uri = (client.root / "main.py").as_uri()  # type: ignore[attr-defined]
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri, "python", 1, "def square(x):\n    return \n")
        )
    )
    status = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="coderLsp.status")
    )
    assert status["state"] == "loading"
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(1, 11),
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
    )
    assert await asyncio.wait_for(client.text_document_inline_completion_async(params), 5) is None

    for _ in range(1200):  # the first load converts the model: up to a few minutes on 2 cores
        status = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="coderLsp.status")
        )
        if status["state"] != "loading":
            break
        await asyncio.sleep(0.5)
    assert status["state"] == "ready", status
    result = await client.text_document_inline_completion_async(params)
    assert result is not None and "x" in result.items[0].insert_text


async def test_progress_was_reported(client: LanguageClient) -> None:
    (reports,) = client.progress_reports.values()
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert "loading" in (reports[0].message or "")
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert reports[-1].message == "ready"


async def test_invalid_settings_are_named_once(client: LanguageClient) -> None:
    (message,) = [m for m in client.messages if "invalid settings" in m.message]
    assert message.type == types.MessageType.Warning
    assert "maxTokens" in message.message and "colour" in message.message
