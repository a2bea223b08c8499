"""Repair and explain code actions end to end: the real server process over stdio, the real
0.5B model, the capabilities of Neovim and VS Code (pytest-lsp)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import test_lsp_e2e
from lsprotocol import converters, types
from pytest_lsp import LanguageClient
from test_lsp_e2e import execute, open_document, send_raw

from lsp_server.code_actions.repair import apply_edits, python_diagnostics

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TYPO = """def total_price(items, tax):
    total = 0
    for price, quantity in items:
        totl += price * quantity
    return round(total * (1 + tax), 2)


if __name__ == "__main__":
    print(total_price([(2.0, 3), (1.5, 2)], 0.5))
"""
MISSING_COLON = """def greet(name)
    message = "Hello, " + name
    return message


print(greet("world"))
"""
MISSING_BRACKET = """def area(width, height):
    scale = 2
    return max(width * height, scale


print(area(2, 3))
"""
# The bracket must be closed on the line holding a (redacted) secret: the model never sees the
# value, so no fix can be verified and offered without overwriting it.
SECRET = """def connect(host):
    settings = dict(host=host, api_key="sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    return settings
"""
HELPERS = '''def tax_rate(country):
    """The VAT rate of a country code, as a fraction."""
    return {"FR": 0.2, "DE": 0.19}.get(country, 0.0)
'''
INVOICE = """from helpers import tax_rate


def gross_amount(net, country):
    rate = tax_rate(country)
    return net * (1 + rate)
"""
FILES = {
    "typo.py": TYPO,
    "colon.py": MISSING_COLON,
    "bracket.py": MISSING_BRACKET,
    "secret.py": SECRET,
    "helpers.py": HELPERS,
    "invoice.py": INVOICE,
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with broken and working Python modules."""
    root = tmp_path_factory.mktemp("actions-ws")
    for name, text in FILES.items():
        (root / name).write_text(text)
    return root


# The module-scoped client of the completion tests (Neovim and VS Code capabilities, the 0.5B
# model), here initialized against this module's `workspace`.
client = test_lsp_e2e.client


def action_params(uri: str, line: int) -> types.CodeActionParams:
    """Code actions for a whole line, no client diagnostics (the server checks Python)."""
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(types.Position(line, 0), types.Position(line, 0)),
        context=types.CodeActionContext(diagnostics=[]),
    )


async def repair_action(
    client: LanguageClient, workspace: Path, name: str, line: int, message: str
) -> types.CodeAction:
    """Open `name`, list the actions on `line`, and resolve the repair of `message`."""
    uri = (workspace / name).as_uri()
    open_document(client, uri, FILES[name])
    listed = await client.text_document_code_action_async(action_params(uri, line))
    assert listed is not None
    fixes = [
        a
        for a in listed
        if isinstance(a, types.CodeAction) and a.kind == types.CodeActionKind.QuickFix
    ]
    chosen = [a for a in fixes if a.diagnostics and message in a.diagnostics[0].message]
    assert chosen, [a.title for a in fixes]
    # Listing is instant: the edit only comes with resolve.
    assert chosen[0].edit is None and isinstance(chosen[0].data, dict)
    return await client.code_action_resolve_async(chosen[0])


def applied(client_action: types.CodeAction, workspace: Path, name: str) -> str:
    """The file's text after the action's edit."""
    assert client_action.edit is not None and client_action.edit.changes is not None
    edits = client_action.edit.changes[(workspace / name).as_uri()]
    return apply_edits(FILES[name], list(edits))


async def test_misspelt_local_name_is_repaired(client: LanguageClient, workspace: Path) -> None:
    action = await repair_action(client, workspace, "typo.py", 3, "undefined name 'totl'")
    assert action.disabled is None, action.data
    fixed = applied(action, workspace, "typo.py")
    assert not [d for d in python_diagnostics("typo.py", fixed) if "totl" in d.message]
    # Minimal: one small edit on the misspelt line, not a rewrite of the function.
    edits = action.edit.changes[(workspace / "typo.py").as_uri()]  # type: ignore[union-attr]
    assert len(edits) == 1 and edits[0].range.start.line == 3
    run = subprocess.run(
        [sys.executable, "-c", fixed], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "13.5"


@pytest.mark.parametrize(
    ("name", "line", "message", "output"),
    [
        ("colon.py", 0, "expected ':'", "Hello, world"),
        ("bracket.py", 2, "never closed", "6"),
    ],
)
async def test_syntax_error_is_repaired(
    client: LanguageClient, workspace: Path, name: str, line: int, message: str, output: str
) -> None:
    action = await repair_action(client, workspace, name, line, message)
    assert action.disabled is None, action.data
    fixed = applied(action, workspace, name)
    compile(fixed, name, "exec")
    run = subprocess.run(
        [sys.executable, "-c", fixed], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.stdout.strip() == output, run.stderr


async def test_no_valid_fix_gives_a_reason_not_an_edit(
    client: LanguageClient, workspace: Path
) -> None:
    action = await repair_action(client, workspace, "secret.py", 1, "never closed")
    assert action.edit is None
    assert action.disabled is not None and action.disabled.reason
    assert isinstance(action.data, dict) and action.data["verified"] is False
    assert "no verified fix" in action.data["reason"]


async def test_explain_opens_a_markdown_document(client: LanguageClient, workspace: Path) -> None:
    uri = (workspace / "invoice.py").as_uri()
    open_document(client, uri, INVOICE)
    # Raw JSON: lsprotocol's client-side converter takes any action with a `command` for a
    # bare Command (editors look at the field's type instead).
    params = converters.get_converter().unstructure(action_params(uri, 4))
    listed = await send_raw(client, types.TEXT_DOCUMENT_CODE_ACTION, params)
    explain = [a for a in listed if a["title"] == "Explain with coder-lsp"]
    assert len(explain) == 1 and "kind" not in explain[0]
    command = explain[0]["command"]
    assert command["arguments"] == [uri, 4, 4]
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command["command"], arguments=command["arguments"])
    )
    assert result is not None and result["shown"] is True
    shown = client.shown_documents[-1]
    assert shown.uri == result["uri"] and shown.uri.endswith(".md")
    document = Path(shown.uri.removeprefix("file://")).read_text()
    assert document == result["markdown"]
    assert document.startswith("# `gross_amount` in `invoice.py`")
    assert "return" in document.lower()
    status = await execute(client, "coderLsp.status")
    assert status["state"] == "ready"


async def test_bad_input_does_not_crash(client: LanguageClient, workspace: Path) -> None:
    uri = (workspace / "typo.py").as_uri()
    open_document(client, uri, TYPO)
    # Lines far outside the document: nothing to repair, and explain refuses with a message.
    assert await client.text_document_code_action_async(action_params(uri, 500)) is not None
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="coderLsp.explain", arguments=[uri, 400, 500])
    )
    assert result is None
    # Data that is not ours resolves to the action unchanged.
    foreign = types.CodeAction(title="someone else's", data={"x": 1})
    assert (await client.code_action_resolve_async(foreign)).edit is None
    assert (await execute(client, "coderLsp.status"))["state"] == "ready"
