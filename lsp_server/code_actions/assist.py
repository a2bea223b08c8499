"""What the chat-style code actions (repair, explain) share: what they run with (the engine,
the workspaces, the context window), the region of code they work on (the enclosing function or
class, found with tree-sitter), the reference turn of their ChatML prompts (`runtime.chatml`),
the repository context the completion path builds, and LSP positions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter

from context import parsing
from context.parsing import language_for_path, node_text
from context.prompt import PromptBudget, TokenCounter
from context.redaction import redact_secrets
from context.snippets import identifiers, outline
from context.workspaces import AdmissionRefused, SourceFile, Workspaces
from runtime.engine import Engine
from runtime.tokenizer import tokenizable

logger = logging.getLogger(__name__)

# Node types that make a region: the innermost one around the lines wins.
DEFINITIONS = frozenset(
    {
        # Python
        "function_definition",
        "class_definition",
        # JavaScript / TypeScript
        "function_declaration",
        "generator_function_declaration",
        "method_definition",
        "class_declaration",
        "interface_declaration",
        # Go
        "method_declaration",
        "type_declaration",
        # Rust
        "function_item",
        "impl_item",
        "struct_item",
        "enum_item",
        "trait_item",
        # Java
        "constructor_declaration",
        "enum_declaration",
        # C / C++
        "class_specifier",
        "struct_specifier",
    }
)
# Wrappers that belong to the definition they hold (decorators, `export`, templates).
WRAPPERS = frozenset({"decorated_definition", "export_statement", "template_declaration"})
# Code fence tags by language id.
FENCES = {
    parsing.PYTHON: "python",
    parsing.JAVASCRIPT: "javascript",
    parsing.TYPESCRIPT: "typescript",
    parsing.TSX: "tsx",
    parsing.GO: "go",
    parsing.RUST: "rust",
    parsing.JAVA: "java",
    parsing.C: "c",
    parsing.CPP: "cpp",
}
NAMES = {
    parsing.PYTHON: "Python",
    parsing.JAVASCRIPT: "JavaScript",
    parsing.TYPESCRIPT: "TypeScript",
    parsing.TSX: "TypeScript (TSX)",
    parsing.GO: "Go",
    parsing.RUST: "Rust",
    parsing.JAVA: "Java",
    parsing.C: "C",
    parsing.CPP: "C++",
}
# Python lines at column 0 that continue the statement above rather than start a new one.
_CONTINUATIONS = ("else", "elif", "except", "finally", ")", "]", "}")


class ActionError(Exception):
    """A code action request that cannot be served: bad range, unreadable or refused file."""


@dataclass(frozen=True)
class ActionContext:
    """What a code action runs with: the model, the workspaces its repository context and
    admission come from, and the budget whose `window_tokens` its prompt and answer fit."""

    engine: Engine
    workspaces: Workspaces = field(default_factory=Workspaces)
    budget: PromptBudget = field(default_factory=PromptBudget)


@dataclass(frozen=True)
class Region:
    """Whole lines [start_line, end_line) of a text (0-based), and what they hold."""

    start_line: int
    end_line: int
    kind: str  # function | class | block | selection
    name: str | None = None  # the definition's name, when there is one

    def offsets(self, text: str) -> tuple[int, int]:
        """Character offsets of the region in `text` (its last newline included)."""
        starts = line_starts(text)
        end = starts[self.end_line] if self.end_line < len(starts) else len(text)
        return starts[self.start_line], end

    def text(self, text: str) -> str:
        """The region's text."""
        start, end = self.offsets(text)
        return text[start:end]

    def describe(self) -> str:
        """`function name` / `lines 3-9`, for prompts and titles."""
        if self.name and self.kind in ("function", "class"):
            return f"{self.kind} `{self.name}`"
        return f"lines {self.start_line + 1}-{self.end_line}"


def line_starts(text: str) -> list[int]:
    """Offset of the first character of every line (LSP lines, split at "\\n")."""
    starts = [0]
    index = text.find("\n")
    while index >= 0:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def check_lines(text: str, start_line: int, end_line: int) -> None:
    """Raise ActionError unless 0 <= start_line <= end_line < the number of lines."""
    count = text.count("\n") + 1
    if not 0 <= start_line <= end_line < count:
        raise ActionError(
            f"lines {start_line}..{end_line} are outside the file (0..{count - 1}, 0-based)"
        )


def _definition_name(node: tree_sitter.Node) -> str | None:
    while node.type in WRAPPERS:
        inner = node.child_by_field_name("definition") or next(
            (child for child in node.named_children if child.type in DEFINITIONS), None
        )
        if inner is None:
            return None
        node = inner
    name = node.child_by_field_name("name")
    if name is None:
        declarator = node.child_by_field_name("declarator")
        while declarator is not None and declarator.child_by_field_name("declarator"):
            declarator = declarator.child_by_field_name("declarator")
        name = declarator
    return node_text(name) if name is not None else None


def _kind(node: tree_sitter.Node) -> str:
    core = node
    while core.type in WRAPPERS and core.named_children:
        core = core.named_children[-1]
    return "class" if "class" in core.type or "struct" in core.type else "function"


