"""Repair a diagnostic with the model, and offer the fix only once it is verified.

1. Diagnostics: the client's, and for Python local checks (syntax errors from `compile`,
   undefined and unused names from pyflakes); other languages get tree-sitter syntax errors.
2. The region: the enclosing function or class (`assist.region_for`), dedented.
3. The prompt (ChatML): the diagnostic, the region, the repository context the completion path
   builds; the answer starts inside a code fence, so the model writes the corrected region
   and stops at the closing fence. Prompt lookup speculation pays here: the fix copies most of
   the region, so drafted tokens are mostly accepted.
4. Verification of the patched file: tree-sitter finds no new syntax errors, and for Python the
   targeted diagnostic is gone when re-checked and nothing new appears. A rejected answer
   gets another attempt (sampled, temperature > 0) up to `attempts`; then no edit, a reason.
5. The edit: minimal TextEdits (difflib over lines, then common characters trimmed).
"""

from __future__ import annotations

import ast
import difflib
import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter
from lsprotocol import types
from pyflakes import checker, messages

from context import parsing
from context.parsing import language_for_path
from context.redaction import REDACTED, redact_secrets
from lsp_server.code_actions.assist import (
    ActionContext,
    ActionError,
    Region,
    admit,
    context_block,
    dedent,
    fence,
    indent,
    language_name,
    margin_of,
    region_for,
    with_reference,
)
from lsp_server.positions import offset_of, position_of, utf16_len
from runtime.chatml import Segments, alternating, chat_segments
from runtime.generate import CancellationToken, GenerationConfig, SpeculationStats
from runtime.tokenizer import tokenizable

logger = logging.getLogger(__name__)

# Sources of the diagnostics found here: these can be re-checked after a fix.
PYFLAKES = "pyflakes"
PYTHON = "python"
TREE_SITTER = "tree-sitter"
LOCAL_SOURCES = frozenset({PYFLAKES, PYTHON, TREE_SITTER})
SYNTAX_ERROR = "syntax-error"
# A fix keeps most of the code: an answer less similar to the region than this (difflib ratio
# over characters) rewrote it or wrote something else (small models echo the context).
MIN_SIMILARITY = 0.75
# Lines before and after our own diagnostic's line whose changes make its fix (a bracket is
# often closed a few lines below where Python reports it open); other changes are undone.
NEAR_LINES = (2, 3)
# pyflakes findings that are errors (the code fails when run); the rest are warnings.
_ERRORS = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)

SYSTEM = (
    "You are an expert programmer. You fix the reported problem with the smallest possible "
    "change and keep everything else exactly as it is."
)


@dataclass(frozen=True)
class RepairOptions:
    """How hard to try, and how much to show the model."""

    attempts: int = 2  # the first greedy, the others sampled at retry_temperature
    retry_temperature: float = 0.7
    retry_top_p: float = 0.95
    lookup: bool = True  # prompt-lookup speculation (same output, faster)
    max_region_lines: int = 120
    repo_tokens: int = 1024  # repository context, as the completion path budgets it
    file_tokens: int = 512  # outline of the rest of the current file
    timeout_s: float | None = 120.0  # per attempt


@dataclass
class RepairResult:
    """A verified fix (edits) or why there is none (`reason`)."""

    verified: bool
    edits: list[types.TextEdit]
    reason: str
    latency_ms: float = 0.0
    diagnostic: types.Diagnostic | None = None
    region: Region | None = None
    patched: str | None = None  # the whole file after the edits
    attempts: int = 0
    generated_tokens: int = 0
    speculation: SpeculationStats = field(default_factory=SpeculationStats)  # attempts summed


# --- diagnostics -------------------------------------------------------------------------------


def _byte_column(line: str, byte_offset: int) -> int:
    """UTF-16 column of a UTF-8 byte offset (what `ast` col_offset counts)."""
    prefix = line.encode("utf-8", "surrogatepass")[:byte_offset].decode("utf-8", "ignore")
    return utf16_len(prefix)


