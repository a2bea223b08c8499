"""`coder-lsp complete`: one completion (or a batch) from the command line, without an editor.

Positions follow LSP: `line` and `character` are 0-based in JSON requests, and characters count
UTF-16 code units; FILE:LINE:COL on the command line is the same, 1-based.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from context.files import FileRefused, read_text_file
from context.prompt import PromptLayout
from lsp_server.cli.args import positive_int
from lsp_server.completion.pipeline import CompletionPipeline, CompletionRefused
from lsp_server.positions import PositionError, offset_of
from runtime.config import PRECISIONS
from runtime.engine import EngineOptions, LocalEngine
from runtime.models import DEFAULT_DRAFT, DEFAULT_PRECISION, DEFAULT_TARGET

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 64
MAX_FILE_BYTES = 1 << 20


def add_parser(commands: Any) -> None:
    """Register `complete` on the CLI's subparsers; its flags are a contract (README)."""
    complete = commands.add_parser(
        "complete", help="complete at FILE:LINE:COL (1-based) and print the result"
    )
    where = complete.add_mutually_exclusive_group(required=True)
    where.add_argument("target", nargs="?", metavar="FILE:LINE:COL", help="1-based position")
    where.add_argument(
        "--batch", metavar="REQUESTS.jsonl", help="one JSON request per line instead of a target"
    )
    complete.add_argument(
        "--workspace", metavar="DIR", help="workspace root for repository context"
    )
    complete.add_argument("--json", action="store_true", help="print JSON instead of text")
    complete.add_argument(
        "--show-prompt", action="store_true", help="also print the prompt sent to the model"
    )
    complete.add_argument(
        "--no-context", action="store_true", help="use the current file only, no repository"
    )
    complete.add_argument(
        "--model", metavar="NAME", default=DEFAULT_TARGET, help="default: %(default)s"
    )
    draft = complete.add_mutually_exclusive_group()
    draft.add_argument(
        "--draft-model",
        metavar="NAME",
        default=DEFAULT_DRAFT,
        help="speculative draft model (default: %(default)s)",
    )
    draft.add_argument(
        "--no-draft",
        action="store_true",
        help="no speculative decoding: neither a draft model nor prompt lookup",
    )
    complete.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="most tokens to generate (default: engine's)",
    )
    complete.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="of the converted models (default here: %(default)s)",
    )
    complete.set_defaults(run=run)


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
    def from_json(cls, data: Any) -> CompletionRequest:
        """A decoded batch line {"id"?, "workspace"?, "path", "text"?, "line", "character"},
        every field's type checked (RequestError naming the field). A missing, null or empty
        `workspace` is none; lone surrogates in `text` are served (see `offset_of`)."""
        if not isinstance(data, dict):
            raise RequestError(f"a request must be a JSON object, got {_json_type(data)}")
        missing = [key for key in ("path", "line", "character") if key not in data]
        if missing:
            raise RequestError(f"missing field(s): {', '.join(missing)}")
        if not _is_id(data.get("id")):
            raise RequestError(
                f"id must be a string, an integer or null, got {_json_type(data['id'])}"
            )
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise RequestError(f"text must be a string or null, got {_json_type(text)}")
        workspace = (
            _file_name(data, "workspace") if data.get("workspace") not in (None, "") else None
        )
        path = _file_name(data, "path")
        if workspace is not None and not path.is_absolute():
            path = workspace / path
        line, character = _integer(data, "line"), _integer(data, "character")
        return cls(data.get("id"), workspace, path, line, character, text)


def decode_request(raw: bytes) -> Any:
    """The JSON value of one batch line; RequestError when it is not UTF-8 or not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(f"not UTF-8 ({error.reason} at byte {error.start})") from error
    # ValueError: also integers over Python's digit limit; RecursionError: deep nesting.
    except (ValueError, RecursionError) as error:
        raise RequestError(f"not JSON: {error}") from error


def _is_id(value: Any) -> bool:
    """Whether `value` is a JSON-RPC kind of id: a string, an integer or null."""
    return value is None or isinstance(value, str) or type(value) is int


def request_id(data: Any) -> Any:
    """The id to answer a decoded request with: its `id` when that is one, else None."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if _is_id(value) else None


_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    """How JSON calls the type of a decoded value, for error messages."""
    return "an empty string" if value == "" else _JSON_TYPES[type(value)]


