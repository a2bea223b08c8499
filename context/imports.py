"""Per-language import extraction and resolution to workspace files.

Two steps, so that the costly one runs only when a file's text changes:

* `extract_imports(path, text)` parses one file with tree-sitter and returns its imports as
  written (`ImportRef`); it needs nothing but the text.
* `resolve_imports(path, refs, layout)` maps those refs to workspace files with dictionary lookups
  in a `WorkspaceLayout`, which is built once from the set of workspace paths and the texts of the
  few config files resolution needs (go.mod, tsconfig.json/jsconfig.json, Cargo.toml). Re-resolving
  every file after a file is added or removed is therefore cheap.

Imports that leave the workspace (standard libraries, npm packages, crates.io, system headers)
resolve to nothing: only workspace files are prompt material.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import tree_sitter

from context import parsing
from context.parsing import captures, language_for_path, node_text

logger = logging.getLogger(__name__)

ImportKind = Literal[
    "import",  # Python `import a.b`, JS/TS `import ... from`, Go import spec, Java single-type
    "from",  # Python `from a.b import c` (names = ("c",); module "" for `from . import c`)
    "export",  # JS/TS `export ... from`
    "require",  # JS/TS `require("x")`, TS `import x = require("x")`
    "dynamic",  # JS/TS `import("x")`
    "mod",  # Rust `mod x;` (module "a::x" when nested in inline `mod a { }`)
    "mod_path",  # Rust `#[path = "p.rs"] mod x;` (module is the path attribute)
    "use",  # Rust `use` path, "::"-joined, relative to the file's module
    "static",  # Java `import static a.B.m;` (module "a.B.m") or `import static a.B.*` ("a.B")
    "wildcard",  # Java `import a.b.*;` (module "a.b")
    "package",  # Java `package a.b;` (context for same_package refs, not a dependency)
    "same_package",  # Java type name used without an import (module "Name")
    "include",  # C/C++ `#include "x.h"`
    "system_include",  # C/C++ `#include <x.h>`
]


@dataclass(frozen=True, slots=True)
class ImportRef:
    """One import target as written in a file, before resolution."""

    kind: ImportKind
    module: str
    names: tuple[str, ...] = ()
    level: int = 0  # Python relative-import dots


# Config files whose texts `WorkspaceLayout` reads (by basename).
CONFIG_FILES = frozenset({"go.mod", "tsconfig.json", "jsconfig.json", "Cargo.toml"})

_PY_EXTS = (".py", ".pyi")
_JS_LANGS = frozenset({parsing.JAVASCRIPT, parsing.TYPESCRIPT, parsing.TSX})
_JS_EXTS = (".ts", ".tsx", ".d.ts", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts")
# An ESM import of "./x.js" names the compiled output; the source may be x.ts.
_JS_OUTPUT_TO_SOURCE = {
    ".js": (".ts", ".tsx", ".d.ts"),
    ".jsx": (".tsx",),
    ".mjs": (".mts",),
    ".cjs": (".cts",),
}
_C_LANGS = frozenset({parsing.C, parsing.CPP})
_RUST_CRATE_ROOT_DIRS = frozenset({"bin", "examples", "tests", "benches"})


# ---------------------------------------------------------------------------------------------
# Extraction


def extract_imports(path: str, text: str, tree: tree_sitter.Tree | None = None) -> list[ImportRef]:
    """The imports of one file, in source order, without duplicates.

    `tree` may be passed when the caller already parsed `text`. Unsupported languages and files
    that fail to parse give an empty list; tree-sitter recovers from syntax errors, so a file
    being edited still yields the imports that parse.
    """
    language = language_for_path(path)
    if language is None:
        return []
    if tree is None:
        tree = parsing.parse(path, text)
        if tree is None:
            return []
    root = tree.root_node
    if language == parsing.PYTHON:
        refs = _python_imports(root)
    elif language in _JS_LANGS:
        refs = _js_imports(language, root)
    elif language == parsing.GO:
        refs = _go_imports(root)
    elif language == parsing.RUST:
        refs = _rust_imports(root)
    elif language == parsing.JAVA:
        refs = _java_imports(root)
    elif language in _C_LANGS:
        refs = _c_imports(language, root)
    else:
        refs = []
    return list(dict.fromkeys(refs))


_PY_QUERY = """
(import_statement) @import
(import_from_statement) @from
"""


def _python_imports(root: tree_sitter.Node) -> list[ImportRef]:
    found = captures(parsing.PYTHON, _PY_QUERY, root)
    nodes = sorted(found.get("import", []) + found.get("from", []), key=lambda n: n.start_byte)
    refs: list[ImportRef] = []
    for node in nodes:
        if node.type == "import_statement":
            for name in node.children_by_field_name("name"):
                refs.append(ImportRef("import", _dotted(name)))
            continue
        module_node = node.child_by_field_name("module_name")
        if module_node is None:
            continue
        level = 0
        module = ""
        if module_node.type == "relative_import":
            for child in module_node.named_children:
                if child.type == "import_prefix":
                    level = node_text(child).count(".")
                elif child.type == "dotted_name":
                    module = _dotted(child)
        else:
            module = _dotted(module_node)
        names = [_dotted(n) for n in node.children_by_field_name("name")]
        if any(child.type == "wildcard_import" for child in node.named_children):
            names.append("*")
        refs.append(ImportRef("from", module, tuple(names), level))
    return refs


def _dotted(node: tree_sitter.Node) -> str:
    # `aliased_import` -> its dotted name; whitespace inside `a . b` is legal and dropped.
    if node.type == "aliased_import":
        inner = node.child_by_field_name("name")
        if inner is not None:
            node = inner
    return "".join(node_text(node).split())


_JS_QUERY = """
(import_statement source: (string (string_fragment) @import))
(export_statement source: (string (string_fragment) @export))
(call_expression
  function: (identifier) @_fn
  arguments: (arguments . (string (string_fragment) @require)))
