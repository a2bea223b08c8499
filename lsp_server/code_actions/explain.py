"""Explain code in Markdown with the model: the selection, or the enclosing function, with the
repository context the completion path builds (outlines of what the file imports, and the rest
of the file with the definitions the code names kept first), so that the explanation can say
what the called functions do."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from context.parsing import language_for_path
from context.redaction import redact_secrets
from lsp_server.code_actions.assist import (
    ActionContext,
    Region,
    admit,
    check_lines,
    context_block,
    enclosing_definition,
    fence,
    language_name,
    region_for,
    with_reference,
)
from runtime.chatml import Segments, alternating, chat_segments
from runtime.generate import CancellationToken, GenerationConfig
from runtime.tokenizer import tokenizable

logger = logging.getLogger(__name__)

SYSTEM = "You are an expert programmer who explains code to a colleague, clearly and briefly."


@dataclass(frozen=True)
class ExplainOptions:
    """Length of the answer and how much context to show the model."""

    max_tokens: int = 384
    repo_tokens: int = 1024
    file_tokens: int = 512
    max_region_lines: int = 200
    timeout_s: float | None = 180.0


@dataclass(frozen=True)
class Explanation:
    """The Markdown document and what producing it cost."""

    markdown: str
    region: Region
    finish_reason: str
    latency_ms: float
    generated_tokens: int


def explain_region(path: str, text: str, start_line: int, end_line: int) -> Region:
    """What to explain for 0-based lines [start_line, end_line]: one line means its enclosing
    function or class; a longer selection is taken as it is, unless it is (about) exactly one
    definition, which then gives it its name."""
    check_lines(text, start_line, end_line)
    if start_line == end_line:
        return region_for(
            path, text, start_line, end_line, max_lines=ExplainOptions.max_region_lines
        )
    definition = enclosing_definition(path, text, start_line, end_line)
    if (
        definition is not None
        and definition.start_line >= start_line - 1
        and definition.end_line <= end_line + 2
    ):
        return definition
    return Region(start_line, end_line + 1, "selection")


def explain_prompt(name: str, code: str, region: Region, context: str) -> Segments:
    """The ChatML prompt asking for a Markdown explanation of `code` from file `name`."""
    request = (
        f"```{fence(language_for_path(name))}\n{code.rstrip()}\n```\n\n"
        f"Explain this {language_name(name)} ({region.describe()} of `{name}`) in Markdown "
        f"with these sections: **Purpose** (one sentence), **Inputs**, **Returns** (what it "
        f"returns), **Calls** (what the functions it calls do). Be brief."
    )
    return chat_segments(alternating(SYSTEM, with_reference(context, request)))


def title(name: str, region: Region) -> str:
    """The document's heading: what is explained and where."""
    lines = f"lines {region.start_line + 1}-{region.end_line}"
    if region.name:
        return f"# `{region.name}` in `{name}` ({lines})"
    return f"# {lines.capitalize()} of `{name}`"


def explain(
    context: ActionContext,
    path: Path,
    text: str,
    start_line: int,
    end_line: int,
    *,
    workspace: Path | None = None,
    use_context: bool = True,
    options: ExplainOptions | None = None,
    cancel: CancellationToken | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Explanation:
    """Explain lines [start_line, end_line] (0-based) of `text`, the buffer of `path`, with
    `context`'s engine and workspaces. Raises ActionError for bad lines and files that must stay
    local. Blocking."""
    options = options or ExplainOptions()
    started = time.monotonic()
    text = tokenizable(text)
    region = explain_region(str(path), text, start_line, end_line)
    source = admit(context.workspaces, path, text, workspace, use_context)
    engine = context.engine
    count = engine.count_tokens
    code = redact_secrets(region.text(text))
    room = context.budget.window_tokens - 1 - options.max_tokens
    ids: list[int] = []
    for repo_tokens, file_tokens in ((options.repo_tokens, options.file_tokens), (0, 0)):
        reference = ""
        if repo_tokens or file_tokens:
            reference = context_block(
                source, text, region, count, repo_tokens=repo_tokens, file_tokens=file_tokens
            )
        ids = engine.encode_prompt(explain_prompt(source.name, code, region, reference))
        if len(ids) <= room:
            break
    lines = code.split("\n")
    while len(ids) > room and len(lines) > 1:
        # Too long even alone: keep the head of the code (the signature and docstring).
        lines = lines[: len(lines) // 2]
        head = "\n".join(lines) + "\n...\n"
        ids = engine.encode_prompt(explain_prompt(source.name, head, region, ""))
    config = GenerationConfig(max_new_tokens=options.max_tokens, timeout_s=options.timeout_s)
    result = engine.complete(ids, config, cancel, on_text)
    body = result.text.strip()
    if result.finish_reason == "length":
        body += "\n\n*(cut at the length limit)*"
    markdown = f"{title(source.name, region)}\n\n{body}\n"
    latency = round((time.monotonic() - started) * 1000, 1)
    logger.info("explain %s %s: %.0f ms", source.name, region.describe(), latency)
    return Explanation(markdown, region, result.finish_reason, latency, result.generated_tokens)


def write_explanation(explanation: Explanation, name: str, directory: Path) -> Path:
    """Save the Markdown under `directory` (one file per file and region; rewritten each time)
    and return its path."""
    slug = re.sub(r"[^\w.-]+", "_", f"{name}-{explanation.region.name or 'lines'}")[-80:]
    digest = hashlib.sha256(f"{name}:{explanation.region}".encode()).hexdigest()[:8]
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{slug}-{digest}.md"
    target.write_text(explanation.markdown, encoding="utf-8")
    return target
