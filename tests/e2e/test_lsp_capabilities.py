"""What the editor clients rely on in the server's capabilities: standard clients
(vscode-languageclient, Neovim 0.12's vim.lsp.inline_completion) only ask for inline
completions when `inlineCompletionProvider` is advertised, and VS Code forwards an item's accept
command to the server only when `executeCommandProvider` lists it."""

from __future__ import annotations

import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from runtime import models

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server"]),
    params=["neovim", "visual_studio_code"],
    scope="module",
)
async def client(lsp_client: LanguageClient, request: pytest.FixtureRequest):
    """A client with an editor's capabilities; the initialize result is kept on it."""
    result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(request.param),
            initialization_options={"model": models.DEFAULT_DRAFT},
        )
    )
    lsp_client.result = result  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


async def test_inline_completion_is_advertised(client: LanguageClient) -> None:
    capabilities = client.result.capabilities  # type: ignore[attr-defined]
    assert capabilities.inline_completion_provider is not None


async def test_feedback_and_status_commands_are_listed(client: LanguageClient) -> None:
    commands = client.result.capabilities.execute_command_provider.commands  # type: ignore[attr-defined]
    assert {"coderLsp.didAcceptCompletion", "coderLsp.status"} <= set(commands)
