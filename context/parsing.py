"""Tree-sitter parsers per language, created once and shared.

Grammars come from the prebuilt `tree-sitter-<language>` wheels, so nothing is downloaded or
compiled at run time. A `tree_sitter.Parser` is not thread-safe, and requests are computed off the
event loop, so each language's parser is guarded by its own lock; compiled queries are immutable
and shared freely (every call gets its own `QueryCursor`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import posixpath
import threading
from collections.abc import Callable

import tree_sitter

logger = logging.getLogger(__name__)

# Language ids used across `context`: the key of every per-language table.
PYTHON = "python"
JAVASCRIPT = "javascript"
TYPESCRIPT = "typescript"
TSX = "tsx"
GO = "go"
RUST = "rust"
JAVA = "java"
C = "c"
CPP = "cpp"

EXTENSIONS: dict[str, str] = {
    ".py": PYTHON,
    ".pyi": PYTHON,
    ".js": JAVASCRIPT,
    ".mjs": JAVASCRIPT,
    ".cjs": JAVASCRIPT,
    ".jsx": JAVASCRIPT,
    ".ts": TYPESCRIPT,
    ".mts": TYPESCRIPT,
    ".cts": TYPESCRIPT,
    ".tsx": TSX,
    ".go": GO,
    ".rs": RUST,
    ".java": JAVA,
    ".c": C,
    # Headers are parsed as C++: its grammar reads C headers cleanly, while the C grammar turns
    # every class or namespace in a C++ header into an error node.
    ".h": CPP,
    ".cc": CPP,
    ".cpp": CPP,
    ".cxx": CPP,
    ".hpp": CPP,
    ".hh": CPP,
    ".hxx": CPP,
}

# (module, function) that returns the grammar's language pointer.
_GRAMMARS: dict[str, tuple[str, str]] = {
    PYTHON: ("tree_sitter_python", "language"),
    JAVASCRIPT: ("tree_sitter_javascript", "language"),
    TYPESCRIPT: ("tree_sitter_typescript", "language_typescript"),
    TSX: ("tree_sitter_typescript", "language_tsx"),
    GO: ("tree_sitter_go", "language"),
    RUST: ("tree_sitter_rust", "language"),
    JAVA: ("tree_sitter_java", "language"),
    C: ("tree_sitter_c", "language"),
    CPP: ("tree_sitter_cpp", "language"),
}

LANGUAGES: tuple[str, ...] = tuple(_GRAMMARS)


def language_for_path(path: str) -> str | None:
    """The language id of a file from its extension (`.d.ts` is TypeScript), or None."""
    ext = posixpath.splitext(path)[1].lower()
    return EXTENSIONS.get(ext)


class Parsers:
    """One `tree_sitter.Parser` per language, created on first use, plus compiled queries."""

    def __init__(self) -> None:
        self._languages: dict[str, tree_sitter.Language | None] = {}
        self._parsers: dict[str, tuple[tree_sitter.Parser, threading.Lock]] = {}
        self._queries: dict[tuple[str, str], tree_sitter.Query] = {}
        self._lock = threading.Lock()

    def language(self, name: str) -> tree_sitter.Language | None:
        """The grammar of language `name`, or None when its wheel is not installed."""
        if name in self._languages:
            return self._languages[name]
        with self._lock:
            if name not in self._languages:
                self._languages[name] = _load_language(name)
            return self._languages[name]

    def parse(
        self, path: str, text: str | bytes, old_tree: tree_sitter.Tree | None = None
    ) -> tree_sitter.Tree | None:
        """Parse `text` as the language of `path`; None for unsupported languages.

        Pass `old_tree` (already told about the change with `edit_tree`) to re-parse
        incrementally: tree-sitter then reuses every subtree outside the edited range.
        """
        name = language_for_path(path)
        if name is None:
            return None
        entry = self._parser(name)
        if entry is None:
            return None
        parser, lock = entry
        source = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        with lock:
            if old_tree is None:
                return parser.parse(source)
            return parser.parse(source, old_tree)

    def query(self, language: str, source: str) -> tree_sitter.Query | None:
        """The compiled query `source` for `language` (cached), or None without the grammar."""
        key = (language, source)
        query = self._queries.get(key)
        if query is not None:
            return query
        lang = self.language(language)
        if lang is None:
            return None
        query = tree_sitter.Query(lang, source)
        with self._lock:
            self._queries[key] = query
        return query

    def _parser(self, name: str) -> tuple[tree_sitter.Parser, threading.Lock] | None:
        entry = self._parsers.get(name)
        if entry is not None:
            return entry
        lang = self.language(name)
        if lang is None:
            return None
        with self._lock:
            if name not in self._parsers:
                self._parsers[name] = (tree_sitter.Parser(lang), threading.Lock())
            return self._parsers[name]


def _load_language(name: str) -> tree_sitter.Language | None:
    spec = _GRAMMARS.get(name)
    if spec is None:
        return None
    module_name, function_name = spec
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        # A missing grammar degrades that language to the text fallbacks, not an error.
        logger.warning(
            "tree-sitter grammar %s is not installed; %s files are not parsed", module_name, name
        )
        return None
    factory: Callable[[], object] = getattr(module, function_name)
    return tree_sitter.Language(factory())


@functools.cache
def shared_parsers() -> Parsers:
    """The process-wide `Parsers` (grammars and parsers are loaded once per process)."""
    return Parsers()


def parse(
    path: str, text: str | bytes, old_tree: tree_sitter.Tree | None = None
) -> tree_sitter.Tree | None:
    """Parse `text` as the language of `path` with the shared parsers; None if unsupported."""
    return shared_parsers().parse(path, text, old_tree)


def captures(
    language: str, query_source: str, node: tree_sitter.Node
) -> dict[str, list[tree_sitter.Node]]:
    """Run a (cached) query over `node`: capture name -> nodes in document order."""
    query = shared_parsers().query(language, query_source)
    if query is None:
        return {}
    found = tree_sitter.QueryCursor(query).captures(node)
    for nodes in found.values():
        nodes.sort(key=lambda n: n.start_byte)
    return found


def node_text(node: tree_sitter.Node) -> str:
    """The source text of `node` (invalid UTF-8 replaced rather than raised)."""
    raw = node.text
    return raw.decode("utf-8", "replace") if raw is not None else ""


def edit_tree(tree: tree_sitter.Tree, old: bytes, new: bytes) -> None:
    """Tell `tree` (parsed from `old`) that its source became `new`, for an incremental re-parse.

    The change is described as one span: everything between the common prefix and the common
    suffix of the two texts, which is exact for a keystroke or a paste and merely larger than
    needed for scattered edits.
    """
    if old == new:
        return
    limit = min(len(old), len(new))
    start = _longest(limit, lambda n: old[:n] == new[:n])
    tail = _longest(limit - start, lambda n: old[len(old) - n :] == new[len(new) - n :])
    old_end = len(old) - tail
    new_end = len(new) - tail
    tree.edit(
        start_byte=start,
        old_end_byte=old_end,
        new_end_byte=new_end,
        start_point=_point(old, start),
        old_end_point=_point(old, old_end),
        new_end_point=_point(new, new_end),
    )


def _longest(limit: int, holds: Callable[[int], bool]) -> int:
    # Binary search over slice comparisons (memcmp) instead of a byte-by-byte Python loop.
    low, high = 0, limit
    while low < high:
        mid = (low + high + 1) // 2
        if holds(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _point(source: bytes, offset: int) -> tuple[int, int]:
    # tree-sitter points are (row, byte column).
    row = source.count(b"\n", 0, offset)
    line_start = source.rfind(b"\n", 0, offset) + 1
    return (row, offset - line_start)
