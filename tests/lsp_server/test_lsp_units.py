"""Options parsing (captured editor payloads) and the per-document scheduler."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from context.prompt import PromptLayout
from lsp_server.protocol.debounce import DocumentScheduler, Superseded
from lsp_server.protocol.options import ServerOptions, parse_options
from runtime.generate import CancellationToken

# What VS Code sends for workspace/didChangeConfiguration with a "coderLsp" settings section.
VSCODE_SETTINGS = {
    "coderLsp": {
        "maxTokens": 32,
        "languages": ["python", "go"],
        "logLevel": "debug",
        "typedLineLeads": False,
        "suffixFromNextLine": True,
    }
}
# What a Neovim `init_options` table becomes.
NEOVIM_INIT = {"model": "qwen2.5-coder-0.5b", "debounceMs": 75, "useContext": False}


def test_vscode_nested_settings() -> None:
    options, problems = parse_options(VSCODE_SETTINGS)
    assert problems == []
    assert (options.max_tokens, options.languages, options.log_level) == (
        32,
        ("python", "go"),
        "debug",
    )
    assert options.language_enabled("go") and not options.language_enabled("rust")
    assert not options.typed_line_leads and ServerOptions().typed_line_leads
    # Set explicitly, it wins over the model's measured default (the 0.5B keeps the break).
    assert options.suffix_from_next_line and ServerOptions().suffix_from_next_line is None
    assert not ServerOptions(model="qwen2.5-coder-0.5b").prompt_layout().suffix_from_next_line
    chosen = parse_options({**VSCODE_SETTINGS["coderLsp"], "model": "qwen2.5-coder-0.5b"})[0]
    assert chosen.prompt_layout() == PromptLayout(False, True)


def test_neovim_flat_init_options_over_a_base() -> None:
    base = ServerOptions(max_tokens=99)
    options, problems = parse_options(NEOVIM_INIT, base)
    assert problems == []
    assert (options.model, options.debounce_ms, options.use_context, options.max_tokens) == (
        "qwen2.5-coder-0.5b",
        75,
        False,
        99,
    )


def test_invalid_fields_fall_back_one_by_one() -> None:
    options, problems = parse_options(
        {"maxTokens": "many", "debounceMs": -1, "precision": "int3", "provider": "cpu", "x": 1}
    )
    defaults = ServerOptions()
    assert options.max_tokens == defaults.max_tokens
    assert options.debounce_ms == defaults.debounce_ms
    assert options.precision == defaults.precision
    assert options.provider == "cpu"
    assert [p.split(":")[0] for p in problems] == ["maxTokens", "debounceMs", "precision", "x"]
    assert parse_options("not an object")[1] == ["options: expected an object"]
    assert parse_options(None) == (defaults, [])


@pytest.fixture
def scheduler() -> DocumentScheduler:
    return DocumentScheduler(ThreadPoolExecutor(max_workers=2))


@pytest.mark.asyncio
async def test_newer_request_supersedes_one_still_debouncing(scheduler: DocumentScheduler) -> None:
    ran: list[str] = []

    def work(name: str):
        def run(_: CancellationToken) -> str:
            ran.append(name)
            return name

        return run

    first = asyncio.ensure_future(scheduler.run("doc", 0.05, work("first")))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(scheduler.run("doc", 0.05, work("second")))
    with pytest.raises(Superseded):
        await first
    assert await second == "second"
    assert ran == ["second"]  # the superseded one never started


@pytest.mark.asyncio
async def test_superseding_cancels_running_work(scheduler: DocumentScheduler) -> None:
    started = threading.Event()

    def slow(token: CancellationToken) -> str:
        started.set()
        while not token.cancelled:
            threading.Event().wait(0.01)
        return "stopped"

    first = asyncio.ensure_future(scheduler.run("doc", 0, slow))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    second = asyncio.ensure_future(scheduler.run("doc", 0, lambda token: "new"))
    with pytest.raises(Superseded):
        await first
    assert await second == "new"


@pytest.mark.asyncio
async def test_cancelling_the_request_cancels_the_token(scheduler: DocumentScheduler) -> None:
    tokens: list[CancellationToken] = []
    started = threading.Event()

    def slow(token: CancellationToken) -> None:
        tokens.append(token)
        started.set()
        while not token.cancelled:
            threading.Event().wait(0.01)

    task = asyncio.ensure_future(scheduler.run("doc", 0, slow))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tokens[0].cancelled


@pytest.mark.asyncio
async def test_documents_do_not_interfere(scheduler: DocumentScheduler) -> None:
    a = scheduler.run("a", 0.02, lambda token: "a")
    b = scheduler.run("b", 0.02, lambda token: "b")
    assert await asyncio.gather(a, b) == ["a", "b"]


def test_feedback_counts_persist_and_ignore_unknown_ids(tmp_path: Path) -> None:
    from lsp_server.protocol.feedback import FeedbackStats, Shown, format_table

    stats = FeedbackStats(tmp_path / "stats.json")
    first = stats.track(Shown("python", "repository", 12))
    second = stats.track(Shown("go", "in-file", 3))
    assert stats.record(first, "shown") and stats.record(first, "accepted")
    assert stats.record(second, "shown")
    assert not stats.record("unknown", "shown") and not stats.record(first, "clicked")
    reloaded = FeedbackStats(tmp_path / "stats.json")
    assert reloaded.counts["language"]["python"] == {"shown": 1, "accepted": 1, "partial": 0}
    assert reloaded.counts["source"]["in-file"]["shown"] == 1
    table = format_table(reloaded.counts)
    assert "python" in table and "100%" in table and "0%" in table