(call_expression function: (import) arguments: (arguments . (string (string_fragment) @dynamic)))
"""
_TS_QUERY = (
    _JS_QUERY
    + """
(import_require_clause source: (string (string_fragment) @require))
"""
)


def _js_imports(language: str, root: tree_sitter.Node) -> list[ImportRef]:
    query = _JS_QUERY if language == parsing.JAVASCRIPT else _TS_QUERY
    found = captures(language, query, root)
    refs: list[tuple[int, ImportRef]] = []
    for kind in ("import", "export", "require", "dynamic"):
        for node in found.get(kind, []):
            if kind == "require" and not _is_require_call(node):
                continue
            refs.append((node.start_byte, ImportRef(kind, node_text(node))))
    return [ref for _, ref in sorted(refs, key=lambda item: item[0])]


def _is_require_call(fragment: tree_sitter.Node) -> bool:
    # The query matches every call whose first argument is a string literal; keep `require(...)`
    # (and the TS `import x = require(...)` clause, whose parent chain has no call).
    call = fragment.parent.parent.parent if fragment.parent and fragment.parent.parent else None
    if call is None or call.type != "call_expression":
        return True
    function = call.child_by_field_name("function")
    return function is not None and node_text(function) == "require"


_GO_QUERY = "(import_spec path: (_) @path)"


def _go_imports(root: tree_sitter.Node) -> list[ImportRef]:
    found = captures(parsing.GO, _GO_QUERY, root)
    return [ImportRef("import", node_text(n).strip('"`')) for n in found.get("path", [])]


_RUST_QUERY = """
(mod_item) @mod
(use_declaration argument: (_) @use)
"""


def _rust_imports(root: tree_sitter.Node) -> list[ImportRef]:
    found = captures(parsing.RUST, _RUST_QUERY, root)
    items = sorted(found.get("mod", []) + found.get("use", []), key=lambda n: n.start_byte)
    refs: list[ImportRef] = []
    for node in items:
        scope = _rust_inline_scope(node)
        if node.type == "mod_item":
            name = node.child_by_field_name("name")
            if name is None or node.child_by_field_name("body") is not None:
                continue  # an inline module is no file; its `mod x;` children are.
            attribute_path = _rust_path_attribute(node)
            if attribute_path is not None and not scope:
                refs.append(ImportRef("mod_path", attribute_path))
            else:
                refs.append(ImportRef("mod", "::".join([*scope, node_text(name)])))
            continue
        for segments in _rust_use_paths(node, []):
            segments = _rust_rebase(segments, scope)
            if segments:
                refs.append(ImportRef("use", "::".join(segments)))
    return refs


def _rust_inline_scope(node: tree_sitter.Node) -> list[str]:
    # Names of the inline `mod a { ... }` blocks around `node`, outermost first.
    scope: list[str] = []
    parent = node.parent
    while parent is not None:
        if parent.type == "mod_item":
            name = parent.child_by_field_name("name")
            if name is not None:
                scope.append(node_text(name))
        parent = parent.parent
    scope.reverse()
    return scope


def _rust_path_attribute(mod_item: tree_sitter.Node) -> str | None:
    sibling = mod_item.prev_named_sibling
    while sibling is not None and sibling.type == "attribute_item":
        text = "".join(node_text(sibling).split())
        match = re.fullmatch(r'#\[path="([^"]+)"\]', text)
        if match:
            return match.group(1)
        sibling = sibling.prev_named_sibling
    return None


def _rust_use_paths(node: tree_sitter.Node, prefix: list[str]) -> list[list[str]]:
    """Expand a use tree (`a::{b, c::d as e, f::*}`) into its paths."""
    kind = node.type
    if kind == "use_as_clause":
        path = node.child_by_field_name("path")
        return _rust_use_paths(path, prefix) if path is not None else []
    if kind == "use_wildcard":
        inner = node.named_children
        return [prefix + _rust_segments(inner[0])] if inner else [prefix]
    if kind == "scoped_use_list":
        path = node.child_by_field_name("path")
        head = prefix + (_rust_segments(path) if path is not None else [])
        items = node.child_by_field_name("list")
        return _rust_use_paths(items, head) if items is not None else [head]
    if kind == "use_list":
        paths: list[list[str]] = []
        for child in node.named_children:
            paths.extend(_rust_use_paths(child, prefix))
        return paths
    if kind == "self" and prefix:
        return [prefix]  # `use a::{self}` names `a` itself.
    if kind in ("scoped_identifier", "identifier", "crate", "self", "super", "metavariable"):
        return [prefix + _rust_segments(node)]
    return []


def _rust_segments(node: tree_sitter.Node) -> list[str]:
    return [part for part in "".join(node_text(node).split()).split("::") if part]


def _rust_rebase(segments: list[str], scope: list[str]) -> list[str]:
    """Rewrite a path used inside inline modules `scope` relative to the file's own module."""
    if not scope or not segments or segments[0] not in ("self", "super"):
        return segments
    if segments[0] == "self":
        return ["self", *scope, *segments[1:]]
    ups = 0
    while ups < len(segments) and segments[ups] == "super":
        ups += 1
    rest = segments[ups:]
    if ups <= len(scope):
        return ["self", *scope[: len(scope) - ups], *rest]
    return ["super"] * (ups - len(scope)) + rest


