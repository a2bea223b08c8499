"""A hostile workspace against the real server over stdio (the real 0.5B, a real git repo):
FIFOs, symlinks to secrets, late-opened ignored files, unreadable documents, lone surrogates,
and the workspace watched while the server runs (files created, ignored, deleted)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_lsp_e2e import MODEL, SERVER, inline_params, open_document, wait_ready

pytestmark = [pytest.mark.slow]

CANARY = "CANARY_7f3a9e"
KEY_CANARY = "KEYCANARY0b1c2d"
MAIN = "import util\n\n\ndef total(values):\n    return \n"
ANSWER_TIMEOUT_S = 120  # a hang fails the test instead of blocking the suite


def git(root: Path, *args: str) -> None:
    """Run git in `root` (quiet, with an identity)."""
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo holding a secret, links to it and to a key outside, an ignored module, a
    FIFO, a binary file and a directory named like a module."""
    root = tmp_path_factory.mktemp("hostile-ws")
    outside = tmp_path_factory.mktemp("home") / ".ssh"
    outside.mkdir()
    (outside / "id_ed25519").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_CANARY}\n")
    (root / ".env").write_text(f"API_KEY={CANARY}\n")
    (root / ".gitignore").write_text("ignored.py\n")
    (root / "main.py").write_text(MAIN)
    (root / "ignored.py").write_text("def hidden():\n    return 1\n")
    (root / "binary.py").write_bytes(b"x = 1\n\0\0\0")
    (root / "latin.py").write_bytes(b"x = '\xe9'\n")
    (root / "folder.py").mkdir()
    os.symlink(".env", root / "helpers.py")
    os.symlink(outside / "id_ed25519", root / "notes.py")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "hostile")
    os.mkfifo(root / "pipe.py")
    return root


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=SERVER, server_env=dict(os.environ)),
    scope="module",
)
async def client(lsp_client: LanguageClient, workspace: Path):
    """A VS Code-like client on the hostile workspace, model loaded."""
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual_studio_code"),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="hostile")],
            initialization_options={"model": MODEL, "debounceMs": 0, "maxTokens": 24},
        )
    )
    await wait_ready(lsp_client)
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, *arguments: Any) -> Any:
    """Run a workspace command, failing (not hanging) if it takes too long."""
    params = types.ExecuteCommandParams(command=name, arguments=list(arguments))
    return await asyncio.wait_for(client.workspace_execute_command_async(params), ANSWER_TIMEOUT_S)


async def complete(client: LanguageClient, uri: str, line: int, character: int) -> Any:
    """inlineCompletion, failing (not hanging) if it takes too long."""
    request = client.text_document_inline_completion_async(inline_params(uri, line, character))
    return await asyncio.wait_for(request, ANSWER_TIMEOUT_S)