def enclosing_definition(path: str, text: str, start_line: int, end_line: int) -> Region | None:
    """The innermost function or class (decorators included) spanning the lines, or None
    (no grammar, no definition around them, or one that does not parse cleanly)."""
    tree = parsing.parse(path, tokenizable(text))
    if tree is None:
        return None
    lines = text.split("\n")
    end_column = len(lines[end_line].encode("utf-8", "surrogatepass"))
    node: tree_sitter.Node | None = tree.root_node.named_descendant_for_point_range(
        (start_line, 0), (end_line, end_column)
    )
    while node is not None:
        if node.type in DEFINITIONS or (
            node.type in WRAPPERS and any(c.type in DEFINITIONS for c in node.named_children)
        ):
            while node.parent is not None and node.parent.type in WRAPPERS:
                node = node.parent
            if node.has_error:
                return None  # its extent is tree-sitter's guess: use the indentation instead
            last = node.end_point.row - (1 if node.end_point.column == 0 else 0)
            return Region(node.start_point.row, last + 1, _kind(node), _definition_name(node))
        node = node.parent
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def top_level_block(text: str, start_line: int, end_line: int) -> Region:
    """The top-level statement(s) around the lines, by indentation: from the last line at
    column 0 (decorators included) to the next line at column 0 that starts something new."""
    lines = text.split("\n")
    start = start_line
    while start > 0 and not (lines[start].strip() and _indent(lines[start]) == 0):
        start -= 1
    while start > 0 and lines[start - 1].startswith("@"):
        start -= 1
    end = end_line + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and _indent(line) == 0 and not line.startswith(_CONTINUATIONS):
            break
        end += 1
    while end > end_line + 1 and not lines[end - 1].strip():
        end -= 1  # trailing blank lines stay outside
    return Region(start, end, "block")


def region_for(
    path: str, text: str, start_line: int, end_line: int, *, max_lines: int = 120
) -> Region:
    """The code a chat action works on: the enclosing definition, else the top-level block;
    either cut to a window of `max_lines` around the lines when longer."""
    check_lines(text, start_line, end_line)
    region = enclosing_definition(path, text, start_line, end_line) or top_level_block(
        text, start_line, end_line
    )
    if region.end_line - region.start_line <= max_lines:
        return region
    half = max(max_lines - (end_line - start_line + 1), 0) // 2
    start = max(region.start_line, start_line - half)
    end = min(region.end_line, max(end_line + 1 + half, start + max_lines))
    return Region(start, min(end, start + max(max_lines, end_line + 1 - start)), "block")


def margin_of(code: str) -> str:
    """The indentation every non-blank line of `code` starts with."""
    indents = [line[: _indent(line)] for line in code.split("\n") if line.strip()]
    if not indents:
        return ""
    margin = min(indents, key=len)
    while not all(item.startswith(margin) for item in indents):
        margin = margin[:-1]
    return margin


def dedent(code: str, margin: str) -> str:
    """`code` with `margin` removed from the start of its lines (blank lines emptied)."""
    return "\n".join(
        line[len(margin) :] if line.startswith(margin) else line.lstrip(" \t")
        for line in code.split("\n")
    )


def indent(code: str, margin: str) -> str:
    """`code` with `margin` put before every non-blank line."""
    return "\n".join(margin + line if line.strip() else line for line in code.split("\n"))


def with_reference(context: str, request: str) -> list[str]:
    """The user's request, preceded by a turn that shows the repository context as reference.

    In its own turn, acknowledged, the context is not mistaken for the code to work on (in one
    message with the request, the 0.5B and 1.5B models often rewrite the context instead)."""
    if not context:
        return [request]
    return [f"Code from the repository, for reference:\n\n{context}", "I have read it.", request]


def fence(language: str | None) -> str:
    """The tag after ``` for code of `language`."""
    return FENCES.get(language or "", "")


def language_name(path: str) -> str:
    """ "Python code", "Go code", ... for prompts ("code" when the language is unknown)."""
    name = NAMES.get(language_for_path(path) or "")
    return f"{name} code" if name else "code"


def context_block(
    source: SourceFile,
    text: str,
    region: Region,
    count: TokenCounter,
    *,
    repo_tokens: int,
    file_tokens: int = 512,
) -> str:
    """What the model should know besides the region, as Markdown: the repository files the
    completion path would show (outlines of what this file imports), then an outline of the
    rest of the current file with the definitions the region names kept first. Redacted."""
    parts: list[str] = []
    start, end = region.offsets(text)
    for piece in source.context(count, repo_tokens, text, start):
        parts.append(f"File `{piece.path}`:\n```{fence(language_for_path(piece.path))}\n")
        parts[-1] += f"{piece.content.rstrip()}\n```\n"
    # The region's lines become blank: the outline shows what surrounds it, line count kept.
    rest = text[:start] + "\n" * text.count("\n", start, end) + text[end:]
    used = identifiers(source.name, text[start:end])
    around = outline(source.name, rest, used, budget=file_tokens, count=count).strip()
    if around:
        block = f"```{fence(language_for_path(source.name))}\n{around}\n```\n"
        parts.append(f"The rest of `{source.name}`, outlined:\n{block}")
    return redact_secrets("\n".join(parts))


def admit(
    workspaces: Workspaces,
    path: Path,
    text: str,
    workspace: Path | None,
    use_context: bool,
) -> SourceFile:
    """`workspaces.admit` (secret and gitignored files refused) with the refusal as
    ActionError."""
    try:
        return workspaces.admit(path, text, workspace=workspace, use_context=use_context)
    except AdmissionRefused as error:
        raise ActionError(str(error)) from error