_JAVA_QUERY = """
(package_declaration) @package
(import_declaration) @import
(type_identifier) @type
(method_invocation object: (identifier) @type)
(field_access object: (identifier) @type)
"""


def _java_imports(root: tree_sitter.Node) -> list[ImportRef]:
    found = captures(parsing.JAVA, _JAVA_QUERY, root)
    refs: list[ImportRef] = []
    for node in found.get("package", [])[:1]:
        names = [c for c in node.named_children if c.type in ("scoped_identifier", "identifier")]
        if names:
            refs.append(ImportRef("package", "".join(node_text(names[0]).split())))
    imported: set[str] = set()
    for node in found.get("import", []):
        is_static = any(child.type == "static" for child in node.children)
        wildcard = any(child.type == "asterisk" for child in node.children)
        names = [c for c in node.named_children if c.type in ("scoped_identifier", "identifier")]
        if not names:
            continue
        module = "".join(node_text(names[0]).split())
        if is_static:
            refs.append(ImportRef("static", module))
        elif wildcard:
            refs.append(ImportRef("wildcard", module))
        else:
            refs.append(ImportRef("import", module))
            imported.add(module.rsplit(".", 1)[-1])
    # Classes of the same package need no import; a capitalized name used as a type or as a
    # call receiver may be one (resolution keeps it only if Name.java sits next to the file).
    used = dict.fromkeys(node_text(n) for n in found.get("type", []))
    for name in used:
        if name[:1].isupper() and name not in imported:
            refs.append(ImportRef("same_package", name))
    return refs


_C_QUERY = """
(preproc_include path: (string_literal) @include)
(preproc_include path: (system_lib_string) @system_include)
"""


