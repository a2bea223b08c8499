"""The definitions the code at the cursor uses, found in other workspace files (Python).

`DefinitionResolver.resolve(path, text, offset, layout)` reads the scope around the cursor (the
enclosing function, else the top-level statement), collects the names it uses in first-use
order (`name`, `module.attr`, `obj.attr`, `self.attr`, the `x.` just before the cursor) and
follows each through the workspace's imports to where it is defined: re-exports in
`__init__.py`, `from x import *`, aliases, imports inside the function, class bases, `self.attr`
assigned an instance of a known class, parameter, variable and return annotations. Then come
the names the file imports from the workspace that the scope does not use yet (what the user
may be about to type), as headers only (a class's header and constructor, a function's
signature), in import order, and the modules it imports whole. In a `from m import` statement
(a line being typed, or the parenthesised list of one), the public names of `m` (a package's
re-exports too) come first, as headers. A line being typed often breaks the parse: the
statements tree-sitter then wraps in an error node still count.

Each definition is rendered as a stub: a function's signature and first docstring line; a
class's bases, docstring line and member signatures; a variable's assignment with a long value
elided; a module's public names; with shorter forms for a small budget (a class's header and
constructor, then its header line; a function's signature, then its name). `select_definitions`
packs them, most relevant first, into one prompt piece per defining file under an exact token
budget: first every definition's shortest form while it fits, then the longest form that fits
of each, in the same order.

Which of these pay was measured on the holes of `bench/repo_quality.py` (100 cross-file holes,
prompts only; definition recall at 256 / 1,024 repository tokens): headers for unused imports
and the `from m import` rule raised it from 56 / 76 to 63 / 88 %; ordering the unused imports
by how often the file uses them (either way), or by how near the cursor they are used, lost
1-3 points against import order. Statements in error nodes: 65 / 91; the shorter forms, packed
shortest first: 89 / 98; no outlines below 512 tokens (`context.repo`): 96 / 98; imports inside
the function and the parenthesised `from m import (...)`: 99 / 100.

Module summaries (symbols, import bindings, star imports) are cached per file text, so a
keystroke parses the current file only. Other files' texts come from a `source` callable (the
workspace index's redacted `text`, which never reads secret files).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import tree_sitter

from context import parsing
from context.imports import WorkspaceLayout, python_module_file
from context.parsing import language_for_path, node_text
from context.prompt import ContextPiece, TokenCounter
from context.snippets import bracketed_ellipsis, docstring_line, is_docstring, is_long

logger = logging.getLogger(__name__)

Source = Callable[[str], str | None]

MODULE_CACHE = 512  # module summaries kept (least recently used dropped)
MAX_MEMBERS = 40  # member lines of one class (or names of one module) rendered
MAX_DEPTH = 8  # re-export / base-class hops followed
# The x. before the cursor: a dotted chain at the end of the line.
_RECEIVER = re.compile(r"([A-Za-z_][\w.]*)\.\w*$")
_HEADER = re.compile(r"(?:async\s+)?(?:def|class)\s+(\w+)")
_DOTTED = re.compile(r"[A-Za-z_][\w.]*")
# A `from m import` statement being typed: its module's names come next.
_FROM_IMPORT = re.compile(r"^\s*from\s+(\.*)([A-Za-z_][\w.]*|)\s+import\b")
# Decorators worth keeping on a signature: a bare name (`@property`, `@x.setter`), no call.
_PLAIN_DECORATOR = re.compile(r"@[A-Za-z_][\w.]*")
_KEPT_DUNDERS = frozenset({"__init__", "__call__"})
# Nodes whose statements count as top-level: module-level if/try/with blocks, and error nodes.
_TOP_LEVEL_CONTAINERS = frozenset(
    {
        "if_statement",
        "try_statement",
        "with_statement",
        "block",
        "else_clause",
        "elif_clause",
        "except_clause",
        "finally_clause",
        "ERROR",
    }
)


@dataclass(frozen=True, slots=True)
class Definition:
    """One definition in another workspace file, rendered compactly."""

    path: str  # the defining file
    name: str  # qualified name in that file ("Client", "Client.send"; "" for a whole module)
    start: int  # byte offset in that file (source order inside a piece)
    text: str
    # Shorter renderings, longest first, for a budget `text` does not fit: a class's header and
    # constructor, then its header line; a function's signature, then its name.
    shorter: tuple[str, ...] = ()

    @property
    def forms(self) -> list[str]:
        """`text` and the shorter renderings, the blank ones left out."""
        return [text for text in (self.text, *self.shorter) if text.strip()]


# ---------------------------------------------------------------------------------------------
# Module summaries


@dataclass(frozen=True, slots=True)
class _Binding:
    """A name an import statement binds: a name of `module`, or a module file itself."""

    module: str | None  # the file imported from (None: outside the workspace)
    name: str | None  # the name in it; None when the binding is the module `submodule`
    submodule: str | None = None  # the file of `module.name` when that is a module


@dataclass(eq=False)
class _Module:
    """What one file defines and imports, at the top level."""

    path: str
    text: str
    layout: WorkspaceLayout
    root: tree_sitter.Node
    symbols: dict[str, tree_sitter.Node] = field(default_factory=dict)  # name -> outer node
    bindings: dict[str, _Binding] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)
    # Computed on first use: class members by class start byte, renderings by (qualified name,
    # brief).
    members: dict[int, dict[str, _Entity]] = field(default_factory=dict)
    rendered: dict[tuple[str, bool], Definition | None] = field(default_factory=dict)


@dataclass(eq=False)
class _Entity:
    """Something a name resolves to: a module, class, function, variable or class attribute."""

    kind: str  # "module", "class", "function", "variable", "method", "attribute"
    module: _Module
    name: str = ""  # qualified name in the module
    node: tree_sitter.Node | None = None  # outer node (decorated definitions included)
    owner: _Entity | None = None  # the class of a method or attribute
    type: tree_sitter.Node | None = None  # an annotation or a value giving the type


def _unwrap(node: tree_sitter.Node) -> tree_sitter.Node:
    """The definition inside a decorated definition."""
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None:
            return inner
    return node


def _top_level(root: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Top-level statements, including those inside module-level if/try/with blocks and error
    nodes: a line being typed that does not parse yet can make tree-sitter wrap every statement
    before it in one ERROR node, imports included."""
    stack = list(reversed(root.named_children))
    while stack:
        node = stack.pop()
        if node.type in _TOP_LEVEL_CONTAINERS:
            stack.extend(reversed(node.named_children))
        else:
            yield node


