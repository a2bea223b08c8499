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

from context.prompt import PromptLayout
from lsp_server.assist import ActionError
from lsp_server.complete_cli import RequestError, read_source
from lsp_server.explain import ExplainOptions, explain
from lsp_server.pipeline import CompletionPipeline
from lsp_server.repair import RepairOptions, RepairResult, diagnostics_at, repair
from runtime.engine import EngineOptions, LocalEngine

# Exit codes: 0 a verified fix (or an explanation), 1 an error, 2 no verified fix.
NO_FIX = 2
_TARGET = re.compile(r"^(?P<path>.+):(?P<start>[1-9]\d*)(?:-(?P<end>[1-9]\d*))?$")


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


def _pipeline(model: str) -> CompletionPipeline:
    engine = LocalEngine.load(EngineOptions(model=model), progress=True)
    return CompletionPipeline(engine, layout=PromptLayout.for_model(model))


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
        end = types.Position(line, len(text.split("\n")[line].encode("utf-16-le")) // 2)
        found = [types.Diagnostic(types.Range(types.Position(line, 0), end), args.message)]
    else:
        found = diagnostics_at(str(path), text, line)
    if not found:
        result = RepairResult(False, [], f"no diagnostic on line {line + 1}")
    else:
        options = RepairOptions(attempts=args.attempts, lookup=not args.no_lookup)
        workspace = Path(args.workspace) if args.workspace else None
        result = repair(
            _pipeline(args.model),
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
            _pipeline(args.model),
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