def _c_imports(language: str, root: tree_sitter.Node) -> list[ImportRef]:
    found = captures(language, _C_QUERY, root)
    refs: list[tuple[int, ImportRef]] = []
    for node in found.get("include", []):
        refs.append((node.start_byte, ImportRef("include", node_text(node).strip('"'))))
    for node in found.get("system_include", []):
        refs.append((node.start_byte, ImportRef("system_include", node_text(node).strip("<>"))))
    return [ref for _, ref in sorted(refs, key=lambda item: item[0])]


# ---------------------------------------------------------------------------------------------
# Workspace layout


def config_paths(paths: Iterable[str]) -> list[str]:
    """The workspace files whose texts `WorkspaceLayout` wants (go.mod, tsconfig.json, ...)."""
    return sorted(p for p in paths if posixpath.basename(p) in CONFIG_FILES)


@dataclass(frozen=True, slots=True)
class _TsConfig:
    directory: str  # where tsconfig.json is; it governs files below
    base_url: str | None  # workspace-relative directory, or None
    paths: tuple[tuple[str, tuple[str, ...]], ...]  # pattern -> substitutions
    paths_base: str  # what `paths` substitutions are relative to


class WorkspaceLayout:
    """Lookup tables over the workspace's files for resolving imports of every language.

    `paths` are workspace-relative POSIX paths; `configs` maps config file paths (see
    `config_paths`) to their texts. Build a new layout when the set of files changes; resolution
    then costs a few dictionary lookups per import.
    """

    def __init__(self, paths: Iterable[str], configs: Mapping[str, str] | None = None) -> None:
        self.paths: frozenset[str] = frozenset(paths)
        configs = configs or {}
        files_in: defaultdict[str, list[str]] = defaultdict(list)
        directories: set[str] = {""}
        for path in self.paths:
            directory = posixpath.dirname(path)
            files_in[directory].append(path)
            while directory and directory not in directories:
                directories.add(directory)
                directory = posixpath.dirname(directory)
        for files in files_in.values():
            files.sort()
        self._files_in: dict[str, list[str]] = dict(files_in)
        self._directories = frozenset(directories)
        self._build_python()
        self._build_tsconfigs(configs)
        self._build_go(configs)
        self._build_rust(configs)
        self._build_java()
        self._build_c()

    def files_in(self, directory: str) -> list[str]:
        """The files directly inside `directory` ("" is the workspace root), sorted."""
        return self._files_in.get(directory, [])

    # -- Python ---------------------------------------------------------------------------------

    def _build_python(self) -> None:
        # Packages are directories with __init__.py; a file's import name is its path from the
        # directory above its outermost package, or from a source root ("" and any `src/`) for
        # namespace packages and plain modules.
        self._py_packages = frozenset(
            posixpath.dirname(p)
            for p in self.paths
            if posixpath.basename(p) in ("__init__.py", "__init__.pyi")
        )
        roots = {""} | {d for d in self._directories if posixpath.basename(d) == "src"}
        roots |= {self._py_package_root(d) for d in self._py_packages}
        self._py_roots = frozenset(roots)
        index: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
        for path in self.paths:
            if not path.endswith(_PY_EXTS):
                continue
            directory = posixpath.dirname(path)
            bases = {self._py_package_root(directory)}
            ancestor = directory
            while True:
                if ancestor in self._py_roots:
                    bases.add(ancestor)
                if not ancestor:
                    break
                ancestor = posixpath.dirname(ancestor)
            for base in bases:
                name = _python_module_name(path, base)
                if name:
                    index[name].append((base, path))
        self._py_modules: dict[str, list[tuple[str, str]]] = dict(index)

    def _py_package_root(self, directory: str) -> str:
        while directory in self._py_packages and directory:
            directory = posixpath.dirname(directory)
        return directory

    def python_module(self, name: str, importer: str) -> str | None:
        """The file of absolute module `name` as seen from `importer`, or None if external."""
        candidates = self._py_modules.get(name)
        if not candidates:
            return None
        own_root = self._py_package_root(posixpath.dirname(importer))
        visible = [p for root, p in candidates if root in self._py_roots or root == own_root]
        if not visible:
            return None
        return _nearest(visible, importer, prefer=".py")

    def python_relative(self, directory: str, dotted: str) -> str | None:
        """The module file of `dotted` (may be "") inside `directory`, or None."""
        base = posixpath.join(directory, *dotted.split(".")) if dotted else directory
        if dotted:
            for ext in _PY_EXTS:
                if base + ext in self.paths:
                    return base + ext
        for ext in _PY_EXTS:
            init = posixpath.join(base, "__init__" + ext)
            if init in self.paths:
                return init
        return None

    # -- JavaScript / TypeScript ----------------------------------------------------------------

    def _build_tsconfigs(self, configs: Mapping[str, str]) -> None:
        tsconfigs: list[_TsConfig] = []
        for path, text in configs.items():
            if posixpath.basename(path) not in ("tsconfig.json", "jsconfig.json"):
                continue
            try:
                data = _load_jsonc(text)
            except ValueError as error:
                logger.info("ignoring %s: %s", path, error)
                continue
            options = data.get("compilerOptions") if isinstance(data, dict) else None
            if not isinstance(options, dict):
                options = {}
            directory = posixpath.dirname(path)
            base_url = options.get("baseUrl")
            base = _join(directory, base_url) if isinstance(base_url, str) else None
            patterns: list[tuple[str, tuple[str, ...]]] = []
            raw_paths = options.get("paths")
            if isinstance(raw_paths, dict):
                for pattern, targets in raw_paths.items():
                    if isinstance(targets, list):
                        subs = tuple(t for t in targets if isinstance(t, str))
                        patterns.append((pattern, subs))
            paths_base = base if base is not None else directory
            tsconfigs.append(_TsConfig(directory, base, tuple(patterns), paths_base or ""))
        # Nearest config first: the deepest directory that contains the importer.
        tsconfigs.sort(key=lambda c: (-len(c.directory), c.directory))
        self._tsconfigs = tsconfigs

    def js_file(self, base: str | None) -> str | None:
        """The JS/TS file a specifier resolved to `base` names (extensions, index files)."""
        if base is None:
            return None
        if base in self.paths and language_for_path(base) in _JS_LANGS:
            return base
        for ext in _JS_EXTS:
            if base + ext in self.paths:
                return base + ext
        stem, ext = posixpath.splitext(base)
        for source_ext in _JS_OUTPUT_TO_SOURCE.get(ext, ()):
            if stem + source_ext in self.paths:
                return stem + source_ext
        for ext in _JS_EXTS:
            index = posixpath.join(base, "index" + ext)
            if index in self.paths:
                return index
        return None

    def js_bare(self, specifier: str, importer: str) -> str | None:
        """A non-relative specifier through tsconfig `paths`/`baseUrl`; None if a package."""
        for config in self._tsconfigs:
            if not _is_under(posixpath.dirname(importer), config.directory):
                continue
            best: tuple[int, str, tuple[str, ...]] | None = None
            for pattern, subs in config.paths:
                star = _match_pattern(pattern, specifier)
                if star is None:
                    continue
                prefix_length = len(pattern.split("*", 1)[0])
                if best is None or prefix_length > best[0]:
                    best = (prefix_length, star, subs)
            if best is not None:
                _, star, subs = best
                for sub in subs:
                    found = self.js_file(_join(config.paths_base, sub.replace("*", star)))
                    if found is not None:
                        return found
            if config.base_url is not None:
                return self.js_file(_join(config.base_url, specifier))
            return None
        return None

    # -- Go -------------------------------------------------------------------------------------

    def _build_go(self, configs: Mapping[str, str]) -> None:
        modules: list[tuple[str, str]] = []
        for path, text in configs.items():
            if posixpath.basename(path) != "go.mod":
                continue
            match = re.search(r'^\s*module\s+"?([^\s"/][^\s"]*)"?', text, re.MULTILINE)
            if match:
                modules.append((match.group(1), posixpath.dirname(path)))
        # Longest module path first: nested modules own their subtrees.
        modules.sort(key=lambda m: (-len(m[0]), m[0]))
        self._go_modules = modules

    def go_package(self, import_path: str) -> list[str]:
        """The non-test .go files of a package under a workspace go.mod module path."""
        for module, directory in self._go_modules:
            if import_path == module:
                package_dir = directory
            elif import_path.startswith(module + "/"):
                package_dir = _join(directory, import_path[len(module) + 1 :]) or ""
            else:
                continue
            return [
                p
                for p in self.files_in(package_dir)
                if p.endswith(".go") and not p.endswith("_test.go")
            ]
        return []

    # -- Rust -----------------------------------------------------------------------------------

    def _build_rust(self, configs: Mapping[str, str]) -> None:
        crates: dict[str, str] = {}
        for path, text in sorted(configs.items()):
            if posixpath.basename(path) != "Cargo.toml":
                continue
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                logger.info("ignoring %s: %s", path, error)
                continue
            package = data.get("package")
            name = package.get("name") if isinstance(package, dict) else None
            if not isinstance(name, str):
                continue  # a virtual workspace manifest
            lib = data.get("lib")
            lib_name = lib.get("name") if isinstance(lib, dict) else None
            lib_path = lib.get("path") if isinstance(lib, dict) else None
            directory = posixpath.dirname(path)
            root = (
                _join(directory, lib_path)
                if isinstance(lib_path, str)
                else posixpath.join(directory, "src", "lib.rs")
            )
            if root is None or root not in self.paths:
                root = posixpath.join(directory, "src", "main.rs")
            crate_name = lib_name if isinstance(lib_name, str) else name
            crates[crate_name.replace("-", "_")] = root
        self._rust_crates = crates

    def rust_crate_root(self, directory: str) -> str | None:
        """The crate root file (lib.rs, else main.rs) of the crate holding `directory`."""
        while True:
            for name in ("lib.rs", "main.rs"):
                candidate = posixpath.join(directory, name)
                if candidate in self.paths:
                    return candidate
            if not directory:
                return None
            directory = posixpath.dirname(directory)

    def rust_crate(self, name: str) -> str | None:
        """The crate root file of workspace crate `name` (from Cargo.toml), or None."""
        root = self._rust_crates.get(name)
        return root if root in self.paths else None

    def rust_module_file(self, directory: str, segments: list[str]) -> str | None:
        """The file of module `segments` below a module directory: x.rs or x/mod.rs."""
        base = posixpath.join(directory, *segments)
        for candidate in (base + ".rs", posixpath.join(base, "mod.rs")):
            if candidate in self.paths:
                return candidate
        return None

    # -- Java -----------------------------------------------------------------------------------

    def _build_java(self) -> None:
        # A qualified name a.b.C may sit under any source root (src/main/java, module/src, ...):
        # index every dotted suffix of every .java path and of every directory holding one.
        types: defaultdict[str, list[str]] = defaultdict(list)
        packages: defaultdict[str, list[str]] = defaultdict(list)
        for directory, files in self._files_in.items():
            java = [p for p in files if p.endswith(".java")]
            if not java:
                continue
            parts = directory.split("/") if directory else []
            for i in range(len(parts)):
                packages[".".join(parts[i:])].append(directory)
            for path in java:
                stem = posixpath.basename(path)[: -len(".java")]
                for i in range(len(parts)):
                    types[".".join([*parts[i:], stem])].append(path)
        self._java_types = dict(types)
        self._java_packages = dict(packages)

    def java_type(self, qualified: str, importer: str) -> str | None:
        """The file declaring top-level type `qualified` (or an outer type of it), or None."""
        parts = qualified.split(".")
        for end in range(len(parts), 1, -1):
            candidates = self._java_types.get(".".join(parts[:end]))
            if candidates:
                return _nearest(candidates, importer)
        return None

    def java_package(self, package: str, importer: str) -> list[str]:
        """The .java files of package `package` (nearest source root), or []."""
        directories = self._java_packages.get(package)
        if not directories:
            return []
        directory = _nearest(directories, importer)
        return [p for p in self.files_in(directory) if p.endswith(".java")]

    # -- C / C++ --------------------------------------------------------------------------------

    def _build_c(self) -> None:
        self._include_roots = sorted(
            d for d in self._directories if posixpath.basename(d) == "include"
        )
        by_name: defaultdict[str, list[str]] = defaultdict(list)
        for path in self.paths:
            if language_for_path(path) in _C_LANGS:
                by_name[posixpath.basename(path)].append(path)
        self._c_by_name = dict(by_name)

    def c_include(self, spec: str, importer: str, quoted: bool) -> str | None:
        """The file `#include "spec"` (quoted) or `#include <spec>` names, or None."""
        if quoted:
            found = _join(posixpath.dirname(importer), spec)
            if found in self.paths:
                return found
        roots = [*self._include_roots, ""]
        hits = [
            p for p in (_join(root, spec) for root in roots) if p is not None and p in self.paths
        ]
        if hits:
            return _nearest(hits, importer)
        if not quoted:
            return None
        # The build's -I flags are unknown: accept any file whose path ends with the spec.
        candidates = [
            p
            for p in self._c_by_name.get(posixpath.basename(spec), [])
            if p == spec or p.endswith("/" + spec.lstrip("./"))
        ]
        return _nearest(candidates, importer) if candidates else None