def _assigned_names(assignment: tree_sitter.Node) -> list[str]:
    """The plain names an assignment binds (`a = b = 1`, `a, b = ...`)."""
    left = assignment.child_by_field_name("left")
    if left is None or left.type not in ("identifier", "pattern_list", "tuple_pattern"):
        return []
    names = [left] if left.type == "identifier" else left.named_children
    return [node_text(n) for n in names if n.type == "identifier"]


def _assignment(node: tree_sitter.Node) -> tree_sitter.Node | None:
    """The assignment an expression statement holds, if any."""
    if node.type == "expression_statement" and node.named_child_count:
        inner = node.named_children[0]
        if inner.type == "assignment":
            return inner
    return None


def _summarise(path: str, text: str, layout: WorkspaceLayout) -> _Module | None:
    """Parse one Python file into its top-level symbols, import bindings and star imports."""
    tree = parsing.parse(path, text)
    if tree is None:
        return None
    module = _Module(path, text, layout, tree.root_node)
    for node in _top_level(tree.root_node):
        core = _unwrap(node)
        if core.type in ("function_definition", "class_definition"):
            name = core.child_by_field_name("name")
            if name is not None:
                module.symbols[node_text(name)] = node
        elif core.type == "import_statement":
            _bind_imports(module, core)
        elif core.type == "import_from_statement":
            _bind_from_import(module, core)
        elif (assignment := _assignment(core)) is not None:
            for assigned in _assigned_names(assignment):
                module.symbols.setdefault(assigned, node)
    return module


def _bind_imports(module: _Module, node: tree_sitter.Node) -> None:
    """`import a.b` binds `a` (module a); `import a.b as m` binds `m` (module a.b)."""
    for target in node.children_by_field_name("name"):
        if target.type == "aliased_import":
            dotted, alias = target.child_by_field_name("name"), target.child_by_field_name("alias")
            if dotted is None or alias is None:
                continue
            bound, imported = node_text(alias), "".join(node_text(dotted).split())
        else:
            imported = "".join(node_text(target).split())
            bound = imported = imported.split(".")[0]
        found = python_module_file(module.path, imported, 0, module.layout)
        module.bindings[bound] = _Binding(None, None, found)


def _from_source(node: tree_sitter.Node) -> tuple[int, str] | None:
    """The module a `from m import ...` statement names: (leading dots, dotted name)."""
    source = node.child_by_field_name("module_name")
    if source is None:
        return None
    level, dotted = 0, ""
    if source.type == "relative_import":
        for child in source.named_children:
            if child.type == "import_prefix":
                level = node_text(child).count(".")
            elif child.type == "dotted_name":
                dotted = "".join(node_text(child).split())
    else:
        dotted = "".join(node_text(source).split())
    return level, dotted


