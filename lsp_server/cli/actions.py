"""`coder-lsp repair FILE:LINE` and `coder-lsp explain FILE:LINE[-LINE]`: the code actions from
the command line, for scripting. Lines are 1-based here, 0-based in the JSON edits (LSP)."""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

from lsprotocol import converters, types

from lsp_server.cli.args import positive_int
from lsp_server.cli.complete import RequestError, read_source
from lsp_server.code_actions.assist import ActionContext, ActionError
from lsp_server.code_actions.explain import ExplainOptions, explain
from lsp_server.code_actions.repair import RepairOptions, RepairResult, diagnostics_at, repair
from lsp_server.positions import utf16_len
from runtime.engine import EngineOptions, LocalEngine
from runtime.models import DEFAULT_TARGET

# Exit codes: 0 a verified fix (or an explanation), 1 an error, 2 no verified fix.
NO_FIX = 2
_TARGET = re.compile(r"^(?P<path>.+):(?P<start>[1-9]\d*)(?:-(?P<end>[1-9]\d*))?$")


def add_parser(commands: Any) -> None:
    """Register `repair` and `explain` on the CLI's subparsers."""
    fix = commands.add_parser(
        "repair", help="fix the diagnostic on FILE:LINE (1-based) with a verified edit"
    )
    fix.add_argument("target", metavar="FILE:LINE")
    fix.add_argument(
        "--json", action="store_true", help='one object: {"verified", "edits", "reason", ...}'
    )
    fix.add_argument("--message", help="repair this problem (another tool's diagnostic)")
    fix.add_argument(
        "--attempts", type=positive_int, default=2, metavar="N", help="default: %(default)s"
    )
    fix.add_argument("--no-lookup", action="store_true", help="no prompt-lookup speculation")
    explain = commands.add_parser(
        "explain", help="explain FILE:LINE[-LINE] (1-based) in Markdown on stdout"
    )
    explain.add_argument("target", metavar="FILE:LINE[-LINE]")
    explain.add_argument("--max-tokens", type=positive_int, default=384, metavar="N")
    fix.set_defaults(run=run_repair)
    explain.set_defaults(run=run_explain)
    for action in (fix, explain):
        action.add_argument("--workspace", metavar="DIR", help="root for repository context")
        action.add_argument("--no-context", action="store_true", help="the current file only")
        action.add_argument("--model", metavar="NAME", default=DEFAULT_TARGET)


def parse_lines(target: str, allow_range: bool) -> tuple[Path, int, int]:
    """FILE:LINE or FILE:LINE-LINE (1-based) -> (path, first, last) 0-based."""
    match = _TARGET.match(target)
    if match is None or (match["end"] and not allow_range):
        shape = "FILE:LINE[-LINE]" if allow_range else "FILE:LINE"
        raise RequestError(f"expected {shape} with 1-based numbers, got {target!r}")
    start = int(match["start"]) - 1
    end = int(match["end"]) - 1 if match["end"] else start
    if end < start:
        raise RequestError(f"the range {start + 1}-{end + 1} ends before it starts")
    return Path(match["path"]), start, end


def read_target(target: str, allow_range: bool) -> tuple[Path, str, int, int] | str:
    """(path, text, first line, last line) of a FILE:LINE[-LINE] target, or what is wrong."""
    try:
        path, start, end = parse_lines(target, allow_range)
        text = read_source(path)
        if end > text.count("\n"):
            raise RequestError(f"line {end + 1} is outside the file")
    except RequestError as error:
        return str(error)
    return path, text, start, end


def _action_context(model: str) -> ActionContext:
    return ActionContext(LocalEngine.load(EngineOptions(model=model), progress=True))


def repair_json(result: RepairResult) -> dict[str, Any]:
    """The `--json` object: the CLI's contract."""
    converter = converters.get_converter()
    return {
        "verified": result.verified,
        "edits": [converter.unstructure(edit) for edit in result.edits],
        "reason": result.reason,
        "latency_ms": result.latency_ms,
        "diagnostic": result.diagnostic.message if result.diagnostic is not None else None,
        "attempts": result.attempts,
    }


def run_repair(args: argparse.Namespace) -> int:
    """Run `coder-lsp repair`; the exit code."""
    target = read_target(args.target, allow_range=False)
    if isinstance(target, str):
        print(f"coder-lsp repair: {target}", file=sys.stderr)
        return 1
    path, text, line, _ = target
    if args.message:
        end = types.Position(line, utf16_len(text.split("\n")[line]))
        found = [types.Diagnostic(types.Range(types.Position(line, 0), end), args.message)]
    else:
        found = diagnostics_at(str(path), text, line)
    if not found:
        result = RepairResult(False, [], f"no diagnostic on line {line + 1}")
    else:
        options = RepairOptions(attempts=args.attempts, lookup=not args.no_lookup)
        workspace = Path(args.workspace) if args.workspace else None
        result = repair(
            _action_context(args.model),
            path,
            text,
            found[0],
            workspace=workspace,
            use_context=not args.no_context,
            options=options,
        )
    if args.json:
        print(json.dumps(repair_json(result)))
    elif result.verified and result.patched is not None:
        old, new = (str(path), str(path)) if path.is_absolute() else (f"a/{path}", f"b/{path}")
        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(keepends=True), result.patched.splitlines(keepends=True), old, new
            )
        )
    if not result.verified:
        print(f"coder-lsp repair: no fix: {result.reason}", file=sys.stderr)
        return NO_FIX
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Run `coder-lsp explain`; the exit code."""
    target = read_target(args.target, allow_range=True)
    if isinstance(target, str):
        print(f"coder-lsp explain: {target}", file=sys.stderr)
        return 1
    path, text, start, end = target
    workspace = Path(args.workspace) if args.workspace else None
    try:
        explanation = explain(
            _action_context(args.model),
            path,
            text,
            start,
            end,
            workspace=workspace,
            use_context=not args.no_context,
            options=ExplainOptions(max_tokens=args.max_tokens),
        )
    except ActionError as error:
        print(f"coder-lsp explain: {error}", file=sys.stderr)
        return 1
    print(explanation.markdown, end="")
    return 0