# ---------------------------------------------------------------------------------------------
# Resolution


def resolve_imports(path: str, refs: list[ImportRef], workspace: WorkspaceLayout) -> list[str]:
    """The workspace files `refs` (extracted from `path`) name, in ref order, without duplicates.

    External imports resolve to nothing, and a file never depends on itself.
    """
    language = language_for_path(path)
    resolved: list[str] = []
    package = next((ref.module for ref in refs if ref.kind == "package"), "")
    for ref in refs:
        if language == parsing.PYTHON:
            resolved.extend(_resolve_python(path, ref, workspace))
        elif language in _JS_LANGS:
            resolved.extend(_resolve_js(path, ref, workspace))
        elif language == parsing.GO:
            resolved.extend(workspace.go_package(ref.module))
        elif language == parsing.RUST:
            resolved.extend(_resolve_rust(path, ref, workspace))
        elif language == parsing.JAVA:
            resolved.extend(_resolve_java(path, ref, workspace, package))
        elif language in _C_LANGS:
            found = workspace.c_include(ref.module, path, quoted=ref.kind == "include")
            if found is not None:
                resolved.append(found)
    return [p for p in dict.fromkeys(resolved) if p != path]


def python_module_file(
    importer: str, module: str, level: int, workspace: WorkspaceLayout
) -> str | None:
    """The workspace file of Python module `module` imported from `importer` with `level`
    leading dots (0: absolute; `module` may be "" for `from . import x`), or None."""
    if not level:
        return workspace.python_module(module, importer) if module else None
    directory = posixpath.dirname(importer)
    for _ in range(level - 1):
        if not directory:
            return None  # beyond the workspace
        directory = posixpath.dirname(directory)
    return workspace.python_relative(directory, module)