def _bind_from_import(module: _Module, node: tree_sitter.Node) -> None:
    """`from m import x as y` binds `y` (name x of m, or module m.x); `*` is a star import."""
    source = _from_source(node)
    if source is None:
        return
    level, dotted = source
    origin = python_module_file(module.path, dotted, level, module.layout)
    if any(child.type == "wildcard_import" for child in node.named_children):
        if origin is not None:
            module.stars.append(origin)
        return
    prefix = f"{dotted}." if dotted else ""
    for target in node.children_by_field_name("name"):
        inner = target.child_by_field_name("name") if target.type == "aliased_import" else target
        alias = target.child_by_field_name("alias") if target.type == "aliased_import" else None
        if inner is None:
            continue
        name = "".join(node_text(inner).split())
        submodule = python_module_file(module.path, prefix + name, level, module.layout)
        bound = node_text(alias) if alias is not None else name
        module.bindings[bound] = _Binding(origin, name, submodule)


# ---------------------------------------------------------------------------------------------
# Resolution


@dataclass
class _Scope:
    """The code around the cursor: where names are looked up first."""

    module: _Module
    node: tree_sitter.Node | None  # the enclosing function, else the top-level statement
    owner: _Entity | None  # the class of the enclosing method
    locals: dict[str, tree_sitter.Node | None]  # local name -> its annotation / value, or None
    imports: dict[str, _Binding] = field(default_factory=dict)  # the function's own imports


@dataclass(frozen=True)
class Resolved:
    """What `DefinitionResolver.resolve` found: the definitions, most relevant first, and the
    enclosing function's qualified name (`Class.method`; None outside any function)."""

    scope: str | None
    definitions: list[Definition]


def _scope_position(text: str, offset: int, line: str) -> int:
    """The byte offset whose enclosing function is the cursor's: on an indented line with
    nothing typed yet, the end of the code before it (the parser ends a function at its last
    statement, so a new line in a body would otherwise lie outside it)."""
    if line and not line.strip():
        offset = len(text[:offset].rstrip())
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def _node_at(root: tree_sitter.Node, position: int) -> tree_sitter.Node | None:
    """The smallest node holding the byte before `position`."""
    return root.descendant_for_byte_range(max(position - 1, 0), position)


def _scope_name(text: str, offset: int) -> str | None:
    """The `def` / `class` headers enclosing the cursor's line by indentation ("App.go"),
    None at the top level. Read from the lines, not the parse: code being typed often does
    not parse, and the tree then puts the cursor outside its function. At the start of a line,
    the scope of the code above (a blank line inside a function is still inside it)."""
    if offset == 0 or text[offset - 1] == "\n":
        offset = len(text[:offset].rstrip())
    line_start = text.rfind("\n", 0, offset) + 1
    line = text[line_start:offset]
    indent = len(line) - len(line.lstrip()) if line.strip() else len(line)
    names: list[str] = []
    end = line_start - 1
    while indent > 0 and end > 0:
        start = text.rfind("\n", 0, end) + 1
        above, end = text[start:end], start - 1
        depth = len(above) - len(above.lstrip())
        if above.strip() and depth < indent:
            indent = depth
            header = _HEADER.match(above.lstrip())
            if header is not None:
                names.append(header.group(1))
    return ".".join(reversed(names)) or None


