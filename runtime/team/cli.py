"""`coder-lsp serve`: the team server's command line, and `serve token add NAME`.

coder-lsp serve --host H --port P [--config FILE] [--model NAME] [--certfile F --keyfile F]
coder-lsp serve token add NAME [--config FILE]     # prints the new token, alone, last line
coder-lsp serve token list|remove NAME [--config FILE]
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import models
from runtime.config import PRECISIONS
from runtime.session import PROVIDER_CHOICES
from runtime.team.config import ConfigError, ServerConfig, default_config_path
from runtime.team.listen import bind_socket, is_loopback

if TYPE_CHECKING:
    from runtime.team.scheduler import Scheduler

logger = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    """Register `serve` (and `serve token ...`) on the CLI's subparsers."""
    serve = commands.add_parser(
        "serve", help="share one model over an OpenAI-compatible HTTP API (team server)"
    )
    serve.set_defaults(run=run)
    config_help = f"users and limits (default: {default_config_path()})"
    serve.add_argument("--config", metavar="FILE", type=Path, help=config_help)
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8080, help="default: %(default)s; 0: any")
    serve.add_argument(
        "--model", metavar="NAME", default=models.DEFAULT_TARGET, help="default: %(default)s"
    )
    serve.add_argument("--precision", choices=PRECISIONS, default=models.DEFAULT_PRECISION)
    serve.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES)
    serve.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: cores)")
    serve.add_argument(
        "--max-batch", type=int, default=4, help="sequences decoded together (default: 4)"
    )
    serve.add_argument(
        "--context-window", type=int, default=4096, help="tokens per sequence (default: 4096)"
    )
    serve.add_argument(
        "--cache-mb", type=int, default=1024, help="KV slot pool size in MB (default: 1024)"
    )
    serve.add_argument("--certfile", metavar="FILE", help="TLS certificate (PEM)")
    serve.add_argument("--keyfile", metavar="FILE", help="TLS private key (PEM)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback address without any token in the configuration",
    )
    actions = serve.add_subparsers(dest="serve_command", metavar="token")
    token = actions.add_parser("token", help="manage users' bearer tokens")
    token_actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    for name, text in (
        ("add", "create (or replace) NAME's token and print it once"),
        ("remove", "delete NAME's token"),
        ("list", "the users holding a token"),
    ):
        action = token_actions.add_parser(name, help=text)
        if name != "list":
            action.add_argument("name", metavar="NAME")
        # SUPPRESS: absent here, `serve --config FILE token ...` keeps the outer value.
        action.add_argument(
            "--config", metavar="FILE", type=Path, default=argparse.SUPPRESS, help=config_help
        )


def run(args: argparse.Namespace) -> int:
    """Run `serve` or one of its `token` actions; returns the exit code."""
    path = args.config or default_config_path()
    try:
        config = ServerConfig.load(path)
        if args.serve_command == "token":
            return _token(args, config)
        return _serve(args, config)
    except ConfigError as error:
        print(f"coder-lsp serve: error: {error}", file=sys.stderr)
        return 2


def _token(args: argparse.Namespace, config: ServerConfig) -> int:
    """`serve token list|remove|add`; returns the exit code."""
    if args.token_command == "list":
        for name in sorted(config.users):
            print(name)
        return 0
    if args.token_command == "remove":
        if config.users.pop(args.name, None) is None:
            print(f"coder-lsp serve: no user {args.name!r}", file=sys.stderr)
            return 1
        config.save()
        return 0
    token = config.add_token(args.name)
    config.save()
    print(f"token for {args.name} (stored hashed in {config.path}; it is shown only once):")
    print(token)
    return 0


def _serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Load the model and serve it until interrupted; returns the exit code."""
    import uvicorn

    from runtime.team.app import create_app

    refusal = _refusal(args, config)
    if refusal is not None:
        print(f"coder-lsp serve: {refusal}", file=sys.stderr)
        return 2
    scheduler = _scheduler(args, config)
    app = create_app(scheduler, scheduler.tokenizer, args.model, config)
    sock = bind_socket(args.host, args.port)
    _announce(args, config, sock)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            ssl_certfile=args.certfile,
            ssl_keyfile=args.keyfile,
            log_config=None,  # our logging (stderr or --log-file); no access log with paths
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        scheduler.close()
    return 0


def _refusal(args: argparse.Namespace, config: ServerConfig) -> str | None:
    """Why the server must not start with these flags, or None when it may."""
    if not config.auth_required and not is_loopback(args.host) and not args.insecure_no_auth:
        return (
            f"refusing to listen on {args.host} without tokens: anyone who can "
            f"reach it could use the model. Add one with `coder-lsp serve token add NAME "
            f"--config {config.path}`, or pass --insecure-no-auth."
        )
    if bool(args.certfile) != bool(args.keyfile):
        return "--certfile and --keyfile go together"
    return None


def _scheduler(args: argparse.Namespace, config: ServerConfig) -> Scheduler:
    """The model named by the flags, loaded and running in a scheduler bounded by the limits."""
    from runtime.engine import EngineOptions, LocalEngine
    from runtime.team.scheduler import Scheduler, SchedulerOptions

    engine = LocalEngine.load(
        EngineOptions(
            model=args.model,
            precision=args.precision,
            provider=args.provider,
            threads=args.threads,
            context_window=args.context_window,
        ).without_speculation(),  # the scheduler decodes in batches, with no draft model
        progress=False,
    )
    return Scheduler(
        engine.runner,
        engine.tokenizer,
        SchedulerOptions(
            max_batch=args.max_batch,
            context_window=args.context_window,
            cache_bytes=args.cache_mb << 20,
            max_queue=config.limits.max_queue,
            max_per_user=config.limits.max_concurrent,
        ),
    )


def _announce(args: argparse.Namespace, config: ServerConfig, sock: socket.socket) -> None:
    """The one stderr line saying where the server listens (tests and scripts wait for it)."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.certfile else "http"
    users = len(config.users)
    print(
        f"coder-lsp serve: {args.model} on {scheme}://{host}:{port} "
        f"({users} user token(s){'' if users else ', no auth'})",
        file=sys.stderr,
        flush=True,
    )
