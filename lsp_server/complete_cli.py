"""`coder-lsp complete`: one completion (or a batch) from the command line, without an editor.

Positions follow LSP: `line` and `character` are 0-based in JSON requests, and characters count
UTF-16 code units; FILE:LINE:COL on the command line is the same, 1-based.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from context.prompt import PromptLayout
from lsp_server.pipeline import CompletionPipeline, CompletionRefused
from runtime.engine import EngineOptions, LocalEngine

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 64
MAX_FILE_BYTES = 1 << 20


class RequestError(Exception):
    """A request that cannot be served: bad position, unreadable file, malformed JSON."""


@dataclass(frozen=True)
class CompletionRequest:
    """One completion to make: where, and optionally the buffer text overriding the file."""

    id: Any
    workspace: Path | None
    path: Path
    line: int
    character: int
    text: str | None = None

    @classmethod
    def from_json(cls, line: str) -> CompletionRequest:
        """Parse a batch line: {"id", "workspace", "path", "text"?, "line", "character"}."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise RequestError(f"not JSON: {error}") from error
        if not isinstance(data, dict):
            raise RequestError("a request must be a JSON object")
        missing = [key for key in ("path", "line", "character") if key not in data]
        if missing:
            raise RequestError(f"missing field(s): {', '.join(missing)}")
        if not all(isinstance(data[key], int) for key in ("line", "character")):
            raise RequestError("line and character must be integers")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise RequestError("text must be a string")
        workspace = Path(data["workspace"]) if data.get("workspace") else None
        path = Path(data["path"])
        if workspace is not None and not path.is_absolute():
            path = workspace / path
        return cls(data.get("id"), workspace, path, data["line"], data["character"], text)


def parse_target(target: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL (1-based) -> (path, line, character) 0-based."""
    path, _, rest = target.rpartition(":")
    path, _, line = path.rpartition(":")
    if not path or not line.isdigit() or not rest.isdigit() or int(line) < 1 or int(rest) < 1:
        raise RequestError(f"expected FILE:LINE:COL with 1-based numbers, got {target!r}")
    return Path(path), int(line) - 1, int(rest) - 1


def read_source(path: Path) -> str:
    """A source file's text; binary, non-UTF-8 and huge files are refused with the reason."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RequestError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES} byte limit")
        data = path.read_bytes()
    except OSError as error:
        raise RequestError(f"{path}: {error.strerror or error}") from error
    if b"\0" in data:
        raise RequestError(f"{path}: binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(f"{path}: not UTF-8 ({error.reason} at byte {error.start})") from error


def offset_of(text: str, line: int, character: int) -> int:
    """Index into `text` of an LSP position (UTF-16 character units); out of range -> error."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        raise RequestError(f"line {line} is outside the file (0..{len(lines) - 1}, 0-based)")
    encoded = lines[line].encode("utf-16-le")
    if not 0 <= character <= len(encoded) // 2:
        raise RequestError(
            f"character {character} is outside line {line} (0..{len(encoded) // 2}, 0-based)"
        )
    column = len(encoded[: 2 * character].decode("utf-16-le", errors="ignore"))
    return sum(len(item) + 1 for item in lines[:line]) + column


def complete_one(
    pipeline: CompletionPipeline, request: CompletionRequest, args: argparse.Namespace
) -> dict[str, Any]:
    """Serve one request; the result fields are the CLI's JSON contract."""
    started = time.monotonic()
    text = request.text if request.text is not None else read_source(request.path)
    offset = offset_of(text, request.line, request.character)
    try:
        done = pipeline.complete(
            request.path,
            text,
            offset,
            workspace=request.workspace,
            use_context=not args.no_context,
            max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
        )
    except CompletionRefused as error:
        raise RequestError(str(error)) from error
    result = done.result
    output: dict[str, Any] = {
        "id": request.id,
        "completion": done.text,
        "replace_chars": done.replace_chars,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
        "prompt_tokens": result.prompt_tokens,
        "cached_tokens": result.cached_tokens,
        "generated_tokens": result.generated_tokens,
        # Drafted tokens of both sources (draft model and prompt lookup), verified by the target.
        "draft_proposed": result.extra.get("draft_proposed", 0)
        + result.extra.get("lookup_proposed", 0),
        "draft_accepted": result.extra.get("draft_accepted", 0)
        + result.extra.get("lookup_accepted", 0),
        "context_files": done.prompt.files,
    }
    if args.show_prompt:
        output["prompt"] = done.prompt.text
    return output


def _batch_requests(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield number, line


def run_complete(args: argparse.Namespace) -> int:
    """Run the `complete` subcommand with the flags parsed by `lsp_server.cli`; the exit code."""
    if args.target:
        try:
            path, line, character = parse_target(args.target)
            workspace = Path(args.workspace) if args.workspace else None
            request = CompletionRequest(None, workspace, path, line, character)
            read_source(path)  # fail on a bad file before loading a model
        except RequestError as error:
            print(f"coder-lsp complete: {error}", file=sys.stderr)
            return 1
    options = EngineOptions(
        model=args.model, draft_model=args.draft_model, precision=args.precision
    )
    if args.no_draft:
        options = options.without_speculation()
    engine = LocalEngine.load(options, progress=True)
    pipeline = CompletionPipeline(engine, layout=PromptLayout.for_model(args.model))
    if not args.target:
        for number, request_line in _batch_requests(Path(args.batch)):
            try:
                request = CompletionRequest.from_json(request_line)
                output = complete_one(pipeline, request, args)
            except RequestError as error:
                logger.warning("request on line %d: %s", number, error)
                output = {"id": _request_id(request_line), "error": str(error)}
            print(json.dumps(output), flush=True)
        return 0
    try:
        output = complete_one(pipeline, request, args)
    except RequestError as error:
        print(f"coder-lsp complete: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(output))
        return 0
    if args.show_prompt:
        print(f"--- prompt ({output['prompt_tokens']} tokens) ---")
        print(output["prompt"])
        print("--- completion ---")
    print(output["completion"])
    return 0


def _request_id(line: str) -> Any:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    return data.get("id") if isinstance(data, dict) else None