class DefinitionResolver:
    """Resolves the names used at a cursor to definitions in other files (see module doc)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._modules: OrderedDict[str, _Module] = OrderedDict()

    def resolve(self, path: str, text: str, offset: int, layout: WorkspaceLayout) -> Resolved:
        """Definitions for a cursor at character `offset` of `text` (file `path`), most
        relevant first, and its scope; none for languages other than Python."""
        if language_for_path(path) != parsing.PYTHON:
            return Resolved(None, [])
        current = _summarise(path, text, layout)
        if current is None:
            return Resolved(None, [])
        line = text[text.rfind("\n", 0, offset) + 1 : offset]
        position = _scope_position(text, offset, line)
        scope = self._scope(current, position)
        found: dict[tuple[str, str], Definition] = {}
        imported = self._imported_from(current, line, position)
        if imported is not None:  # its public names, a package's re-exports too, as headers
            for name in [*imported.module.symbols, *imported.module.bindings]:
                entity = None if name.startswith("_") else self._lookup(imported.module, name)
                if entity is not None and entity.kind != "module":
                    self._add(scope, entity, found, brief=True)
        receiver = _RECEIVER.search(line)
        if receiver is not None:
            self._collect(scope, receiver.group(1).split("."), found, whole_module=True)
        for chain in _chains(scope.node) if scope.node is not None else []:
            self._collect(scope, chain, found, whole_module=False)
        if scope.owner is not None:
            for base in self._bases(scope.owner):
                self._add(scope, base, found)
        for name in current.bindings:
            entity = self._lookup(current, name)
            if entity is not None and entity.kind != "module":
                self._add(scope, entity, found, brief=True)
        for name, binding in current.bindings.items():
            if binding.submodule is not None:
                self._collect(scope, [name], found, whole_module=True)
        return Resolved(_scope_name(text, offset), list(found.values()))

    # -- modules --------------------------------------------------------------------------------

    def _module(self, path: str, layout: WorkspaceLayout) -> _Module | None:
        """The summary of workspace file `path` (cached while its text and layout hold)."""
        if language_for_path(path) != parsing.PYTHON:
            return None
        text = self._source(path)
        if text is None:
            return None
        cached = self._modules.get(path)
        if cached is not None and cached.layout is layout and cached.text == text:
            self._modules.move_to_end(path)
            return cached
        module = _summarise(path, text, layout)
        if module is None:
            return None
        self._modules[path] = module
        while len(self._modules) > MODULE_CACHE:
            self._modules.popitem(last=False)
        return module

    def _lookup(self, module: _Module, name: str, depth: int = 0) -> _Entity | None:
        """What `name` means at the top level of `module`: a definition, an import (followed
        to its definition), a star import, or a submodule of a package."""
        if depth > MAX_DEPTH:
            return None
        node = module.symbols.get(name)
        if node is not None:
            return _symbol_entity(module, name, node)
        binding = module.bindings.get(name)
        if binding is not None:
            return self._follow(module, binding, depth)
        for star in module.stars:
            origin = self._module(star, module.layout)
            if origin is not None and not name.startswith("_"):
                found = self._lookup(origin, name, depth + 1)
                if found is not None:
                    return found
        if posixpath.basename(module.path).startswith("__init__."):
            directory = posixpath.dirname(module.path)
            submodule = module.layout.python_relative(directory, name)
            if submodule is not None and submodule != module.path:
                return self._module_entity(submodule, module.layout)
        return None

    def _follow(self, module: _Module, binding: _Binding, depth: int) -> _Entity | None:
        """The entity an import binding names."""
        if binding.module is not None and binding.name is not None:
            origin = self._module(binding.module, module.layout)
            if origin is not None and origin is not module:
                found = self._lookup(origin, binding.name, depth + 1)
                if found is not None:
                    return found
        if binding.submodule is not None:
            return self._module_entity(binding.submodule, module.layout)
        return None

    def _imported_from(self, module: _Module, line: str, position: int) -> _Entity | None:
        """The module whose names come next: the one a `from m import ` line being typed
        imports from, or the `from m import (...)` statement around byte `position`."""
        typed = _FROM_IMPORT.match(line)
        source = (len(typed.group(1)), typed.group(2)) if typed is not None else None
        node = _node_at(module.root, position)
        while source is None and node is not None:
            if node.type == "import_from_statement":
                source = _from_source(node)
                break
            node = node.parent
        if source is None:
            return None
        path = python_module_file(module.path, source[1], source[0], module.layout)
        return self._module_entity(path, module.layout) if path is not None else None

    def _module_entity(self, path: str, layout: WorkspaceLayout) -> _Entity | None:
        module = self._module(path, layout)
        return _Entity("module", module) if module is not None else None

    # -- members and types ----------------------------------------------------------------------

    def _member(self, entity: _Entity, name: str, depth: int = 0) -> _Entity | None:
        """Attribute `name` of a module, a class (bases searched) or a typed value."""
        if depth > MAX_DEPTH:
            return None
        if entity.kind == "module":
            return self._lookup(entity.module, name)
        if entity.kind in ("variable", "attribute"):
            kind = self._type_of(entity)
            return self._member(kind, name, depth + 1) if kind is not None else None
        if entity.kind != "class" or entity.node is None:
            return None
        member = _class_members(entity).get(name)
        if member is not None:
            return member
        for base in self._bases(entity):
            found = self._member(base, name, depth + 1)
            if found is not None:
                return found
        return None

    def _bases(self, entity: _Entity) -> list[_Entity]:
        """The classes a class derives from, as far as they resolve."""
        core = _unwrap(entity.node) if entity.node is not None else None
        bases = core.child_by_field_name("superclasses") if core is not None else None
        if bases is None:
            return []
        found = []
        for base in bases.named_children:
            chain = _chain(base)
            resolved = self._chain_in(entity.module, chain) if chain else None
            if resolved is not None and resolved.kind == "class" and resolved.node != entity.node:
                found.append(resolved)
        return found

    def _type_of(self, entity: _Entity) -> _Entity | None:
        """The class of a variable or attribute, from its annotation or assigned value."""
        if entity.type is None:
            return None
        return self._class_of(entity.module, entity.type)

    def _class_of(self, module: _Module, node: tree_sitter.Node) -> _Entity | None:
        """The first class a type expression (annotation, `Cls(...)` value) names in `module`."""
        for chain in _type_chains(node):
            found = self._chain_in(module, chain)
            if found is not None and found.kind == "class":
                return found
        return None

    def _called(self, entity: _Entity) -> _Entity | None:
        """What calling `entity` gives: a class's instance, a function's return annotation."""
        if entity.kind == "class":
            return entity
        if entity.kind in ("function", "method") and entity.node is not None:
            annotation = _unwrap(entity.node).child_by_field_name("return_type")
            if annotation is not None:
                return self._class_of(entity.module, annotation)
        return None

    def _chain_in(self, module: _Module, chain: list[str]) -> _Entity | None:
        """A dotted chain looked up from the top level of `module`."""
        entity = self._lookup(module, chain[0])
        return self._walk(entity, chain[1:])[-1] if entity is not None else None

    def _walk(self, entity: _Entity, rest: list[str]) -> list[_Entity]:
        """The entities along `rest` (names and "()" calls) from `entity`, as far as known."""
        trail = [entity]
        for part in rest:
            step = self._called(trail[-1]) if part == "()" else self._member(trail[-1], part)
            if step is None:
                break
            trail.append(step)
        return trail

    # -- the cursor's scope ---------------------------------------------------------------------

    def _scope(self, module: _Module, position: int) -> _Scope:
        """The enclosing function (and its class) of byte `position`, else its statement."""
        root = module.root
        node = _node_at(root, position)
        function = None
        while node is not None and node != root:
            if node.type == "function_definition" and function is None:
                function = node
            if node.parent == root:
                break
            node = node.parent
        if function is None:
            statement = node if node is not None and node != root else None
            return _Scope(module, statement, None, {})
        owner = self._owner(module, function)
        return _Scope(module, function, owner, _locals(function), _local_imports(module, function))

    def _owner(self, module: _Module, function: tree_sitter.Node) -> _Entity | None:
        """The class a method is defined in, as an entity (its qualified name by nesting)."""
        parent = function.parent
        if parent is not None and parent.type == "decorated_definition":
            parent = parent.parent
        if parent is None or parent.type != "block" or parent.parent is None:
            return None
        owner = parent.parent
        if owner.type != "class_definition":
            return None
        name = owner.child_by_field_name("name")
        wrapper = (
            owner.parent if owner.parent and owner.parent.type == "decorated_definition" else None
        )
        return _Entity("class", module, node_text(name) if name else "", wrapper or owner)

    def _head(self, scope: _Scope, name: str) -> _Entity | None:
        """What the first name of a chain means in the scope: `self`, a typed local, else a
        top-level name of the current file."""
        if name in scope.locals:
            if (
                scope.owner is not None
                and scope.node is not None
                and name == _first_parameter(scope.node)
            ):
                return scope.owner
            typed = scope.locals[name]
            return self._class_of(scope.module, typed) if typed is not None else None
        if name in scope.imports:
            return self._follow(scope.module, scope.imports[name], 0)
        return self._lookup(scope.module, name)

    def _collect(
        self,
        scope: _Scope,
        chain: list[str],
        found: dict[tuple[str, str], Definition],
        whole_module: bool,
    ) -> None:
        """Add the definitions along one chain (a module only when `whole_module`)."""
        head = self._head(scope, chain[0])
        if head is None:
            return
        trail = self._walk(head, chain[1:])
        for entity in trail:
            if entity.kind != "module" or (whole_module and entity is trail[-1]):
                self._add(scope, entity, found)
            if entity.kind in ("variable", "attribute"):
                kind = self._type_of(entity)
                if kind is not None:
                    self._add(scope, kind, found)

    @staticmethod
    def _add(
        scope: _Scope,
        entity: _Entity,
        found: dict[tuple[str, str], Definition],
        brief: bool = False,
    ) -> None:
        """Render `entity` (a member: its class) unless it lives in the current file; `brief`:
        its header only (a name the file imports but the code at the cursor does not use yet:
        many such headers fit where a few whole classes would)."""
        shown = entity.owner if entity.kind in ("method", "attribute") else entity
        if shown is None or shown.module.path == scope.module.path:
            return
        key = (shown.module.path, shown.name)
        if key in found:
            return
        rendered = shown.module.rendered
        cached = (shown.name, brief)
        if cached not in rendered:
            rendered[cached] = _render(shown, brief)
        definition = rendered[cached]
        if definition is not None:
            found[key] = definition


# ---------------------------------------------------------------------------------------------
# Syntax helpers


def _symbol_entity(module: _Module, name: str, node: tree_sitter.Node) -> _Entity:
    """The entity for a top-level symbol node of `module`."""
    core = _unwrap(node)
    if core.type == "class_definition":
        return _Entity("class", module, name, node)
    if core.type == "function_definition":
        return _Entity("function", module, name, node)
    assignment = _assignment(core)
    return _Entity("variable", module, name, node, type=_value_type(assignment))


def _value_type(assignment: tree_sitter.Node | None) -> tree_sitter.Node | None:
    """What gives an assignment's type: its annotation, else a call's callee."""
    if assignment is None:
        return None
    annotation = assignment.child_by_field_name("type")
    if annotation is not None:
        return annotation
    right = assignment.child_by_field_name("right")
    if right is not None and right.type == "call":
        return right.child_by_field_name("function")
    return None


def _class_members(entity: _Entity) -> dict[str, _Entity]:
    """Methods, class attributes and `self.x` attributes of a class, by name (cached)."""
    start = entity.node.start_byte if entity.node is not None else -1
    members = entity.module.members.get(start)
    if members is None:
        members = entity.module.members[start] = _find_members(entity)
    return members


def _find_members(entity: _Entity) -> dict[str, _Entity]:
    """Methods, class attributes and `self.x` attributes of a class, by name."""
    core = _unwrap(entity.node) if entity.node is not None else None
    body = core.child_by_field_name("body") if core is not None else None
    members: dict[str, _Entity] = {}
    if body is None:
        return members
    for node in body.named_children:
        inner = _unwrap(node)
        if inner.type == "function_definition":
            name = inner.child_by_field_name("name")
            if name is not None:
                qualified = f"{entity.name}.{node_text(name)}"
                members[node_text(name)] = _Entity(
                    "method", entity.module, qualified, node, owner=entity
                )
                for attribute, kind in _self_attributes(inner):
                    members.setdefault(
                        attribute,
                        _Entity("attribute", entity.module, qualified, None, entity, kind),
                    )
        elif (assignment := _assignment(inner)) is not None:
            for name_text in _assigned_names(assignment):
                members.setdefault(
                    name_text,
                    _Entity(
                        "attribute",
                        entity.module,
                        f"{entity.name}.{name_text}",
                        node,
                        entity,
                        _value_type(assignment),
                    ),
                )
    return members


def _self_attributes(
    method: tree_sitter.Node,
) -> Iterator[tuple[str, tree_sitter.Node | None]]:
    """`self.x = value` / `self.x: T = value` in a method: (x, what gives its type)."""
    receiver = _first_parameter(method)
    if receiver is None:
        return
    parameters = _locals(method)
    stack = [method.child_by_field_name("body")]
    while stack:
        node = stack.pop()
        if node is None or node.type in ("function_definition", "class_definition"):
            continue
        if node.type == "assignment":
            left = node.child_by_field_name("left")
            target = left.child_by_field_name("object") if left is not None else None
            if left is not None and left.type == "attribute" and target is not None:
                attribute = left.child_by_field_name("attribute")
                if node_text(target) == receiver and attribute is not None:
                    kind = _value_type(node)
                    right = node.child_by_field_name("right")
                    if kind is None and right is not None and right.type == "identifier":
                        kind = parameters.get(node_text(right))
                    yield node_text(attribute), kind
        stack.extend(reversed(node.named_children))


def _local_imports(module: _Module, function: tree_sitter.Node) -> dict[str, _Binding]:
    """The names the import statements in a function's body bind (nested functions aside)."""
    local = _Module(module.path, module.text, module.layout, module.root)
    stack = [function.child_by_field_name("body")]
    while stack:
        node = stack.pop()
        if node is None or node.type in ("function_definition", "class_definition"):
            continue
        if node.type == "import_statement":
            _bind_imports(local, node)
        elif node.type == "import_from_statement":
            _bind_from_import(local, node)
        else:
            stack.extend(node.named_children)
    return local.bindings