def _integer(data: dict[str, Any], key: str) -> int:
    """The integer field `key` (JSON booleans are not integers)."""
    value = data[key]
    if type(value) is not int:
        raise RequestError(f"{key} must be an integer, got {_json_type(value)}")
    return value


def _file_name(data: dict[str, Any], key: str) -> Path:
    """The field `key` as a path: a non-empty string the file system can take."""
    value = data[key]
    if not isinstance(value, str) or not value:
        raise RequestError(f"{key} must be a non-empty string, got {_json_type(value)}")
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError as error:
        raise RequestError(f"{key} is not a valid file name ({error.reason})") from error
    if b"\0" in encoded:
        raise RequestError(f"{key} contains a NUL character")
    return Path(value)


def parse_target(target: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL (1-based) -> (path, line, character) 0-based."""
    path, _, rest = target.rpartition(":")
    path, _, line = path.rpartition(":")
    if not path or not line.isdigit() or not rest.isdigit() or int(line) < 1 or int(rest) < 1:
        raise RequestError(f"expected FILE:LINE:COL with 1-based numbers, got {target!r}")
    return Path(path), int(line) - 1, int(rest) - 1


def read_source(path: Path) -> str:
    """A source file's text (`context.files.read_text_file`): missing, non-regular (a FIFO,
    refused without blocking), over-1-MB, binary and non-UTF-8 files are refused with the
    reason."""
    try:
        return read_text_file(path, MAX_FILE_BYTES)
    except FileRefused as error:
        raise RequestError(str(error)) from error


def complete_one(
    pipeline: CompletionPipeline, request: CompletionRequest, args: argparse.Namespace
) -> dict[str, Any]:
    """Serve one request; the result fields are the CLI's JSON contract."""
    started = time.monotonic()
    text = request.text if request.text is not None else read_source(request.path)
    try:
        offset = offset_of(text, request.line, request.character)
    except PositionError as error:
        raise RequestError(str(error)) from error
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
        "draft_proposed": result.speculation.proposed,
        "draft_accepted": result.speculation.accepted,
        "context_files": done.prompt.files,
    }
    if args.show_prompt:
        output["prompt"] = done.prompt.text
    return output


def answer_line(
    pipeline: CompletionPipeline, number: int, raw: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    """The answer to batch line `number`: a result or {"id", "error"}, never an exception, so
    one request never ends the batch (a bug is answered as an internal error and logged)."""
    data = None
    try:
        data = decode_request(raw)
        return complete_one(pipeline, CompletionRequest.from_json(data), args)
    except RequestError as error:
        logger.warning("request on line %d: %s", number, error)
        return {"id": request_id(data), "error": str(error)}
    except Exception as error:
        logger.exception("request on line %d: internal error", number)
        return {"id": request_id(data), "error": f"internal error: {type(error).__name__}: {error}"}


def _load_pipeline(args: argparse.Namespace) -> CompletionPipeline:
    """The engine and pipeline the flags ask for."""
    options = EngineOptions(
        model=args.model, draft_model=args.draft_model, precision=args.precision
    )
    if args.no_draft:
        options = options.without_speculation()
    engine = LocalEngine.load(options, progress=True)
    return CompletionPipeline(engine, layout=PromptLayout.for_model(args.model))


def run_batch(args: argparse.Namespace) -> int:
    """`complete --batch`: one JSON line out per non-blank line in, whatever the line holds."""
    with ExitStack() as stack:
        try:  # before the model loads: a wrong name fails fast
            batch = stack.enter_context(open(args.batch, "rb"))
        except OSError as error:
            print(f"coder-lsp complete: {args.batch}: {error.strerror or error}", file=sys.stderr)
            return 1
        pipeline = _load_pipeline(args)
        for number, raw in enumerate(batch, 1):
            if raw.strip():
                print(json.dumps(answer_line(pipeline, number, raw, args)), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the `complete` subcommand; the exit code."""
    if args.batch:
        return run_batch(args)
    try:
        path, line, character = parse_target(args.target)
        workspace = Path(args.workspace) if args.workspace else None
        request = CompletionRequest(None, workspace, path, line, character)
        read_source(path)  # fail on a bad file before loading a model
        output = complete_one(_load_pipeline(args), request, args)
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