def _resolve_python(path: str, ref: ImportRef, workspace: WorkspaceLayout) -> list[str]:
    if ref.kind == "import":
        found = workspace.python_module(ref.module, path)
        return [found] if found else []
    module = python_module_file(path, ref.module, ref.level, workspace)
    prefix = f"{ref.module}." if ref.module else ""
    submodules = [
        python_module_file(path, prefix + name, ref.level, workspace) for name in ref.names
    ]
    # `from pkg import sub` depends on pkg/sub.py; pkg/__init__.py matters only when some name
    # is not a submodule (it is defined, or re-exported, by the package itself).
    hits = [p for p in submodules if p is not None]
    if module is not None and (len(hits) < len(ref.names) or not ref.names):
        hits.insert(0, module)
    return hits


def _resolve_js(path: str, ref: ImportRef, workspace: WorkspaceLayout) -> list[str]:
    specifier = ref.module
    if specifier.startswith(("./", "../")) or specifier in (".", ".."):
        found = workspace.js_file(_join(posixpath.dirname(path), specifier))
    elif specifier.startswith("/"):
        found = workspace.js_file(_join("", specifier.lstrip("/")))
    else:
        found = workspace.js_bare(specifier, path)
    return [found] if found else []


def _resolve_rust(path: str, ref: ImportRef, workspace: WorkspaceLayout) -> list[str]:
    directory = posixpath.dirname(path)
    name = posixpath.basename(path)
    # Children of lib.rs/main.rs/mod.rs (and of crate roots such as src/bin/x.rs) live next to
    # the file; children of a.rs live in a/.
    own_dir = (
        name in ("lib.rs", "main.rs", "mod.rs")
        or posixpath.basename(directory) in _RUST_CRATE_ROOT_DIRS
    )
    children_dir = directory if own_dir else posixpath.join(directory, name[: -len(".rs")])
    if ref.kind == "mod":
        found = workspace.rust_module_file(children_dir, ref.module.split("::"))
        return [found] if found else []
    if ref.kind == "mod_path":
        target = _join(directory, ref.module)
        return [target] if target in workspace.paths else []
    segments = ref.module.split("::")
    crate_root = workspace.rust_crate_root(directory)
    head = segments[0]
    if head == "crate":
        if crate_root is None:
            return []
        return _rust_longest(workspace, crate_root, [], segments[1:], minimum=0)
    if head in ("self", "super"):
        if crate_root is None:
            return []
        module = _rust_module_path(path, crate_root)
        ups = 0
        while ups < len(segments) and segments[ups] == "super":
            ups += 1
        if ups > len(module):
            return []
        rest = segments[1:] if head == "self" else segments[ups:]
        base = module[: len(module) - ups]
        return _rust_longest(workspace, crate_root, base, rest, minimum=0)
    other = workspace.rust_crate(head)
    if other is not None:
        return _rust_longest(workspace, other, [], segments[1:], minimum=0)
    if crate_root is None:
        return []
    # Since the 2018 edition `use child::x` may name a child module of the current one.
    module = _rust_module_path(path, crate_root)
    return _rust_longest(workspace, crate_root, module, segments, minimum=1)