def _first_parameter(function: tree_sitter.Node) -> str | None:
    """The name of a function's first parameter (`self` of a method), or None."""
    parameters = function.child_by_field_name("parameters")
    if parameters is None or not parameters.named_children:
        return None
    first = parameters.named_children[0]
    return node_text(first) if first.type == "identifier" else None


def _locals(function: tree_sitter.Node) -> dict[str, tree_sitter.Node | None]:
    """Parameters and assigned names of a function, with what gives their type if known."""
    found: dict[str, tree_sitter.Node | None] = {}
    parameters = function.child_by_field_name("parameters")
    for parameter in parameters.named_children if parameters is not None else []:
        if parameter.type == "identifier":
            found[node_text(parameter)] = None
            continue
        name = parameter.child_by_field_name("name")
        if name is None:
            name = next((c for c in parameter.named_children if c.type == "identifier"), None)
        if name is not None:
            found[node_text(name)] = parameter.child_by_field_name("type")
    stack = [function.child_by_field_name("body")]
    while stack:
        node = stack.pop()
        if node is None or node.type in ("function_definition", "class_definition", "lambda"):
            continue
        if node.type == "assignment":
            for name_text in _assigned_names(node):
                if found.get(name_text) is None:
                    found[name_text] = _value_type(node)
        elif node.type in ("for_statement", "with_item", "as_pattern"):
            for target in _targets(node):
                found.setdefault(target, None)
        stack.extend(node.named_children)
    return found


