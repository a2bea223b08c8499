"""The remote engine: the language server completing through `coder-lsp serve` (both real
processes, pytest-lsp), and `RemoteEngine` against a real peer, llama-cpp-python's server on the
same GGUF."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pytest_lsp
from _serve import add_token, metric, start, start_serve, wait_http
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_lsp_e2e import CALC, execute, inline_params, open_document, wait_ready

from runtime.client import RemoteEngine, RemoteError, RemoteOptions
from runtime.generate import CancellationToken, GenerationConfig
from runtime.tokenizer import QwenTokenizer

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-0.5b"
STATS = Path(tempfile.gettempdir()) / f"coder-lsp-test-remote-stats-{os.getpid()}.json"
FIM = [
    ("<|fim_prefix|>", True),
    ("def add(a, b):\n    '''Return the sum of a and b.'''\n    return ", False),
    ("<|fim_suffix|>", True),
    ("\n", False),
    ("<|fim_middle|>", True),
]
COUNTING = "numbers = [" + ", ".join(str(i) for i in range(1, 40)) + ","


@pytest.fixture(scope="module")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`coder-lsp serve` with one user: (base URL, token)."""
    config = tmp_path_factory.mktemp("remote") / "server.json"
    token = add_token(config, "dev")
    process, url = start_serve(config)
    yield url, token
    process.stop()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one Python module."""
    root = tmp_path_factory.mktemp("remote-ws")
    (root / "calc.py").write_text(CALC)
    return root


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[sys.executable, "-m", "lsp_server", "--log-level", "INFO"],
        server_env={**os.environ, "CODER_LSP_STATS": str(STATS)},
    ),
    scope="module",
)
async def client(lsp_client: LanguageClient, team_server: tuple[str, str], workspace: Path):
    """A VS Code-like client whose language server uses the team server as its engine."""
    url, token = team_server
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="remote-ws")],
            initialization_options={
                "model": MODEL,
                "engine": "remote",
                "engineUrl": url,
                "engineToken": token,
                "debounceMs": 0,
                "maxTokens": 48,
            },
        )
    )
    await wait_ready(lsp_client)
    yield
    await lsp_client.shutdown_session()


@pytest.mark.asyncio(loop_scope="module")
async def test_language_server_completes_through_the_team_server(
    client: LanguageClient, team_server: tuple[str, str], workspace: Path
) -> None:
    url, token = team_server
    status = await execute(client, "coderLsp.status")
    assert status["state"] == "ready"
    uri = (workspace / "calc.py").as_uri()
    open_document(client, uri, CALC)
    before = _generations(url, token)
    result = await client.text_document_inline_completion_async(inline_params(uri, 2, 11))
    assert isinstance(result, types.InlineCompletionList)
    (item,) = result.items
    assert item.insert_text.replace(" ", "") == "a+b"
    # The answer came from the team server (its line is shown once written; the server counts
    # the generation when the stream closes, a moment later).
    for _ in range(50):
        if _generations(url, token) > before:
            break
        await asyncio.sleep(0.2)
    assert _generations(url, token) > before


def _generations(url: str, token: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    return sum(
        metric(text, "coderlsp_generations_total", f'reason="{reason}"')
        for reason in ("stop", "stop_string", "length", "cancelled", "context", "deadline")
    )


def test_wrong_token_is_reported(team_server: tuple[str, str], qwen_tokenizer: QwenTokenizer):
    url, _ = team_server
    engine = RemoteEngine(RemoteOptions(url, "clsp-0-wrong"), qwen_tokenizer)
    try:
        with pytest.raises(RemoteError, match="401"):
            engine.model_name()
    finally:
        engine.close()


# ------------------------------------------------------------------ llama-cpp-python's server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(gguf_05b: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on the same GGUF (a bench extra)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed ('.[bench]')")
    pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] extras missing")
    port = _free_port()
    process = start(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_05b),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", process=process)
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def llama_engine(llama_server: str, qwen_tokenizer: QwenTokenizer) -> Iterator[RemoteEngine]:
    """A RemoteEngine on llama.cpp's server."""
    engine = RemoteEngine(RemoteOptions(llama_server), qwen_tokenizer)
    yield engine
    engine.close()


def test_remote_engine_completes_on_llama_cpp(llama_engine: RemoteEngine) -> None:
    prompt = llama_engine.encode_prompt(FIM)
    result = llama_engine.complete(prompt, GenerationConfig(max_new_tokens=16, temperature=0))
    assert result.text.split("\n")[0].replace(" ", "") == "a+b"
    # llama-cpp-python takes text prompts only: the engine switched to the decoded prompt,
    # whose special tokens that server parses back.
    assert llama_engine.prompt_as_text is True
    assert result.prompt_tokens == len(prompt)


def test_remote_engine_stop_rule_and_cancellation_on_llama_cpp(
    llama_engine: RemoteEngine,
) -> None:
    prompt = llama_engine.encode_prompt([(COUNTING, False)])

    def first_comma(text: str) -> int | None:
        index = text.find(",", 1)
        return index if index >= 0 else None

    stopped = llama_engine.complete(
        prompt, GenerationConfig(max_new_tokens=200, temperature=0, stop_rule=first_comma)
    )
    assert (stopped.text.strip(), stopped.finish_reason) == ("40", "stop_string")

    cancel = CancellationToken()
    pieces: list[str] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        cancel.cancel()

    cancelled = llama_engine.complete(
        prompt, GenerationConfig(max_new_tokens=400, temperature=0), cancel, on_text
    )
    assert cancelled.finish_reason == "cancelled"
    assert cancelled.generated_tokens < 400
    # The server is free again: a closed stream ended that generation.
    after = llama_engine.complete(prompt, GenerationConfig(max_new_tokens=3, temperature=0))
    assert after.text.strip().startswith("40")
