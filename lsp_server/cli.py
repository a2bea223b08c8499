"""The `coder-lsp` command line: the language server, `complete` and `models`.

Logging goes to stderr or `--log-file`, never to stdout: in LSP mode stdout carries JSON-RPC.
The `models` and `complete` subcommands print their results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lsp_server.serve_cli import add_serve_parser, run_serve
from runtime.models import (
    DAMAGED,
    DEFAULT_DRAFT,
    DEFAULT_PRECISION,
    DEFAULT_TARGET,
    NOT_INSTALLED,
    PRECISIONS,
    PREPARED,
    ModelError,
    ModelStatus,
    cache_root,
    list_models,
    prepare,
    verify,
)

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _positive_int(value: str) -> int:
    """argparse type of a count that must be at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; `complete`'s flags are a contract with lsp_server.complete_cli."""
    parser = argparse.ArgumentParser(
        prog="coder-lsp",
        description="Code completion with local Qwen2.5-Coder models: a language server "
        "(default, on stdio), a one-shot `complete`, and `models` to manage the model cache.",
    )
    parser.add_argument("--log-file", metavar="PATH", help="log here instead of stderr")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, type=str.upper)
    parser.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        type=_host_port,
        help="serve the language server over TCP instead of stdio",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("stdio", help="run the language server on stdin/stdout (the default)")
    commands.add_parser("stats", help="acceptance of suggestions, per language and context source")

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
        type=_positive_int,
        metavar="N",
        help="most tokens to generate (default: engine's)",
    )
    complete.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="of the converted models (default here: %(default)s)",
    )

    fix = commands.add_parser(
        "repair", help="fix the diagnostic on FILE:LINE (1-based) with a verified edit"
    )
    fix.add_argument("target", metavar="FILE:LINE")
    fix.add_argument(
        "--json", action="store_true", help='one object: {"verified", "edits", "reason", ...}'
    )
    fix.add_argument("--message", help="repair this problem (another tool's diagnostic)")
    fix.add_argument(
        "--attempts", type=_positive_int, default=2, metavar="N", help="default: %(default)s"
    )
    fix.add_argument("--no-lookup", action="store_true", help="no prompt-lookup speculation")
    explain = commands.add_parser(
        "explain", help="explain FILE:LINE[-LINE] (1-based) in Markdown on stdout"
    )
    explain.add_argument("target", metavar="FILE:LINE[-LINE]")
    explain.add_argument("--max-tokens", type=_positive_int, default=384, metavar="N")
    for action in (fix, explain):
        action.add_argument("--workspace", metavar="DIR", help="root for repository context")
        action.add_argument("--no-context", action="store_true", help="the current file only")
        action.add_argument("--model", metavar="NAME", default=DEFAULT_TARGET)

    models = commands.add_parser("models", help="list, prepare or verify models")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_commands.add_parser("list", help="embedded models and the cache's contents")
    prep = models_commands.add_parser(
        "prepare", help="assemble and convert a model (default: the target and draft models)"
    )
    prep.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="embedded name, .gguf file, Hugging Face directory or hub id org/name",
    )
    prep.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION, help="default: %(default)s"
    )
    prep.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    check = models_commands.add_parser(
        "verify", help="re-hash sources and check the cached ONNX directories"
    )
    check.add_argument("name", nargs="?", metavar="NAME", help="default: everything")
    add_serve_parser(commands)
    return parser


def configure_logging(level: str, log_file: str | None) -> None:
    """Send log records to `log_file` or stderr; nothing ever goes to stdout."""
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # pygls logs every message it sends at INFO: only useful when debugging the protocol.
    logging.getLogger("pygls").setLevel(max(logging.getLevelName(level), logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `coder-lsp` and `python -m lsp_server`; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_file)
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "stats":
            from lsp_server.feedback import FeedbackStats, format_table

            print(format_table(FeedbackStats().counts))
            return 0
        if args.command == "complete":
            from lsp_server.complete_cli import run_complete

            return run_complete(args) or 0
        if args.command == "serve":
            return run_serve(args)
        if args.command in ("repair", "explain"):
            from lsp_server.actions_cli import run_explain, run_repair

            return (run_repair if args.command == "repair" else run_explain)(args)
    except ModelError as exc:
        logger.debug("model error", exc_info=True)
        print(f"coder-lsp: error: {exc}", file=sys.stderr)
        return 1
    return _serve(args.tcp)


def _serve(tcp: tuple[str, int] | None) -> int:
    """Run the language server on stdio, or on TCP at (host, port)."""
    from lsp_server.features import register_all
    from lsp_server.server import CoderLanguageServer, CoderProtocol

    server = CoderLanguageServer()
    register_all(server)
    if tcp is None:
        server.start_io()
    else:
        server.start_tcp(*tcp)
    return server.protocol.exit_code if isinstance(server.protocol, CoderProtocol) else 1


def _models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        _print_table(list_models())
        return 0
    if args.models_command == "prepare":
        names = [args.name] if args.name else [DEFAULT_TARGET, DEFAULT_DRAFT]
        for name in names:
            prepared = prepare(name, args.precision, progress=not args.no_progress, strict=True)
            print(f"{prepared.name}\t{prepared.precision}\t{prepared.directory}")
        return 0
    results = verify(args.name)
    for result in results:
        status = "ok  " if result.ok else "FAIL"
        print(f"{status} {result.name}  {result.item}: {result.message}")
    if not results:
        print("nothing to verify")
    return 0 if all(r.ok for r in results) else 1


def _print_table(statuses: Sequence[ModelStatus]) -> None:
    """One row per model, or per cache directory of it (prepared or damaged), then notes on
    what to fix."""
    rows = [("NAME", "SOURCE", "STATE", "PRECISION", "SIZE", "PATH")]
    notes = []
    for status in statuses:
        entries = [(e, PREPARED) for e in status.prepared] + [(e, DAMAGED) for e in status.damaged]
        if not entries:
            rows.append((status.name, status.kind, status.state, "-", "-", "-"))
        for entry, state in entries:
            size = _human(entry.size_bytes)
            rows.append(
                (status.name, status.kind, state, entry.precision, size, str(entry.directory))
            )
        if status.state == NOT_INSTALLED:
            notes.append(status.detail)
        notes += [f"{entry.directory}: {entry.problem}" for entry in status.damaged]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)] + [row[-1]]
        print("  ".join(cells).rstrip())
    print()
    print(
        f"defaults: target {DEFAULT_TARGET}, draft {DEFAULT_DRAFT}, precision {DEFAULT_PRECISION}"
    )
    print(f"cache: {cache_root()}")
    for note in notes:
        print(note)


def _human(size: int) -> str:
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MB"
    return f"{size / 1024**3:.2f} GB"
