"""The `coder-lsp` command line: the language server (the default), `complete`, `repair`,
`explain`, `models`, `serve` and `stats`; each subcommand's module has its `add_parser()` and the
`run()` it sets as the parser's default.

Logging goes to stderr or `--log-file`, never to stdout: in LSP mode stdout carries JSON-RPC.
The subcommands print their results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lsp_server.cli import actions, complete, lsp, models
from lsp_server.cli.args import host_port
from runtime.models import ModelError
from runtime.team import cli as serve

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
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
        type=host_port,
        help="serve the language server over TCP instead of stdio",
    )
    parser.set_defaults(run=lsp.run)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (lsp, complete, actions, models, serve):
        command.add_parser(commands)
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
        return int(args.run(args) or 0)
    except ModelError as exc:
        logger.debug("model error", exc_info=True)
        print(f"coder-lsp: error: {exc}", file=sys.stderr)
        return 1