def _rust_module_path(path: str, crate_root: str) -> list[str]:
    if path == crate_root:
        return []
    relative = posixpath.relpath(path, posixpath.dirname(crate_root))
    parts = relative[: -len(".rs")].split("/")
    if parts[-1] == "mod":
        parts.pop()
    return parts


def _rust_longest(
    workspace: WorkspaceLayout, crate_root: str, base: list[str], rest: list[str], minimum: int
) -> list[str]:
    """The most specific file among module paths base+rest[:n] (a path may end in an item)."""
    crate_dir = posixpath.dirname(crate_root)
    for n in range(len(rest), minimum - 1, -1):
        segments = base + rest[:n]
        if not segments:
            return [crate_root]
        found = workspace.rust_module_file(crate_dir, segments)
        if found is not None:
            return [found]
    return []


def _resolve_java(path: str, ref: ImportRef, workspace: WorkspaceLayout, package: str) -> list[str]:
    if ref.kind in ("import", "static"):
        found = workspace.java_type(ref.module, path)
        return [found] if found else []
    if ref.kind == "wildcard":
        return workspace.java_package(ref.module, path)
    if ref.kind == "same_package":
        sibling = posixpath.join(posixpath.dirname(path), ref.module + ".java")
        if sibling in workspace.paths:
            return [sibling]
        # The same package under another source root (tests next to main sources).
        found = workspace.java_type(f"{package}.{ref.module}", path) if package else None
        return [found] if found else []
    return []