def _targets(node: tree_sitter.Node) -> list[str]:
    """Names bound by a for loop or an `as` clause."""
    target = node.child_by_field_name("left") or node.child_by_field_name("alias")
    if target is None and node.type == "with_item":
        value = node.child_by_field_name("value")
        target = value.child_by_field_name("alias") if value is not None else None
    if target is None:
        return []
    return [node_text(n) for n in _identifiers_in(target)]


def _identifiers_in(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    """The identifier nodes under `node` (itself included), in source order."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        if current.type == "identifier":
            found.append(current)
        stack.extend(reversed(current.named_children))
    return found


def _chain(node: tree_sitter.Node) -> list[str] | None:
    """`a.b.c` -> [a, b, c]; `f(x).y` -> [f, "()", y]; None for other expressions."""
    parts: list[str] = []
    while True:
        if node.type == "identifier":
            return [node_text(node), *reversed(parts)]
        if node.type == "attribute":
            attribute, inner = (
                node.child_by_field_name("attribute"),
                node.child_by_field_name("object"),
            )
            if attribute is None or inner is None:
                return None
            parts.append(node_text(attribute))
        elif node.type == "call":
            inner = node.child_by_field_name("function")
            if inner is None:
                return None
            parts.append("()")
        else:
            return None
        node = inner


def _chains(scope: tree_sitter.Node) -> Iterator[list[str]]:
    """Every name and attribute chain used in `scope`, in source order (a chain's prefixes
    come too, as its object is visited after it)."""
    stack = [scope]
    while stack:
        node = stack.pop()
        if node.type in ("identifier", "attribute", "call"):
            parent = node.parent
            is_name = (
                parent is not None
                and parent.type in ("attribute", "keyword_argument")
                and node
                == parent.child_by_field_name("attribute" if parent.type == "attribute" else "name")
            )
            chain = None if is_name else _chain(node)
            if chain is not None:
                yield chain
        stack.extend(reversed(node.named_children))


def _type_chains(node: tree_sitter.Node) -> Iterator[list[str]]:
    """The names a type expression mentions (`Optional["a.B"]` -> [Optional], [a, B])."""
    if node.type == "string":
        content = node_text(node).strip("'\"")
        if _DOTTED.fullmatch(content):
            yield content.split(".")
        return
    chain = _chain(node)
    if chain is not None and "()" not in chain:
        yield chain
        return
    for child in node.named_children:
        yield from _type_chains(child)


# ---------------------------------------------------------------------------------------------
# Rendering


def _render(entity: _Entity, brief: bool = False) -> Definition | None:
    """The compact text of a class, function, variable or module, with its shorter forms;
    `brief`: without the longest form (a class's members, a function's docstring line)."""
    module = entity.module
    if entity.kind == "module":
        return Definition(module.path, "", 0, _module_outline(module))
    if entity.node is None:
        return None
    core = _unwrap(entity.node)
    if entity.kind == "class":
        forms = [_class_outline(entity), _class_header(entity), _header(core) + " ..."]
    elif entity.kind == "function":
        forms = [
            _signature(entity.node, docstring=True),
            _signature(entity.node, docstring=False),
            _name_line(core),
        ]
    else:
        forms = [_variable_line(core)]
    if brief and len(forms) > 1:
        forms = forms[1:]
    forms = list(dict.fromkeys(forms))
    return Definition(module.path, entity.name, entity.node.start_byte, forms[0], tuple(forms[1:]))


def _name_line(core: tree_sitter.Node) -> str:
    """A function's name with its parameters elided: `def send(...): ...`."""
    name = core.child_by_field_name("name")
    prefix = "async def" if core.children and core.children[0].type == "async" else "def"
    return f"{prefix} {node_text(name) if name is not None else ''}(...): ..."


def _signature(node: tree_sitter.Node, docstring: bool) -> str:
    """A function's decorators (plain ones), signature and first docstring line, body elided."""
    core = _unwrap(node)
    body = core.child_by_field_name("body")
    decorators = [
        node_text(d)
        for d in node.named_children
        if d.type == "decorator" and _PLAIN_DECORATOR.fullmatch(node_text(d))
    ]
    header = _header(core)
    lines = [*decorators, header + " ..."]
    statements = body.named_children if body is not None else []
    if docstring and statements and is_docstring(statements[0]):
        lines[-1] = header + "\n    " + docstring_line(statements[0])
    return "\n".join(lines)


def _header(core: tree_sitter.Node) -> str:
    """A function's or class's text up to its body (`def f(x) -> int:`), on one line."""
    body = core.child_by_field_name("body")
    end = body.start_byte if body is not None else core.end_byte
    text = node_text(core).encode("utf-8", "surrogatepass")[: end - core.start_byte]
    return _one_line(text.decode("utf-8", "replace").rstrip())


def _one_line(header: str) -> str:
    """A signature written over several lines, on one."""
    if "\n" not in header:
        return header
    joined = re.sub(r"\s*\n\s*", " ", header)
    joined = re.sub(r"([(\[]) ", r"\1", joined)
    return re.sub(r",? ([)\]])", r"\1", joined)


def _variable_line(node: tree_sitter.Node) -> str:
    """An assignment with a long value elided: `NAMES = [ ... ]`."""
    assignment = _assignment(node)
    right = assignment.child_by_field_name("right") if assignment is not None else None
    text = node_text(node)
    if right is not None and is_long(right):
        start = right.start_byte - node.start_byte
        head = text.encode("utf-8", "surrogatepass")[:start].decode("utf-8", "replace")
        return head + bracketed_ellipsis(node_text(right))
    return text


def _class_outline(entity: _Entity) -> str:
    """`class C(Base):`, its docstring line, then its public members one line each."""
    node = entity.node
    assert node is not None
    core = _unwrap(node)
    body = core.child_by_field_name("body")
    lines = [_header(core)]
    statements = body.named_children if body is not None else []
    if statements and is_docstring(statements[0]):
        lines.append("    " + docstring_line(statements[0]))
    members: list[str] = []
    attributes: list[str] = []
    for name, member in _class_members(entity).items():
        if name.startswith("_") and name not in _KEPT_DUNDERS:
            continue
        if member.kind == "method" and member.node is not None:
            text = _signature(member.node, docstring=False)
            members.append("\n".join("    " + line for line in text.splitlines()))
        elif member.node is not None:
            attributes.append("    " + _variable_line(_unwrap(member.node)))
        else:
            # Only an annotation says the type; a value's callee may be any function.
            annotated = member.type is not None and member.type.type == "type"
            kind = node_text(member.type) if member.type is not None and annotated else ""
            attributes.append(f"    {name}: {kind}" if kind and len(kind) < 60 else f"    {name}")
    shown = (attributes + members)[:MAX_MEMBERS]
    if not shown and len(lines) == 1:
        shown = ["    ..."]
    return "\n".join(lines + list(dict.fromkeys(shown)))


def _class_header(entity: _Entity) -> str:
    """`class C(Base):` and its `__init__` signature."""
    assert entity.node is not None
    lines = [_header(_unwrap(entity.node))]
    init = _class_members(entity).get("__init__")
    if init is not None and init.kind == "method" and init.node is not None:
        lines.append("    " + _header(_unwrap(init.node)) + " ...")
    return "\n".join(lines if len(lines) > 1 else [lines[0] + " ..."])


def _module_outline(module: _Module) -> str:
    """The public top-level names of a module: signatures, class headers, assignments."""
    lines = []
    for name, node in module.symbols.items():
        if name.startswith("_"):
            continue
        core = _unwrap(node)
        if core.type == "function_definition":
            lines.append(_signature(node, docstring=False))
        elif core.type == "class_definition":
            lines.append(_header(core) + " ...")
        else:
            lines.append(_variable_line(core))
        if len(lines) == MAX_MEMBERS:
            break
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Budget


def select_definitions(
    definitions: list[Definition], count: TokenCounter, budget_tokens: int
) -> tuple[list[ContextPiece], int]:
    """Definitions, most relevant first, packed into one piece per defining file (in source
    order inside it) while the pieces cost at most `budget_tokens` (each its text plus the
    <|file_sep|> token). Two passes: every definition in turn as its shortest form while it
    fits (a class's header line, a function's name), so that a small budget still names many;
    then, in the same order, each shown one as the longest form the tokens left allow. Returns
    the pieces, in order of their files' first definition, and the tokens left."""
    packing = _Packing(count, budget_tokens)
    shown = [d for d in definitions if d.forms and packing.put(d, d.forms[-1])]
    for definition in shown:
        for text in definition.forms[:-1]:
            if packing.put(definition, text):
                break
    return packing.pieces(), packing.left


class _Packing:
    """Definitions' texts grouped in one piece per file, within a token budget."""

    def __init__(self, count: TokenCounter, budget_tokens: int) -> None:
        self.count = count
        self.left = budget_tokens
        self.groups: dict[str, dict[tuple[int, str], str]] = {}  # path -> (start, name) -> text
        self.costs: dict[str, int] = {}

    def put(self, definition: Definition, text: str) -> bool:
        """Show `definition` as `text` (in place of its text so far) if the tokens left allow."""
        group = {**self.groups.get(definition.path, {}), (definition.start, definition.name): text}
        cost = self.count(_piece(definition.path, group).text()) + 1
        extra = cost - self.costs.get(definition.path, 0)
        if extra > self.left:
            return False
        self.groups[definition.path], self.costs[definition.path] = group, cost
        self.left -= extra
        return True

    def pieces(self) -> list[ContextPiece]:
        return [_piece(path, group) for path, group in self.groups.items()]


def _piece(path: str, group: dict[tuple[int, str], str]) -> ContextPiece:
    """One file's definitions (texts by start and name) as a prompt piece, in source order."""
    return ContextPiece(path, "\n\n".join(group[key] for key in sorted(group)), outlined=True)
