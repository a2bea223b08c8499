"""`coder-lsp [stdio]` and `coder-lsp --tcp HOST:PORT`: the language server; `coder-lsp stats`:
acceptance of its suggestions."""

from __future__ import annotations

import argparse
from typing import Any

from lsp_server.protocol.features import register_all
from lsp_server.protocol.feedback import FeedbackStats, format_table
from lsp_server.protocol.server import CoderLanguageServer, CoderProtocol


def add_parser(commands: Any) -> None:
    """Register `stdio` and `stats` on the CLI's subparsers."""
    stdio = commands.add_parser(
        "stdio", help="run the language server on stdin/stdout (the default)"
    )
    stdio.set_defaults(run=run)
    stats = commands.add_parser(
        "stats", help="acceptance of suggestions, per language and context source"
    )
    stats.set_defaults(run=run_stats)


def run(args: argparse.Namespace) -> int:
    """Run the language server on stdio, or on TCP at `args.tcp` (host, port)."""
    server = CoderLanguageServer()
    register_all(server)
    if args.tcp is None:
        server.start_io()
    else:
        server.start_tcp(*args.tcp)
    return server.protocol.exit_code if isinstance(server.protocol, CoderProtocol) else 1


def run_stats(args: argparse.Namespace) -> int:
    """Print the acceptance table."""
    print(format_table(FeedbackStats().counts))
    return 0
