"""Definitions at the cursor, resolved through a real git workspace: each resolution rule, the
compact rendering, the exact budget, stability while typing, and secret files never read."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_context_repo import make_repo

from context.definitions import Definition, _scope_name, select_definitions
from context.prompt import ContextPiece
from context.repo import MIN_OUTLINED_BUDGET, RepoContext, _already_shown

pytest.importorskip("git")

PACKAGE = {
    "pkg/__init__.py": "from .core import Engine\nfrom .util import *\n",
    "pkg/base.py": "class Base:\n"
    '    """The base."""\n\n'
    "    def start(self, speed: int = 1) -> None:\n"
    '        """Start it.\n\n        More text.\n        """\n'
    "        self.speed = speed\n\n"
    "    def _hidden(self):\n        pass\n",
    "pkg/result.py": "class Result:\n    def value(self) -> int:\n        return 1\n",
    "pkg/core.py": "from pkg.base import Base\nfrom pkg.result import Result\n\n\n"
    "class Engine(Base):\n"
    '    """Runs things."""\n\n'
    "    limit: int = 3\n\n"
    "    def __init__(self, name):\n        self.name = name\n\n"
    "    def run(self, x: int) -> Result:\n"
    '        """Run once."""\n'
    "        return Result()\n\n\n"
    "def make_engine() -> Engine:\n    return Engine('x')\n",
    "pkg/util.py": "def helper(a, b=1):\n"
    '    """Help a little."""\n'
    "    return a + b\n\n\n"
    "def _private():\n    pass\n\n\n"
    "NAMES = [\n    'a',\n    'b',\n    'c',\n]\n",
}

MAIN = (
    "from pkg import Engine, helper as h\n"
    "import pkg.core as core\n"
    "from pkg.result import Result\n\n\n"
    "class App(Engine):\n"
    "    def __init__(self):\n"
    "        self.engine = Engine('e')\n\n"
    "    def go(self):\n"
    "        CURSOR\n\n\n"
    "def other(e: Engine) -> None:\n"
    "    pass\n"
)


def definitions_at(context: RepoContext, body: str, marker: str = "CURSOR") -> list[Definition]:
    """Resolve at the end of `body` typed in place of CURSOR in app/main.py."""
    text = MAIN.replace(marker, body)
    offset = text.index(body) + len(body)
    return context._definitions.resolve("app/main.py", text, offset, context._layout).definitions


def names(definitions: list[Definition]) -> list[tuple[str, str]]:
    return [(d.path, d.name) for d in definitions]


@pytest.fixture
def context(tmp_path: Path) -> RepoContext:
    return make_repo(tmp_path, {**PACKAGE, "app/__init__.py": "", "app/main.py": MAIN})


def test_reexport_in_init_and_star_import_and_alias(context: RepoContext) -> None:
    found = names(definitions_at(context, "x = h(1)"))
    # `helper` is re-exported by pkg/__init__.py through `from .util import *`, used as `h`.
    assert found[0] == ("pkg/util.py", "helper")
    # `Engine`, re-exported from pkg.core, is the class's base and imported: it comes too.
    assert ("pkg/core.py", "Engine") in found


def test_class_bases_and_self_attributes(context: RepoContext) -> None:
    found = names(definitions_at(context, "self.start()"))
    # App's base Engine (another file) and Engine's base Base, where `start` is defined.
    assert ("pkg/core.py", "Engine") in found
    assert ("pkg/base.py", "Base") in found
    found = names(definitions_at(context, "self.engine.run(1).value()"))
    assert {("pkg/core.py", "Engine"), ("pkg/result.py", "Result")} <= set(found)


def test_annotations_and_module_receiver(context: RepoContext) -> None:
    text = MAIN.replace("    pass\n", "    e.run(2).\n")
    offset = text.index("e.run(2).") + len("e.run(2).")
    found = names(
        context._definitions.resolve("app/main.py", text, offset, context._layout).definitions
    )
    # A parameter's annotation gives e's class; run's return annotation gives Result.
    assert found[:2] == [("pkg/core.py", "Engine"), ("pkg/result.py", "Result")]
    receiver = definitions_at(context, "core.")
    assert (receiver[0].path, receiver[0].name) == ("pkg/core.py", "")
    assert "def make_engine() -> Engine: ..." in receiver[0].text
    made = names(definitions_at(context, "core.make_engine().run"))
    assert made[:1] == [("pkg/core.py", "make_engine")]


def test_compact_rendering(context: RepoContext) -> None:
    by_name = {d.name: d.text for d in definitions_at(context, "h(1); self.start(); NAMES")}
    assert by_name["helper"] == 'def helper(a, b=1):\n    """Help a little."""'
    assert by_name["Base"] == (
        'class Base:\n    """The base."""\n    speed: int\n'
        "    def start(self, speed: int = 1) -> None: ..."
    )
    assert by_name["Engine"].splitlines()[:4] == [
        "class Engine(Base):",
        '    """Runs things."""',
        "    limit: int = 3",
        "    name",
    ]
    assert "_hidden" not in by_name["Base"] and "return" not in by_name["Engine"]
    # Shorter forms for a small budget: a class's header and constructor, then its header line;
    # a function's signature, then its name.
    shorter = {d.name: d.shorter for d in definitions_at(context, "h(1); self.start()")}
    assert shorter["Engine"] == (
        "class Engine(Base):\n    def __init__(self, name): ...",
        "class Engine(Base): ...",
    )
    assert shorter["Base"] == ("class Base: ...",)
    assert shorter["helper"] == ("def helper(a, b=1): ...", "def helper(...): ...")
    # Star imports skip private names; a long value is elided.
    assert "_private" not in by_name
    text = MAIN.replace("CURSOR", "x = pkg_names") + "from pkg.util import NAMES as pkg_names\n"
    offset = text.index("x = pkg_names") + len("x = pkg_names")
    found = context._definitions.resolve("app/main.py", text, offset, context._layout).definitions
    assert found[0].text == "NAMES = [ ... ]"


def test_other_languages_and_unknown_names_give_nothing(context: RepoContext) -> None:
    assert (
        context._definitions.resolve(
            "web/a.ts", "import x from './b'", 5, context._layout
        ).definitions
        == []
    )
    assert names(definitions_at(context, "len(unknown_name)"))[:1] != [("", "")]


def test_budget_is_exact() -> None:
    definitions = [
        Definition("a.py", f"f{i}", i, f"def f{i}(x):\n    '''Doc {i}.'''") for i in range(30)
    ] + [Definition("b.py", "g", 0, "def g(): ...")]
    for budget in (0, 10, 57, 200, 5000):
        pieces, left = select_definitions(definitions, len, budget)
        spent = sum(len(piece.text()) + 1 for piece in pieces)
        assert spent == budget - left and 0 <= left <= budget
    pieces, _ = select_definitions(definitions, len, 5000)
    assert [p.path for p in pieces] == ["a.py", "b.py"]
    assert pieces[0].content.startswith("def f0(x):") and pieces[0].outlined


def test_a_small_budget_names_every_definition_before_showing_any_whole() -> None:
    big = "class Big:\n    def one(self): ...\n    def two(self): ...\n    def three(self): ..."
    definitions = [
        Definition("a.py", "Big", 50, big, ("class Big: ...",)),
        Definition("a.py", "run", 0, "def run(x, y):\n    '''Run it.'''", ("def run(...): ...",)),
        Definition(
            "b.py", "Small", 0, "class Small:\n    def go(self): ...", ("class Small: ...",)
        ),
    ]
    short = [
        ContextPiece("a.py", "def run(...): ...\n\nclass Big: ...", outlined=True),
        ContextPiece("b.py", "class Small: ...", outlined=True),
    ]
    names_only = sum(len(piece.text()) + 1 for piece in short)
    upgrade = len(big) - len("class Big: ...")
    # Room for the names and Big, the most relevant, whole: the rest by name.
    pieces, left = select_definitions(definitions, len, names_only + upgrade)
    assert pieces == [ContextPiece("a.py", "def run(...): ...\n\n" + big, outlined=True), short[1]]
    assert left == 0
    # One token fewer: Big stays a name, and the tokens go to the next ones that fit whole.
    pieces, _ = select_definitions(definitions, len, names_only + upgrade - 1)
    assert pieces[0].content == "def run(x, y):\n    '''Run it.'''\n\nclass Big: ..."
    assert pieces[1].content == "class Small:\n    def go(self): ..."
    # Room for the names only.
    assert select_definitions(definitions, len, names_only)[0] == short
    # Room for everything: each as its longest form, in source order inside a file.
    pieces, _ = select_definitions(definitions, len, 1000)
    assert [piece.content for piece in pieces] == [
        "def run(x, y):\n    '''Run it.'''\n\n" + big,
        "class Small:\n    def go(self): ...",
    ]


def test_context_for_puts_definitions_last_within_the_budget(context: RepoContext) -> None:
    text = MAIN.replace("CURSOR", "h(")
    offset = text.index("h(") + 1
    for budget in (40, 120, 300, 2000):
        pieces = context.context_for("app/main.py", len, budget, text=text, offset=offset)
        assert sum(len(piece.text()) + 1 for piece in pieces) <= budget
    pieces = context.context_for("app/main.py", len, 600, text=text, offset=offset)
    assert pieces[-1].path == "pkg/util.py"
    assert pieces[-1].content.startswith("def helper(a, b=1):")
    # Outlines come first and do not depend on the cursor.
    elsewhere = context.context_for("app/main.py", len, 600, text=MAIN, offset=0)
    assert elsewhere[0] == pieces[0] and not pieces[0].path.endswith("util.py")
    # A file the outlines show whole is not repeated as definitions.
    roomy = context.context_for("app/main.py", len, 2000, text=text, offset=offset)
    assert [p.path for p in roomy].count("pkg/util.py") == 1
    # Without the cursor, only the ranked files, as before.
    plain = context.context_for("app/main.py", len, 2000)
    assert {p.path: p.content for p in plain}["pkg/util.py"] == PACKAGE["pkg/util.py"]


def test_a_small_budget_goes_to_the_definitions_whole(context: RepoContext) -> None:
    text = MAIN.replace("CURSOR", "h(")
    offset = text.index("h(") + 1
    resolved = context._definitions.resolve("app/main.py", text, offset, context._layout)
    small = MIN_OUTLINED_BUDGET - 1
    pieces = context.context_for("app/main.py", len, small, text=text, offset=offset)
    # No outlines: what the definitions alone give in the whole budget.
    alone, _ = select_definitions(resolved.definitions, len, small)
    assert sorted(pieces, key=str) == sorted(alone, key=str)
    # From MIN_OUTLINED_BUDGET on, an outline comes first.
    roomy = context.context_for("app/main.py", len, MIN_OUTLINED_BUDGET, text=text, offset=offset)
    assert "from pkg.base import Base" in roomy[0].content


def test_outlines_showing_a_definition_are_not_repeated() -> None:
    outline = ContextPiece(
        "pkg/core.py",
        "from pkg.base import Base\nclass Engine(Base):\n    def run(self, x: int): ...\n"
        "def make_engine(\n    name: str,\n) -> Engine: ...",
        outlined=True,
    )
    # Whatever form the definition takes: its header line, or its signature on one line.
    for definition in (
        Definition("pkg/core.py", "Engine", 0, "class Engine(Base): ..."),
        Definition("pkg/core.py", "make_engine", 90, "def make_engine(name: str) -> Engine: ..."),
    ):
        assert _already_shown(definition, [outline])
    assert not _already_shown(Definition("pkg/core.py", "Base", 0, "class Base: ..."), [outline])
    other = Definition("pkg/other.py", "Engine", 0, "class Engine(Base): ...")
    assert not _already_shown(other, [outline])


def test_stable_while_typing_in_one_function(context: RepoContext, tmp_path: Path) -> None:
    def at(body: str) -> list[ContextPiece]:
        text = MAIN.replace("CURSOR", body)
        offset = text.index(body) + len(body)
        return context.context_for("app/main.py", len, 600, text=text, offset=offset)

    first = at("x = h(1)\n        y = ")
    # Code that does not parse yet, and a blank line in the body, keep the function's choice.
    for typed in (
        "x = h(1)\n        y = 1",
        "x = h(1)\n        y = 12 + 3",
        "x = h(2)\n",
        "x = h(2)\n\n",
    ):
        assert at(typed) is first
    # A name whose definition was not shown yet adds it after what was shown, which stays.
    grown = at("x = h(1)\n        y = self.start()")
    assert grown[: len(first)] == first and len(grown) > len(first)
    assert "def start(self, speed: int = 1)" in grown[-1].content
    # Another function chooses afresh: as a context that never saw go() would.
    head, tail = MAIN.replace("CURSOR", "pass").rsplit("    pass\n", 1)
    text, offset = head + "    e.\n" + tail, len(head) + len("    e.")
    elsewhere = context.context_for("app/main.py", len, 600, text=text, offset=offset)
    again = make_repo(tmp_path / "again", {**PACKAGE, "app/__init__.py": "", "app/main.py": MAIN})
    assert elsewhere == again.context_for("app/main.py", len, 600, text=text, offset=offset)
    assert elsewhere != grown


def test_scope_names_follow_indentation_not_the_parse() -> None:
    text = "class A:\n    def go(self):\n        x = (\n\n        y = [1,\n"
    assert _scope_name(text, text.index("x = (") + 5) == "A.go"
    assert _scope_name(text, text.index("\n\n") + 1) == "A.go"  # a blank line stays inside
    assert _scope_name(text, len(text)) == "A.go"
    assert _scope_name(text, text.index("    def") + 4) == "A"
    assert _scope_name("x = 1\n", 3) is None


def test_secret_files_are_never_read(tmp_path: Path) -> None:
    canary = "CANARY-7d2e"
    files = {
        **PACKAGE,
        "app/__init__.py": "",
        "app/main.py": "from secrets.keys import TOKEN\nfrom pkg.util import helper\n",
        "secrets/keys.py": f"TOKEN = '{canary}'\n",
        ".env": f"TOKEN={canary}\n",
    }
    context = make_repo(tmp_path, files)
    text = files["app/main.py"] + "x = TOKEN + helper(1)\n"
    pieces = context.context_for("app/main.py", len, 5000, text=text, offset=len(text) - 1)
    assert "pkg/util.py" in [p.path for p in pieces]
    assert all(canary not in p.text() for p in pieces)
    assert all(not p.path.startswith("secrets/") for p in pieces)


def test_a_from_import_being_typed_brings_what_the_module_offers(context: RepoContext) -> None:
    found = definitions_at(context, "from pkg.util import ")
    assert [(d.name, d.text) for d in found[:2]] == [
        ("helper", "def helper(a, b=1): ..."),
        ("NAMES", "NAMES = [ ... ]"),
    ]
    # A package: its own names, then what it re-exports, each as a header.
    by_name = {d.name: d.text for d in definitions_at(context, "from pkg import ")}
    assert by_name["Engine"] == "class Engine(Base):\n    def __init__(self, name): ..."
    relative = definitions_at(context, "from ..pkg.result import ")
    assert (relative[0].path, relative[0].name) == ("pkg/result.py", "Result")
    # On a line of its own inside the parentheses of one, the same.
    text = "from pkg.util import (\n    helper,\n    \n)\n" + MAIN
    offset = text.index("helper,\n    ") + len("helper,\n    ")
    found = context._definitions.resolve("app/main.py", text, offset, context._layout).definitions
    assert [(d.name, d.text) for d in found[:2]] == [
        ("helper", "def helper(a, b=1): ..."),
        ("NAMES", "NAMES = [ ... ]"),
    ]


def test_names_imported_but_not_used_yet_come_as_headers(context: RepoContext) -> None:
    by_name = {d.name: d.text for d in definitions_at(context, "x = 1")}
    assert by_name["Result"] == "class Result: ..."
    assert by_name["helper"] == "def helper(a, b=1): ..."
    # Used at the cursor, the same names are rendered whole.
    used = {d.name: d.text for d in definitions_at(context, "x = h(1)")}
    assert used["helper"] == 'def helper(a, b=1):\n    """Help a little."""'


def test_imports_inside_the_function_resolve(context: RepoContext) -> None:
    found = names(
        definitions_at(context, "from pkg.core import make_engine\n        make_engine()")
    )
    assert ("pkg/core.py", "make_engine") in found


def test_a_line_that_breaks_the_parse_hides_no_import(context: RepoContext) -> None:
    # Unclosed, this comprehension makes tree-sitter wrap the whole file in one error node.
    typed = "x = {k: h(k) for k in self.engine if k is "
    text = MAIN.replace("CURSOR", typed + "\n        if x:\n            return x")
    offset = text.index(typed) + len(typed)
    found = context._definitions.resolve("app/main.py", text, offset, context._layout).definitions
    assert {("pkg/util.py", "helper"), ("pkg/result.py", "Result")} <= set(names(found))