def _diagnostic(
    lines: list[str],
    line: int,
    start: int,
    end: int | None,
    message: str,
    source: str,
    code: str,
    severity: types.DiagnosticSeverity = types.DiagnosticSeverity.Error,
) -> types.Diagnostic:
    """A one-line diagnostic; `start`/`end` are UTF-16 columns (end None: end of line)."""
    line = min(max(line, 0), len(lines) - 1)
    width = utf16_len(lines[line])
    start = min(max(start, 0), width)
    stop = width if end is None else min(max(end, start), width)
    return types.Diagnostic(
        range=types.Range(types.Position(line, start), types.Position(line, stop)),
        message=message,
        severity=severity,
        source=source,
        code=code,
    )


def python_diagnostics(path: str, text: str) -> list[types.Diagnostic]:
    """The syntax error `compile` reports, else pyflakes' findings (undefined and unused names,
    ...), sorted by position. Nothing here runs the code."""
    lines = text.split("\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = compile(tokenizable(text), path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as error:
        line = (error.lineno or 1) - 1
        column = max((error.offset or 1) - 1, 0)
        same_line = error.end_lineno == error.lineno and error.end_offset
        end = (error.end_offset or 1) - 1 if same_line else None
        text_line = lines[min(line, len(lines) - 1)] if lines else ""
        start16 = utf16_len(text_line[:column])
        end16 = None if end is None else utf16_len(text_line[: max(end, column + 1)])
        message = f"SyntaxError: {error.msg}"
        return [_diagnostic(lines, line, start16, end16, message, PYTHON, SYNTAX_ERROR)]
    except (ValueError, RecursionError, MemoryError) as error:  # NUL bytes, absurd nesting
        return [_diagnostic(lines, 0, 0, None, f"cannot compile: {error}", PYTHON, SYNTAX_ERROR)]
    found = []
    for message in checker.Checker(tree, filename=path).messages:
        line = message.lineno - 1
        text_line = lines[line] if 0 <= line < len(lines) else ""
        start = _byte_column(text_line, message.col)
        end = None
        if isinstance(message, messages.UndefinedName):
            end = start + utf16_len(str(message.message_args[0]))
        severity = (
            types.DiagnosticSeverity.Error
            if isinstance(message, _ERRORS)
            else types.DiagnosticSeverity.Warning
        )
        text_message = message.message % message.message_args
        found.append(
            _diagnostic(
                lines, line, start, end, text_message, PYFLAKES, type(message).__name__, severity
            )
        )
    return sorted(found, key=lambda d: (d.range.start.line, d.range.start.character))


def _error_nodes(tree: tree_sitter.Tree) -> list[tree_sitter.Node]:
    """ERROR and MISSING nodes, outermost only."""
    found: list[tree_sitter.Node] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            found.append(node)
        elif node.has_error:
            stack.extend(reversed(node.children))
    return found


def syntax_errors(path: str, text: str) -> list[types.Diagnostic]:
    """Syntax errors tree-sitter finds (any language with a grammar; [] without one)."""
    tree = parsing.parse(path, tokenizable(text))
    if tree is None:
        return []
    lines = text.split("\n")
    found = []
    for node in _error_nodes(tree):
        row, byte_column = node.start_point
        column = _byte_column(lines[row], byte_column) if row < len(lines) else 0
        message = f"missing `{node.type}`" if node.is_missing else "syntax error"
        end = column + 1 if node.end_point.row != row else None
        if end is None:
            end = _byte_column(lines[row], node.end_point.column) if row < len(lines) else 0
        found.append(_diagnostic(lines, row, column, end, message, TREE_SITTER, SYNTAX_ERROR))
    return found


def local_diagnostics(path: str, text: str) -> list[types.Diagnostic]:
    """What coder-lsp checks itself: Python via compile + pyflakes, others via tree-sitter."""
    if language_for_path(path) == parsing.PYTHON:
        return python_diagnostics(path, text)
    return syntax_errors(path, text)


def _key(diagnostic: types.Diagnostic) -> tuple[str, str]:
    return (str(diagnostic.code), diagnostic.message)


def _in_lines(diagnostic: types.Diagnostic, start: int, end: int) -> bool:
    return start <= diagnostic.range.start.line < end


# --- answer -> edit ----------------------------------------------------------------------------


def parse_answer(
    answer: str, margin: str, newline: str, final_newline: bool, first_line: str = ""
) -> str | None:
    """The region's replacement from the model's answer (written after an opening fence, up
    to the closing one): a repeated fence line dropped, anything before the region's
    `first_line` dropped (small models echo context first), trailing blank lines trimmed,
    `margin` restored, the file's newline style. None when the answer holds no code."""
    lines = answer.replace("\r\n", "\n").split("\n")
    if lines and lines[0].lstrip().startswith("```"):
        lines = lines[1:]
    stripped = [line.strip() for line in lines]
    if first_line.strip() and first_line.strip() in stripped:
        lines = lines[stripped.index(first_line.strip()) :]
    if "```" in lines:
        lines = lines[: lines.index("```")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return None
    code = indent("\n".join(line.rstrip() for line in lines), margin)
    code = code.replace("\n", newline)
    return code + newline if final_newline else code


def restore_redacted(original: str, redacted: str, new: str) -> str | None:
    """`new` (written from the redacted region) with every untouched redacted line put back as
    it was; None when the answer changes a line that held a secret (we cannot tell how)."""
    if original == redacted:
        return new
    old_lines = original.splitlines(keepends=True)
    seen_lines = redacted.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, seen_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.extend(old_lines[i1:i2])
        elif old_lines[i1:i2] != seen_lines[i1:i2] or any(
            REDACTED in line for line in new_lines[j1:j2]
        ):
            return None
        else:
            out.extend(new_lines[j1:j2])
    return "".join(out)


def minimal_edits(text: str, start: int, old: str, new: str) -> list[types.TextEdit]:
    """TextEdits turning `old` (found at offset `start` of `text`) into `new`: one per changed
    run of lines, each trimmed to the characters that differ."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    old_offsets = [0]
    for line in old_lines:
        old_offsets.append(old_offsets[-1] + len(line))
    edits = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        before, after = "".join(old_lines[i1:i2]), "".join(new_lines[j1:j2])
        limit = min(len(before), len(after))
        head = 0
        while head < limit and before[head] == after[head]:
            head += 1
        tail = 0
        while tail < limit - head and before[-1 - tail] == after[-1 - tail]:
            tail += 1
        begin = start + old_offsets[i1] + head
        end = start + old_offsets[i2] - tail
        edits.append(
            types.TextEdit(
                range=types.Range(position_of(text, begin), position_of(text, end)),
                new_text=after[head : len(after) - tail],
            )
        )
    return edits


def apply_edits(text: str, edits: list[types.TextEdit]) -> str:
    """`text` with non-overlapping `edits` applied (as an editor applies a WorkspaceEdit)."""
    spans = []
    for edit in edits:
        start = offset_of(text, edit.range.start.line, edit.range.start.character)
        end = offset_of(text, edit.range.end.line, edit.range.end.character)
        spans.append((start, end, edit.new_text))
    for start, end, new_text in sorted(spans, reverse=True):
        text = text[:start] + new_text + text[end:]
    return text


# --- verification ------------------------------------------------------------------------------


def verify_fix(
    path: str, original: str, patched: str, target: types.Diagnostic, lines: tuple[int, int]
) -> str | None:
    """None when `patched` is an acceptable fix of `target`, else why not. `lines` is the
    patched region's [start, end) lines.

    Every language: tree-sitter finds no more syntax errors than before, and none inside the
    region when the target is a syntax error. Python: after a syntax-error target the region
    compiles; after a pyflakes target the same finding is gone from the region; and no finding
    appears that the original did not have.
    """
    tree_before = syntax_errors(path, original)
    tree_after = syntax_errors(path, patched)
    if len(tree_after) > len(tree_before):
        return f"the fix adds a syntax error (line {tree_after[0].range.start.line + 1})"
    is_syntax = str(target.code) == SYNTAX_ERROR
    if is_syntax and any(_in_lines(d, *lines) for d in tree_after):
        return "the code still does not parse"
    if language_for_path(path) != parsing.PYTHON:
        return None
    before = python_diagnostics(path, original)
    after = python_diagnostics(path, patched)
    after_syntax = [d for d in after if str(d.code) == SYNTAX_ERROR]
    if after_syntax:
        if not is_syntax or _in_lines(after_syntax[0], *lines):
            return f"{after_syntax[0].message} (line {after_syntax[0].range.start.line + 1})"
        return None  # fixed; the next syntax error is elsewhere, outside this fix
    if target.source == PYFLAKES and any(
        _key(d) == _key(target) and _in_lines(d, *lines) for d in after
    ):
        return f"still reports: {target.message}"
    if any(str(d.code) == SYNTAX_ERROR for d in before):
        return None  # nothing to compare with: the original did not compile
    added = Counter(_key(d) for d in after) - Counter(_key(d) for d in before)
    if added:
        _, message = next(iter(added))
        return f"the fix adds: {message}"
    return None


# --- the repair --------------------------------------------------------------------------------


def diagnostics_at(path: str, text: str, line: int) -> list[types.Diagnostic]:
    """Local diagnostics on 0-based `line`, errors first."""
    found = [d for d in local_diagnostics(path, text) if d.range.start.line == line]
    return sorted(found, key=lambda d: d.severity or types.DiagnosticSeverity.Error)


def repair_prompt(
    name: str, region_code: str, target: types.Diagnostic, line: int, context: str
) -> Segments:
    """The ChatML prompt to repair `target` at 1-based `line` of the region code from file
    `name`; the answer starts inside the code fence. (Quoting the offending line made the 0.5B
    model copy it unchanged, so only its number is given.)"""
    tag = fence(language_for_path(name))
    request = (
        f"```{tag}\n{region_code.rstrip()}\n```\n\n"
        f"This {language_name(name)} from `{name}` has a problem:\n"
        f"line {line}: {target.message}\n\n"
        f"Rewrite the code with the problem fixed. Reply with the whole corrected code in one "
        f"```{tag} block and nothing else."
    )
    return chat_segments(alternating(SYSTEM, with_reference(context, request)), f"```{tag}\n")


def repair(
    context: ActionContext,
    path: Path,
    text: str,
    target: types.Diagnostic,
    *,
    workspace: Path | None = None,
    use_context: bool = True,
    options: RepairOptions | None = None,
    cancel: CancellationToken | None = None,
) -> RepairResult:
    """Ask `context`'s model to fix `target` in `text` (the buffer of `path`); the verified
    edits, or none and the reason. Blocking: run it off the event loop."""
    options = options or RepairOptions()
    started = time.monotonic()
    result = RepairResult(False, [], "", diagnostic=target)

    def done(reason: str) -> RepairResult:
        result.reason = reason
        result.latency_ms = round((time.monotonic() - started) * 1000, 1)
        logger.info("repair %s: %s (%.0f ms)", path.name, reason, result.latency_ms)
        return result

    text = tokenizable(text)
    line = target.range.start.line
    try:
        region = region_for(str(path), text, line, line, max_lines=options.max_region_lines)
        source = admit(context.workspaces, path, text, workspace, use_context)
    except ActionError as error:
        return done(str(error))
    result.region = region
    start, end = region.offsets(text)
    original = text[start:end]
    newline = "\r\n" if "\r\n" in original else "\n"
    margin = margin_of(original.replace("\r\n", "\n"))
    redacted = redact_secrets(original)
    shown = dedent(redacted.replace("\r\n", "\n"), margin)
    engine = context.engine
    count = engine.count_tokens
    region_tokens = count(shown)
    max_new = region_tokens + 32 + region_tokens // 4
    window = context.budget.window_tokens - 1
    ids: list[int] = []
    for repo_tokens, file_tokens in ((options.repo_tokens, options.file_tokens), (0, 0)):
        reference = (
            context_block(
                source, text, region, count, repo_tokens=repo_tokens, file_tokens=file_tokens
            )
            if repo_tokens or file_tokens
            else ""
        )
        relative_line = line - region.start_line + 1
        prompt = repair_prompt(source.name, shown, target, relative_line, reference)
        ids = engine.encode_prompt(prompt)
        if len(ids) + max_new <= window:
            break
    else:
        return done(f"the enclosing code is too long to repair ({region_tokens} tokens)")

    failures: list[str] = []
    for attempt in range(max(options.attempts, 1)):
        sampled = attempt > 0
        config = GenerationConfig(
            max_new_tokens=max_new,
            temperature=options.retry_temperature if sampled else 0.0,
            top_p=options.retry_top_p if sampled else 1.0,
            stop_strings=("```",),
            timeout_s=options.timeout_s,
            seed=attempt if sampled else None,
            lookup=options.lookup,
        )
        generated = engine.complete(ids, config, cancel)
        result.attempts += 1
        result.generated_tokens += generated.generated_tokens
        result.speculation += generated.speculation
        if generated.finish_reason in ("cancelled", "deadline"):
            return done(generated.finish_reason)
        problem = _check_answer(
            str(path), text, region, original, redacted, generated.text, target, margin, newline
        )
        if isinstance(problem, str):
            failures.append(f"attempt {attempt + 1}: {problem}")
            logger.info("repair attempt %d rejected: %s", attempt + 1, problem)
            continue
        patched, new_region = problem
        result.verified, result.patched = True, patched
        result.edits = minimal_edits(text, start, original, new_region)
        return done(_verified_reason(str(path), target))
    return done("no verified fix: " + "; ".join(failures))


def _verified_reason(path: str, target: types.Diagnostic) -> str:
    if target.source in LOCAL_SOURCES and language_for_path(path) == parsing.PYTHON:
        return "verified: the file parses and the diagnostic is gone"
    return "verified: the file parses with no new syntax errors"


def near_changes_only(original: str, new: str, line: int) -> str:
    """`new` with only the changes within NEAR_LINES of `line` (0-based in `original`) kept;
    the others are undone. Our own diagnostics point at the problem, so its fix is local;
    small models also "improve" lines nobody asked about, and those never reach the edit."""
    before, after = NEAR_LINES
    old_lines, new_lines = original.splitlines(keepends=True), new.splitlines(keepends=True)
    kept: list[str] = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        near = i1 >= line - before and max(i2 - 1, i1) <= line + after
        kept.extend(new_lines[j1:j2] if tag != "equal" and near else old_lines[i1:i2])
    return "".join(kept)


def _check_answer(
    path: str,
    text: str,
    region: Region,
    original: str,
    redacted: str,
    answer: str,
    target: types.Diagnostic,
    margin: str,
    newline: str,
) -> str | tuple[str, str]:
    """(patched file, new region) for an acceptable answer, else why it was rejected."""
    first = next((line for line in original.splitlines() if line.strip()), "")
    new_region = parse_answer(answer, margin, newline, original.endswith("\n"), first)
    if new_region is None:
        return "the answer holds no code"
    restored = restore_redacted(original, redacted, new_region)
    if restored is None:
        return "the fix changes a line holding a secret"
    if target.source in LOCAL_SOURCES:
        restored = near_changes_only(
            original, restored, target.range.start.line - region.start_line
        )
    if restored == original:
        return "the model returned the code unchanged (near the problem)"
    matcher = difflib.SequenceMatcher(None, original, restored, autojunk=False)
    if matcher.ratio() < MIN_SIMILARITY:
        return f"the answer is not a fix of this code ({matcher.ratio():.0%} similar)"
    start, end = region.offsets(text)
    patched = text[:start] + restored + text[end:]
    lines = (region.start_line, region.start_line + restored.count("\n") + 1)
    problem = verify_fix(path, text, patched, target, lines)
    return problem if problem is not None else (patched, restored)