async def prompt_of(client: LanguageClient, path: Path, line: int, character: int) -> Any:
    """What coderLsp.showPrompt says a completion at this cursor would send."""
    return await command(client, "coderLsp.showPrompt", path.as_uri(), line, character)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_fifo_is_refused_and_blocks_nothing(client: LanguageClient, workspace: Path):
    with pytest.raises(JsonRpcException) as raised:
        await complete(client, (workspace / "pipe.py").as_uri(), 0, 0)
    assert "not a regular file" in str(raised.value)
    status = await command(client, "coderLsp.status")
    assert status["state"] == "ready"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("binary.py", "binary"),
        ("latin.py", "not UTF-8"),
        ("folder.py", "not a regular file"),
        ("missing.py", "missing"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_an_unreadable_unopened_document_gets_a_clear_error(
    client: LanguageClient, workspace: Path, name: str, reason: str
) -> None:
    with pytest.raises(JsonRpcException) as raised:
        await complete(client, (workspace / name).as_uri(), 0, 0)
    error = raised.value
    assert reason.lower() in str(error).lower()
    assert error.code == -32803
    assert error.data is None  # no Python traceback for the user


@pytest.mark.asyncio(loop_scope="module")
async def test_a_symlink_to_a_secret_is_never_used(client: LanguageClient, workspace: Path):
    helpers = workspace / "helpers.py"
    open_document(client, helpers.as_uri(), f"API_KEY={CANARY}\n")
    assert await complete(client, helpers.as_uri(), 0, 8) is None
    refused = await prompt_of(client, helpers, 0, 8)
    assert "links to the secret path .env" in refused["refused"]
    # The open buffer never reaches another file's prompt either.
    main = workspace / "main.py"
    open_document(client, main.as_uri(), MAIN.replace("import util", "import util, helpers"))
    shown = await prompt_of(client, main, 4, 11)
    assert CANARY not in shown["prompt"]
    assert "helpers.py" not in shown["files"]
    assert await command(client, "coderLsp.explain", helpers.as_uri(), 0, 0) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_a_symlink_out_of_the_workspace_is_refused(client: LanguageClient, workspace: Path):
    notes = workspace / "notes.py"
    open_document(client, notes.as_uri(), f"{KEY_CANARY}\n")
    assert await complete(client, notes.as_uri(), 0, 3) is None
    refused = await prompt_of(client, notes, 0, 3)
    assert "outside the workspace" in refused["refused"]


@pytest.mark.asyncio(loop_scope="module")
async def test_an_ignored_file_opened_after_indexing_is_refused(
    client: LanguageClient, workspace: Path
) -> None:
    main = workspace / "main.py"
    open_document(client, main.as_uri(), MAIN)
    await complete(client, main.as_uri(), 4, 11)  # the workspace is indexed by now
    ignored = workspace / "ignored.py"
    open_document(client, ignored.as_uri(), "def hidden():\n    return 1\n")
    assert await complete(client, ignored.as_uri(), 1, 11) is None
    refused = await prompt_of(client, ignored, 1, 11)
    assert "excluded by .gitignore" in refused["refused"]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_cursor_after_a_lone_surrogate_is_served(client: LanguageClient, workspace: Path):
    uri = (workspace / "surrogate.py").as_uri()
    open_document(client, uri, "x = '\ud800'\ny = ")
    shown = await prompt_of(client, workspace / "surrogate.py", 0, 6)
    assert shown is not None and "prompt" in shown
    await complete(client, uri, 1, 4)  # answered (text or None), not an error


async def wait_for_prompt(
    client: LanguageClient, path: Path, check: Any, timeout_s: float = 30
) -> Any:
    """Poll showPrompt until `check(answer)` holds (the watcher applies changes after a
    quiet period); the last answer if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await prompt_of(client, path, 4, 11)
        if check(answer) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.5)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_workspace_is_watched(client: LanguageClient, workspace: Path) -> None:
    main = workspace / "main.py"
    open_document(client, main.as_uri(), MAIN)
    first = await prompt_of(client, main, 4, 11)
    assert "util.py" not in first["files"]
    # A module created after start appears in the next prompt that imports it.
    (workspace / "util.py").write_text("def mean_of(values):\n    return sum(values)\n")
    created = await wait_for_prompt(client, main, lambda a: "util.py" in a["files"])
    assert "util.py" in created["files"] and "def mean_of" in created["prompt"]
    # A file that becomes gitignored leaves every prompt.
    (workspace / ".gitignore").write_text("ignored.py\nutil.py\n")
    ignored = await wait_for_prompt(client, main, lambda a: "util.py" not in a["files"])
    assert "util.py" not in ignored["files"] and "mean_of" not in ignored["prompt"]
    # A deleted file leaves the graph.
    (workspace / ".gitignore").write_text("ignored.py\n")
    await wait_for_prompt(client, main, lambda a: "util.py" in a["files"])
    (workspace / "util.py").unlink()
    deleted = await wait_for_prompt(client, main, lambda a: "util.py" not in a["files"])
    assert "util.py" not in deleted["files"] and "mean_of" not in deleted["prompt"]


def test_requests_after_shutdown_are_refused_and_exit_codes_follow_lsp(tmp_path: Path) -> None:
    """A raw stdio session (no model is loaded: `initialized` is never sent)."""
    after_shutdown = _raw_session(
        [
            _request(1, "initialize", {"capabilities": {}, "processId": None}),
            _request(2, "shutdown", None),
            _request(3, "workspace/executeCommand", {"command": "coderLsp.status"}),
            _notification("exit"),
        ]
    )
    assert after_shutdown.returncode == 0
    answer = _response(after_shutdown.stdout, 3)
    assert answer["error"]["code"] == -32600  # InvalidRequest
    no_shutdown = _raw_session(
        [_request(1, "initialize", {"capabilities": {}, "processId": None}), _notification("exit")]
    )
    assert no_shutdown.returncode == 1


def _request(msg_id: int, method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}


def _notification(method: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method}


def _raw_session(messages: list[dict[str, Any]]) -> subprocess.CompletedProcess[bytes]:
    """Send framed JSON-RPC messages to a fresh server over stdio; its output and exit code."""

    body = b""
    for message in messages:
        data = json.dumps(message).encode()
        body += b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    return subprocess.run(
        [sys.executable, "-m", "lsp_server"], input=body, capture_output=True, timeout=60
    )


def _response(stdout: bytes, msg_id: int) -> dict[str, Any]:
    """The response to `msg_id` among the framed messages of `stdout`."""

    for part in stdout.split(b"Content-Length: ")[1:]:
        payload = json.loads(part.split(b"\r\n\r\n", 1)[1])
        if payload.get("id") == msg_id:
            return payload
    raise AssertionError(f"no response to {msg_id}: {stdout!r}")