# ---------------------------------------------------------------------------------------------
# Helpers


def _join(directory: str, relative: str) -> str | None:
    """Normalized workspace-relative join; None when the result leaves the workspace."""
    joined = posixpath.normpath(posixpath.join(directory, relative))
    if joined == ".":
        return ""
    if joined.startswith("../") or joined == ".." or joined.startswith("/"):
        return None
    return joined


def _is_under(directory: str, root: str) -> bool:
    return not root or directory == root or directory.startswith(root + "/")


def _python_module_name(path: str, base: str) -> str | None:
    relative = path[len(base) + 1 :] if base else path
    parts = posixpath.splitext(relative)[0].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def _nearest(candidates: list[str], importer: str, prefer: str = "") -> str:
    """The candidate sharing the most leading directories with `importer`; ties by path."""
    importer_parts = importer.split("/")[:-1]

    def key(candidate: str) -> tuple[int, bool, str]:
        shared = 0
        for a, b in zip(importer_parts, candidate.split("/"), strict=False):
            if a != b:
                break
            shared += 1
        return (-shared, bool(prefer) and not candidate.endswith(prefer), candidate)

    return min(candidates, key=key)


def _match_pattern(pattern: str, specifier: str) -> str | None:
    """What `*` matched when tsconfig `paths` pattern matches `specifier`, else None."""
    if "*" not in pattern:
        return "" if pattern == specifier else None
    prefix, suffix = pattern.split("*", 1)
    if (
        len(specifier) >= len(prefix) + len(suffix)
        and specifier.startswith(prefix)
        and specifier.endswith(suffix)
    ):
        return specifier[len(prefix) : len(specifier) - len(suffix)]
    return None


def _load_jsonc(text: str) -> Any:
    """Parse JSON with comments and trailing commas (tsconfig.json's dialect)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(char)
            i += 1
    cleaned = re.sub(r",(\s*[}\]])", r"\1", "".join(out))
    try:
        return json.loads(cleaned)
    except json.JSONDecodeError as error:
        raise ValueError(str(error)) from error
