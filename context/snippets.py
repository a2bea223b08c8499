"""Compressed views of other workspace files for the prompt.

When a context file does not fit the prompt budget whole, `outline` shows what the current file
can use from it: the module docstring, imports, signatures of functions and methods (bodies
elided with the language's idiom: Python `...`, braces languages `{ ... }`), class outlines, type
declarations and constants, with doc comments cut to their first line. `identifiers` gives the
names a file uses, so that an outline can keep the definitions the current file refers to and
compress or drop the rest.

Signatures come from tree-sitter node types for Python, JavaScript/TypeScript, Go, Rust, Java and
C/C++; other files get a line-based heuristic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from context import parsing
from context.parsing import captures, language_for_path, node_text

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

# Priorities of outline pieces: under a budget, higher numbers are dropped first (later pieces
# before earlier ones at equal priority).
_HEADER = 0  # module docstring, package clause, class docstrings, access specifiers
_USED = 1  # definitions the current file names (every definition when no names are given)
_IMPORT = 2
_UNUSED = 3  # definitions the current file does not name, in compressed form

# A value spanning this many lines (or characters) is elided: `X = [ ... ]`.
_LONG_VALUE_LINES = 3
_LONG_VALUE_CHARS = 160
# A Python module-level `if`/`try`/`with` block this short is kept as it is.
_SHORT_BLOCK_LINES = 6


@dataclass(frozen=True)
class _Language:
    """What the outliner needs to know about one grammar."""

    comments: frozenset[str]
    imports: frozenset[str]
    headers: frozenset[str]
    functions: frozenset[str]  # their `body` field is elided
    classes: dict[str, str]  # collapsible containers: node type -> field with the members
    scopes: dict[str, str]  # always-expanded containers ("" = members are the node's children)
    wrappers: dict[str, str]  # node type -> field holding the wrapped declaration ("" = first)
    drop: frozenset[str]  # statements never shown
    values: dict[str, str]  # node type -> field whose long value is elided
    attributes: frozenset[str] = frozenset()  # attached to the next declaration, verbatim
    ellipsis: str = "{ ... }"
    indent: str = "    "  # one level, for members written on their container's line


_JS_FUNCTIONS = frozenset(
    {
        "function_declaration",
        "generator_function_declaration",
        "function_expression",
        "function",
        "generator_function",
        "arrow_function",
        "method_definition",
    }
)
_JS_STATEMENTS = frozenset(
    {
        "expression_statement",
        "if_statement",
        "for_statement",
        "for_in_statement",
        "while_statement",
        "do_statement",
        "try_statement",
        "switch_statement",
        "return_statement",
        "throw_statement",
        "empty_statement",
        "labeled_statement",
        "break_statement",
        "continue_statement",
        "debugger_statement",
        "with_statement",
        "statement_block",
        "class_static_block",
    }
)
_JS = _Language(
    comments=frozenset({"comment"}),
    imports=frozenset({"import_statement"}),
    headers=frozenset(),
    functions=_JS_FUNCTIONS,
    classes={
        "class_declaration": "body",
        "abstract_class_declaration": "body",
        "class": "body",
    },
    scopes={"internal_module": "body", "module": "body"},
    wrappers={"export_statement": "declaration", "ambient_declaration": ""},
    drop=_JS_STATEMENTS,
    indent="  ",
    values={
        "variable_declarator": "value",
        "public_field_definition": "value",
        "field_definition": "value",
        "assignment_expression": "right",
        "export_statement": "value",
    },
)
_C_FAMILY = _Language(
    comments=frozenset({"comment"}),
    imports=frozenset({"preproc_include"}),
    headers=frozenset(),
    functions=frozenset({"function_definition", "lambda_expression"}),
    classes={"class_specifier": "body", "struct_specifier": "body", "union_specifier": "body"},
    scopes={
        "namespace_definition": "body",
        "linkage_specification": "body",
        "preproc_ifdef": "",
        "preproc_if": "",
        "preproc_else": "",
        "preproc_elif": "",
        "preproc_elifdef": "",
    },
    wrappers={"template_declaration": ""},
    drop=frozenset({"expression_statement", "preproc_call", "ERROR"}),
    values={
        "init_declarator": "value",
        "field_declaration": "default_value",
        "preproc_def": "value",
        "preproc_function_def": "value",
    },
)
_LANGUAGES: dict[str, _Language] = {
    parsing.PYTHON: _Language(
        comments=frozenset({"comment"}),
        imports=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
        headers=frozenset(),
        functions=frozenset({"function_definition"}),
        classes={"class_definition": "body"},
        scopes={},
        wrappers={"decorated_definition": "definition"},
        drop=frozenset(),  # decided by `_python_keeps`
        values={"assignment": "right"},
        ellipsis="...",
    ),
    parsing.JAVASCRIPT: _JS,
    parsing.TYPESCRIPT: _JS,
    parsing.TSX: _JS,
    parsing.GO: _Language(
        comments=frozenset({"comment"}),
        imports=frozenset({"import_declaration"}),
        headers=frozenset({"package_clause"}),
        functions=frozenset({"function_declaration", "method_declaration", "func_literal"}),
        classes={},
        scopes={},
        wrappers={},
        drop=frozenset({"ERROR"}),
        values={"const_spec": "value", "var_spec": "value"},
        indent="\t",
    ),
    parsing.RUST: _Language(
        comments=frozenset({"line_comment", "block_comment"}),
        imports=frozenset({"use_declaration", "extern_crate_declaration"}),
        headers=frozenset(),
        functions=frozenset({"function_item", "closure_expression"}),
        classes={"impl_item": "body", "trait_item": "body"},
        scopes={"mod_item": "body"},
        wrappers={},
        drop=frozenset({"inner_attribute_item", "expression_statement", "ERROR"}),
        values={"const_item": "value", "static_item": "value"},
        attributes=frozenset({"attribute_item"}),
    ),
    parsing.JAVA: _Language(
        comments=frozenset({"line_comment", "block_comment"}),
        imports=frozenset({"import_declaration"}),
        headers=frozenset({"package_declaration"}),
        functions=frozenset(
            {
                "method_declaration",
                "constructor_declaration",
                "compact_constructor_declaration",
                "lambda_expression",
            }
        ),
        classes={
            "class_declaration": "body",
            "interface_declaration": "body",
            "record_declaration": "body",
        },
        scopes={},
        wrappers={},
        drop=frozenset({"static_initializer", "block", "ERROR"}),
        values={"variable_declarator": "value"},
    ),
    parsing.C: _C_FAMILY,
    parsing.CPP: _C_FAMILY,
}

# Identifier-like leaves per grammar, for `identifiers`.
_IDENTIFIER_TYPES: dict[str, tuple[str, ...]] = {
    parsing.PYTHON: ("identifier",),
    parsing.JAVASCRIPT: (
        "identifier",
        "property_identifier",
        "shorthand_property_identifier",
        "shorthand_property_identifier_pattern",
    ),
    parsing.TYPESCRIPT: (
        "identifier",
        "property_identifier",
        "shorthand_property_identifier",
        "shorthand_property_identifier_pattern",
        "type_identifier",
    ),
    parsing.GO: ("identifier", "field_identifier", "type_identifier", "package_identifier"),
    parsing.RUST: ("identifier", "field_identifier", "type_identifier"),
    parsing.JAVA: ("identifier", "type_identifier"),
    parsing.C: ("identifier", "field_identifier", "type_identifier"),
    parsing.CPP: ("identifier", "field_identifier", "type_identifier", "namespace_identifier"),
}
_IDENTIFIER_TYPES[parsing.TSX] = _IDENTIFIER_TYPES[parsing.TYPESCRIPT]

_WORD = re.compile(r"[A-Za-z_$][\w$]*")
_PRAGMA_COMMENT = re.compile(r"#!|#.*-\*-.*coding[:=]|# *(type|noqa|pylint|fmt):")


def identifiers(path: str, text: str, tree: tree_sitter.Tree | None = None) -> set[str]:
    """The identifiers used in a file (outside strings and comments where it parses).

    Meant for `outline(..., used_names=identifiers(current_path, current_text))`. Files in
    languages without a grammar give every word-like token.
    """
    language = language_for_path(path)
    kinds = _IDENTIFIER_TYPES.get(language or "")
    if language is not None and kinds is not None:
        if tree is None:
            tree = parsing.parse(path, text)
        if tree is not None:
            query = "[" + " ".join(f"({kind})" for kind in kinds) + "] @id"
            found = captures(language, query, tree.root_node)
            return {node_text(node) for node in found.get("id", [])}
    return set(_WORD.findall(text))


def outline(
    path: str,
    text: str,
    used_names: set[str] | None = None,
    *,
    budget: int | None = None,
    count: TokenCounter = len,
    tree: tree_sitter.Tree | None = None,
) -> str:
    """A compressed view of a file: signatures and declarations, bodies elided.

    Without `used_names` every definition is shown in full outline form (signature and first
    docstring line). With `used_names` (e.g. `identifiers(...)` of the current file), the
    definitions named in it keep that form, the others are compressed (signatures without
    docstrings, classes that neither they nor their members are named collapsed to one line)
    and private ones (`_x` in Python, unexported in Go/JS, non-`pub` in Rust, `private` in Java,
    `static` in C) are dropped. With `budget`, pieces are dropped until `count(result) <=
    budget`: unused definitions first, then imports, then used definitions, later pieces before
    earlier ones; "" if nothing fits. Definitions stay in source order.
    """
    language = language_for_path(path)
    config = _LANGUAGES.get(language or "")
    pieces: list[_Piece] = []
    if language is not None and config is not None:
        if tree is None:
            tree = parsing.parse(path, text)
        if tree is not None:
            source = text.encode("utf-8", "surrogatepass")
            outliner = _Outliner(language, config, source, used_names)
            pieces = outliner.members(tree.root_node.children, None)
    if not pieces and (config is None or tree is None):
        pieces = _line_outline(text, used_names)
    return _render_within(pieces, budget, count)


# ---------------------------------------------------------------------------------------------
# Pieces


@dataclass
class _Piece:
    """A leaf (one declaration's outline) or a frame (container header + members + closer)."""

    text: str
    priority: int
    children: list[_Piece] | None = None
    closer: str = ""
    dropped: bool = False

    def live(self) -> bool:
        if self.dropped:
            return False
        if self.children is None:
            return True
        return any(child.live() for child in self.children)

    def render(self) -> str:
        if self.children is None:
            return self.text
        inner = [child.render() for child in self.children if child.live()]
        parts = [self.text, *inner]
        if self.closer:
            parts.append(self.closer)
        return "\n".join(parts)

    def leaves(self) -> list[_Piece]:
        if self.children is None:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


def _render(pieces: list[_Piece]) -> str:
    text = "\n".join(piece.render() for piece in pieces if piece.live())
    return text + "\n" if text else ""


def _render_within(pieces: list[_Piece], budget: int | None, count: TokenCounter) -> str:
    """Render, dropping the least important leaves until the text fits `budget`."""
    text = _render(pieces)
    if budget is None or count(text) <= budget:
        return text
    leaves = [leaf for piece in pieces for leaf in piece.leaves()]
    # Least important first: highest priority number, then latest in the file.
    victims = sorted(range(len(leaves)), key=lambda i: (-leaves[i].priority, -i))
    sizes = [count(leaf.text) + 1 for leaf in leaves]
    estimate = sum(sizes)
    position = 0
    # Per-leaf counts add up to about the whole (token merges across lines are rare), so drop by
    # estimate first and confirm with the real count only at the end.
    while position < len(victims) and estimate > budget:
        leaves[victims[position]].dropped = True
        estimate -= sizes[victims[position]]
        position += 1
    text = _render(pieces)
    while count(text) > budget and position < len(victims):
        leaves[victims[position]].dropped = True
        position += 1
        text = _render(pieces)
    return text if count(text) <= budget else ""


# ---------------------------------------------------------------------------------------------
# Tree-sitter outliner


class _Outliner:
    def __init__(
        self, language: str, config: _Language, source: bytes, used_names: set[str] | None
    ) -> None:
        self.language = language
        self.config = config
        self.source = source
        self.used = used_names
        self.esm = False  # JS/TS: does the file export anything (non-exported = private)?

    # -- structure ------------------------------------------------------------------------------

    def members(
        self, nodes: list[tree_sitter.Node], owner: tree_sitter.Node | None
    ) -> list[_Piece]:
        """Pieces for the declarations among sibling `nodes` (a file, class body or scope)."""
        if owner is None and self.language in (parsing.JAVASCRIPT, parsing.TYPESCRIPT, parsing.TSX):
            self.esm = any(n.type == "export_statement" for n in nodes)
        pieces: list[_Piece] = []
        prefix: list[tree_sitter.Node] = []  # doc comments / attributes awaiting a declaration
        previous: tree_sitter.Node | None = None  # the last declaration ...
        previous_piece: _Piece | None = None  # ... and its piece, if shown
        inner_doc_row = -2  # last row of the current `//!` module doc run
        first_statement = True
        for node in nodes:
            if not node.is_named:
                continue
            if node.type in self.config.comments:
                text = node_text(node).strip()
                if _PRAGMA_COMMENT.match(text):
                    continue  # `#!/usr/bin/env python`, `# -*- coding: utf-8 -*-`
                if previous is not None and node.start_point.row == previous.end_point.row:
                    # A trailing comment (`x int // the x`) belongs to the line it ends.
                    piece = previous_piece
                    if piece is not None and piece.children is None and "\n" not in text:
                        piece.text += " " + text
                    continue
                if text.startswith(("//!", "/*!")):
                    # Rust module docs: the first line of the run, like a Python docstring.
                    if node.start_point.row > inner_doc_row + 1:
                        pieces.append(_Piece(self._indent(node) + _first_line(text), _HEADER))
                    inner_doc_row = _end_row(node)
                    continue
                if prefix and node.start_point.row > prefix[-1].end_point.row + 1:
                    prefix = []
                prefix.append(node)
                continue
            if node.type in self.config.attributes:
                if prefix and node.start_point.row > prefix[-1].end_point.row + 1:
                    prefix = []
                prefix.append(node)
                continue
            attached = prefix if prefix and node.start_point.row <= _end_row(prefix[-1]) + 1 else []
            prefix = []
            if _is_test_only(node, attached):
                continue
            piece = self.unit(node, owner, first_statement)
            first_statement = False
            previous, previous_piece = node, piece
            if piece is None:
                continue
            if attached:
                piece.text = self._prefix_text(attached, piece.priority) + piece.text
            pieces.append(piece)
        return pieces

    def unit(
        self, node: tree_sitter.Node, owner: tree_sitter.Node | None, first: bool
    ) -> _Piece | None:
        """The piece for one declaration, or None when it is not shown."""
        config = self.config
        core = self._unwrap(node)
        kind = core.type
        if self.language == parsing.PYTHON:
            if first and is_docstring(core):
                return _Piece(self._indent(node) + docstring_line(core), _HEADER)
            if not self._python_keeps(core, owner):
                return None
        if kind in config.imports or _is_reexport(node) or _is_rust_mod_declaration(core):
            return _Piece(self._leaf(node, full=True), _IMPORT)
        if kind in config.headers or kind == "access_specifier":
            return _Piece(self._leaf(node, full=True), _HEADER)
        if kind in config.drop and not self._keeps_statement(core):
            return None
        if kind in config.scopes:
            return self._frame(node, core, config.scopes[kind], _HEADER)
        names = _names(core)
        used = self.used is None or any(name in self.used for name in names)
        if kind in config.classes:
            members_field = config.classes[kind]
            body = core.child_by_field_name(members_field)
            member_nodes = [c for c in body.children if c.is_named] if body is not None else []
            if not used and self.used is not None:
                member_used = any(
                    name in self.used for m in member_nodes for name in _names(self._unwrap(m))
                )
                if not member_used:
                    if self._is_private(node, core, names, owner):
                        return None
                    return _Piece(self._collapsed(node, core), _UNUSED)
            if member_nodes:
                return self._frame(node, core, members_field, _USED if used else _UNUSED)
        if not used and self._is_private(node, core, names, owner):
            return None
        return _Piece(self._leaf(node, full=used), _USED if used else _UNUSED)

    def _frame(
        self,
        node: tree_sitter.Node,
        core: tree_sitter.Node,
        members_field: str,
        priority: int,
    ) -> _Piece:
        """A container: its header, its members as pieces of their own, its closer."""
        if members_field:
            body = core.child_by_field_name(members_field)
            nodes = [c for c in body.children if c.is_named] if body is not None else []
        else:
            # Preprocessor conditionals: the members follow the condition.
            header = {
                c.id
                for c in (core.child_by_field_name("name"), core.child_by_field_name("condition"))
                if c is not None
            }
            nodes = [c for c in core.children if c.is_named and c.id not in header]
        if not nodes:
            return _Piece(self._leaf(node, full=True), priority)
        indent = self._indent(node)
        opener = self.source[node.start_byte : nodes[0].start_byte].decode("utf-8", "replace")
        closer = self.source[self._end(nodes[-1]) : self._end(node)].decode("utf-8", "replace")
        frame = _Piece(
            indent + opener.rstrip(),
            priority,
            children=self.members(nodes, core),
            closer=indent + closer.strip() if closer.strip() else "",
        )
        # A member is worth no more than its class: an unused class's docstring goes with it.
        for leaf in frame.leaves():
            leaf.priority = max(leaf.priority, priority)
        return frame

    # -- text -----------------------------------------------------------------------------------

    def _indent(self, node: tree_sitter.Node) -> str:
        """The indentation to print `node` with: its own, or one level deeper than its line's
        when it shares the line with its container (`impl T for S { fn m() {} }`)."""
        line_start = self.source.rfind(b"\n", 0, node.start_byte) + 1
        before = self.source[line_start : node.start_byte]
        if not before.strip():
            return before.decode("utf-8", "replace")
        if node.parent is None or node.parent.parent is None:
            return ""  # a top-level statement after another one on the same line
        line_indent = before[: len(before) - len(before.lstrip())]
        return line_indent.decode("utf-8", "replace") + self.config.indent

    def _end(self, node: tree_sitter.Node) -> int:
        # Class members and C++ access specifiers end with a `;`/`:` that is their sibling.
        after = node.next_sibling
        if after is not None and not after.is_named and after.type in (";", ":"):
            return after.end_byte
        return node.end_byte

    def _leaf(self, node: tree_sitter.Node, full: bool) -> str:
        """The node's source with function bodies and long values elided."""
        edits: list[tuple[int, int, str]] = []
        self._collect_edits(node, full, edits)
        return self._indent(node) + self._apply(node.start_byte, self._end(node), edits).rstrip()

    def _collapsed(self, node: tree_sitter.Node, core: tree_sitter.Node) -> str:
        """A class in one line: its header (decorators, bases) and an elided body."""
        body = core.child_by_field_name(self.config.classes.get(core.type, "body"))
        if body is None:
            return self._leaf(node, full=False)
        header = self.source[node.start_byte : body.start_byte].decode("utf-8", "replace")
        header = header.rstrip()
        if self.config.ellipsis == "...":
            return self._indent(node) + header + " ..."
        tail = self.source[body.end_byte : self._end(node)].decode("utf-8", "replace").strip()
        return self._indent(node) + header.rstrip("{").rstrip() + " { ... }" + tail

    def _collect_edits(
        self, root: tree_sitter.Node, full: bool, edits: list[tuple[int, int, str]]
    ) -> None:
        """Edits eliding function bodies and long values under `root`.

        Iterative: generated code nests expressions deeper than Python's recursion limit.
        """
        config = self.config
        stack = [root]
        while stack:
            node = stack.pop()
            if node.type in config.functions:
                body = node.child_by_field_name("body")
                if body is not None and (_is_block(body) or is_long(body)):
                    edits.append(self._body_edit(node, body, full))
                    continue
            value_field = config.values.get(node.type)
            value = node.child_by_field_name(value_field) if value_field else None
            if value is not None and value.type not in config.functions and is_long(value):
                text = bracketed_ellipsis(node_text(value))
                edits.append((value.start_byte, value.end_byte, text))
                stack.extend(c for c in node.named_children if c != value)
                continue
            stack.extend(node.named_children)

    def _body_edit(
        self, function: tree_sitter.Node, body: tree_sitter.Node, full: bool
    ) -> tuple[int, int, str]:
        """The edit that elides `body`: `{ ... }`, or Python's `: ...` / docstring + `...`."""
        if self.config.ellipsis != "...":
            return (body.start_byte, body.end_byte, "{ ... }" if _is_block(body) else "...")
        statements = body.named_children
        if (
            full
            and statements
            and is_docstring(statements[0])
            and body.start_point.row > function.start_point.row
        ):
            indent = " " * body.start_point.column
            replacement = docstring_line(statements[0]) + "\n" + indent + "..."
            return (body.start_byte, body.end_byte, replacement)
        # `def f(x): ...` on one line, as in stub files.
        colon = body.prev_sibling
        if colon is not None and colon.type == ":":
            return (colon.end_byte, body.end_byte, " ...")
        return (body.start_byte, body.end_byte, "...")

    def _apply(self, start: int, end: int, edits: list[tuple[int, int, str]]) -> str:
        parts: list[str] = []
        cursor = start
        for edit_start, edit_end, replacement in sorted(edits):
            if edit_start < cursor:
                continue  # nested in an earlier edit
            parts.append(self.source[cursor:edit_start].decode("utf-8", "replace"))
            parts.append(replacement)
            cursor = edit_end
        parts.append(self.source[cursor:end].decode("utf-8", "replace"))
        return "".join(parts)

    def _prefix_text(self, attached: list[tree_sitter.Node], priority: int) -> str:
        """Doc comments (first line only, and only for shown-in-full pieces) and attributes."""
        lines: list[str] = []
        doc_done = priority == _UNUSED
        for node in attached:
            if node.type in self.config.attributes:
                lines.append(self._indent(node) + node_text(node).strip())
            elif not doc_done:
                lines.append(self._indent(node) + _first_line(node_text(node).strip()))
                doc_done = True
        return "".join(line + "\n" for line in lines)

    # -- classification -------------------------------------------------------------------------

    def _unwrap(self, node: tree_sitter.Node) -> tree_sitter.Node:
        """The declaration inside export/decorator/template wrappers."""
        for _ in range(4):
            wrapped: tree_sitter.Node | None = None
            field_name = self.config.wrappers.get(node.type)
            if field_name is not None:
                if field_name:
                    wrapped = node.child_by_field_name(field_name)
                else:
                    named = [c for c in node.named_children if c.type not in self.config.comments]
                    wrapped = named[-1] if named else None
            elif node.type == "expression_statement" and node.named_child_count == 1:
                inner = node.named_children[0]
                if inner.type in ("internal_module", "module"):
                    wrapped = inner
            if wrapped is None:
                return node
            node = wrapped
        return node

    def _python_keeps(self, core: tree_sitter.Node, owner: tree_sitter.Node | None) -> bool:
        kind = core.type
        if kind in ("function_definition", "class_definition", "type_alias_statement"):
            return True
        if kind in self.config.imports or kind == "pass_statement":
            return True
        if kind == "expression_statement":
            inner = core.named_children[0] if core.named_child_count else None
            return inner is not None and inner.type == "assignment"
        if owner is None and kind in (
            "if_statement",
            "try_statement",
            "with_statement",
        ):
            if node_text(core).startswith("if __name__"):
                return False
            lines = core.end_point.row - core.start_point.row + 1
            return lines <= _SHORT_BLOCK_LINES or _defines_something(core)
        return False

    def _keeps_statement(self, core: tree_sitter.Node) -> bool:
        # Top-level JS `module.exports = ...` / `exports.x = ...` are how CommonJS declares.
        if core.type == "expression_statement" and core.named_child_count:
            return core.named_children[0].type == "assignment_expression"
        return False

    def _is_private(
        self,
        node: tree_sitter.Node,
        core: tree_sitter.Node,
        names: list[str],
        owner: tree_sitter.Node | None,
    ) -> bool:
        language = self.language
        if not names:
            return False
        if language == parsing.PYTHON:
            return all(n.startswith("_") and not n.endswith("__") for n in names)
        if language == parsing.GO:
            return all(not n[:1].isupper() for n in names)
        if language == parsing.RUST:
            if core.type == "impl_item":
                return False
            # Trait items and trait-impl methods are as public as the trait.
            if owner is not None and owner.type == "trait_item":
                return False
            if owner is not None and owner.child_by_field_name("trait") is not None:
                return False
            return not any(c.type == "visibility_modifier" for c in core.children)
        if language == parsing.JAVA:
            modifiers = [c for c in core.children if c.type == "modifiers"]
            return bool(modifiers) and "private" in node_text(modifiers[0]).split()
        if language in (parsing.JAVASCRIPT, parsing.TYPESCRIPT, parsing.TSX):
            if owner is None:
                return self.esm and node.type != "export_statement"
            name = core.child_by_field_name("name")
            if name is not None and name.type == "private_property_identifier":
                return True
            return any(
                c.type == "accessibility_modifier" and node_text(c) == "private"
                for c in core.children
            )
        if language in (parsing.C, parsing.CPP) and (
            owner is None or owner.type in self.config.scopes
        ):
            return any(
                c.type == "storage_class_specifier" and node_text(c) == "static"
                for c in core.children
            )
        return False


# ---------------------------------------------------------------------------------------------
# Node helpers


def _names(core: tree_sitter.Node) -> list[str]:
    """The names a declaration introduces (several for `const a = 1, b = 2`)."""
    kind = core.type
    if kind == "impl_item":
        # `impl Trait for Type`: the type is what callers name; the trait matters too.
        return [
            _last_word(node_text(n))
            for n in (core.child_by_field_name("type"), core.child_by_field_name("trait"))
            if n is not None and _last_word(node_text(n))
        ]
    name_nodes = core.children_by_field_name("name")
    if name_nodes:
        return [w for w in (_last_word(node_text(n)) for n in name_nodes) if w]
    names: list[str] = []
    for declarator in core.children_by_field_name("declarator"):
        names.extend(_declarator_names(declarator))
    if kind == "assignment":
        left = core.child_by_field_name("left")
        if left is not None:
            names.extend(_WORD.findall(node_text(left)))
    for child in core.named_children:
        if child.type in (
            "variable_declarator",
            "type_spec",
            "type_alias",
            "const_spec",
            "var_spec",
            "assignment",
            "function_definition",
            "class_definition",
        ):
            names.extend(_names(child))
    return names


def _declarator_names(declarator: tree_sitter.Node) -> list[str]:
    node = declarator
    for _ in range(16):
        if node.type == "variable_declarator":
            name = node.child_by_field_name("name")
            return [_last_word(node_text(name))] if name is not None else []
        inner = node.child_by_field_name("declarator")
        if inner is None:
            break
        node = inner
    if node.type in ("qualified_identifier", "scoped_identifier"):
        name = node.child_by_field_name("name")
        if name is not None:
            node = name
    word = _last_word(node_text(node))
    return [word] if word else []


def _last_word(text: str) -> str:
    words = _WORD.findall(text.split("<", 1)[0])  # `Foo<T>` names Foo
    return words[-1] if words else ""


def _end_row(node: tree_sitter.Node) -> int:
    # Rust line comments include their newline, so they end at column 0 of the next row.
    point = node.end_point
    return point.row - 1 if point.column == 0 and point.row > node.start_point.row else point.row


def _is_block(body: tree_sitter.Node) -> bool:
    return body.type in (
        "block",
        "statement_block",
        "compound_statement",
        "constructor_body",
        "field_declaration_list",
    )


def is_long(node: tree_sitter.Node) -> bool:
    """Does a value span _LONG_VALUE_LINES lines or _LONG_VALUE_CHARS characters?"""
    lines = node.end_point.row - node.start_point.row + 1
    return lines >= _LONG_VALUE_LINES or node.end_byte - node.start_byte > _LONG_VALUE_CHARS


def bracketed_ellipsis(text: str) -> str:
    """What an elided value becomes: `[ ... ]` for a bracketed one, else `...`."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    opener = text[:1]
    if opener in pairs and text.rstrip().endswith(pairs[opener]):
        return f"{opener} ... {pairs[opener]}"
    return "..."


def is_docstring(node: tree_sitter.Node) -> bool:
    """Is this Python statement a bare string (a docstring when it comes first)?"""
    return (
        node.type == "expression_statement"
        and node.named_child_count == 1
        and node.named_children[0].type in ("string", "concatenated_string")
    )


def docstring_line(statement: tree_sitter.Node) -> str:
    """A docstring cut to its first non-empty line, quotes kept: `\"\"\"Summary.\"\"\"`."""
    text = node_text(statement).strip()
    match = re.match(r"([rRbBuUfF]*)(\"\"\"|'''|\"|')", text)
    if match is None:
        return text.splitlines()[0] if text else text
    prefix, quote = match.groups()
    body = text[match.end() :]
    if body.endswith(quote):
        body = body[: -len(quote)]
    first = next((line.strip() for line in body.splitlines() if line.strip()), "")
    if first.endswith(quote[0]) or first.endswith("\\"):
        first += " "
    return f"{prefix}{quote}{first}{quote}"


def _first_line(comment: str) -> str:
    """A comment cut to its first meaningful line (`/** Does X. */`, `// Does X.`)."""
    lines = comment.splitlines()
    if len(lines) <= 1:
        return comment.rstrip()
    match = re.match(r"/\*+!?", lines[0])
    if match is None:
        return lines[0].rstrip()
    opener = match.group(0)
    content = [lines[0][len(opener) :], *lines[1:]]
    for line in content:
        stripped = line.strip().lstrip("*").strip().removesuffix("*/").strip()
        if stripped:
            return f"{opener} {stripped} */"
    return f"{opener} */"


def _is_test_only(node: tree_sitter.Node, attached: list[tree_sitter.Node]) -> bool:
    """Rust `#[cfg(test)]` items and `mod tests`: nothing another file can use."""
    if any("".join(node_text(a).split()) == "#[cfg(test)]" for a in attached):
        return True
    if node.type == "mod_item":
        name = node.child_by_field_name("name")
        return name is not None and node_text(name) in ("tests", "test")
    return False


def _is_reexport(node: tree_sitter.Node) -> bool:
    return node.type == "export_statement" and node.child_by_field_name("source") is not None


def _is_rust_mod_declaration(core: tree_sitter.Node) -> bool:
    return core.type == "mod_item" and core.child_by_field_name("body") is None


def _defines_something(node: tree_sitter.Node) -> bool:
    """Does a Python compound statement define a function or class in one of its blocks?"""
    stack = list(node.named_children)
    while stack:
        child = stack.pop()
        if child.type in ("function_definition", "class_definition", "decorated_definition"):
            return True
        if child.type in ("block", "else_clause", "elif_clause", "except_clause", "finally_clause"):
            stack.extend(child.named_children)
    return False


# ---------------------------------------------------------------------------------------------
# Line-based fallback

_DECLARATION_LINE = re.compile(
    r"(export|public|private|protected|internal|open|static|abstract|final|async|pub|def|class|"
    r"fn|fun|func|function|interface|struct|enum|trait|impl|module|type|typedef|const|let|var|"
    r"val|import|use|using|require|package|namespace|#include|#define|sub|proc|object|data|"
    r"record|case class|mod|local function)\b"
)


_CLOSER = re.compile(r"[\]})]+[;,]?|end")


def _line_outline(text: str, used_names: set[str] | None) -> list[_Piece]:
    """Keep declaration-looking and unindented lines; mark each elided run with `...`."""
    pieces: list[_Piece] = []
    elided_indent: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        indent = line[: len(line) - len(line.lstrip())]
        closer = _CLOSER.fullmatch(stripped) is not None
        if not indent and closer:
            pieces.append(_Piece(line.rstrip(), _HEADER))
            elided_indent = None
        elif not indent or (len(indent.expandtabs(4)) <= 8 and _DECLARATION_LINE.match(stripped)):
            used = used_names is None or bool(set(_WORD.findall(stripped)) & used_names)
            pieces.append(_Piece(line.rstrip(), _USED if used else _UNUSED))
            elided_indent = None
        elif elided_indent is None and not closer:
            elided_indent = indent
            pieces.append(_Piece(indent + "...", _UNUSED))
    return pieces
