"""ImportGraph bookkeeping, context-file ranking and the stable prompt order."""

from __future__ import annotations

from pathlib import Path
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from context.graph import ImportGraph, prompt_order, rank_context_files
from context.imports import WorkspaceLayout, extract_imports, resolve_imports


def graph_of(edges: dict[str, list[str]]) -> ImportGraph:
    graph = ImportGraph()
    for path, dependencies in edges.items():
        graph.update(path, dependencies)
    return graph


def test_update_replaces_and_remove_forgets_edges() -> None:
    graph = graph_of({"a.py": ["b.py", "c.py", "b.py", "a.py"], "d.py": ["b.py"]})
    assert graph.dependencies("a.py") == ["b.py", "c.py"]  # import order, no dupes, no self
    assert graph.dependents("b.py") == ["a.py", "d.py"]
    graph.update("a.py", ["c.py"])
    assert graph.dependents("b.py") == ["d.py"]
    assert graph.dependents("c.py") == ["a.py"]
    graph.remove("c.py")
    assert graph.dependencies("a.py") == []
    assert graph.dependents("c.py") == []
    graph.remove("d.py")
    assert graph.dependents("b.py") == []
    assert graph.paths() == ["a.py"]
    assert "d.py" not in graph
    assert graph.dependencies("unknown.py") == []


def test_rank_tiers_direct_two_hops_dependents_recent() -> None:
    graph = graph_of(
        {
            "cur.py": ["z_direct.py", "a_direct.py"],
            "z_direct.py": ["shared.py", "only_z.py"],
            "a_direct.py": ["shared.py", "cur.py"],  # a cycle back to the current file
            "user2.py": ["cur.py"],
            "user1.py": ["cur.py"],
            "shared.py": ["deep.py"],  # three hops: not a candidate through the graph
        }
    )
    recent = ["notes.py", "user2.py", "cur.py", "deep.py"]
    assert rank_context_files(graph, "cur.py", recent, limit=20) == [
        "a_direct.py",
        "z_direct.py",
        "shared.py",  # reached from both direct imports
        "only_z.py",
        "user2.py",  # dependents: the recent one first
        "user1.py",
        "notes.py",
        "deep.py",
    ]
    assert rank_context_files(graph, "cur.py", recent, limit=3) == [
        "a_direct.py",
        "z_direct.py",
        "shared.py",
    ]
    assert rank_context_files(graph, "cur.py", recent, limit=0) == []
    # Recency breaks ties inside a tier (z_direct was just edited).
    assert rank_context_files(graph, "cur.py", ["z_direct.py"], limit=2) == [
        "z_direct.py",
        "a_direct.py",
    ]


def test_rank_for_a_file_outside_the_graph_is_the_recent_list() -> None:
    graph = graph_of({"a.py": ["b.py"]})
    assert rank_context_files(graph, "new.py", ["a.py", "new.py", "a.py"], limit=5) == ["a.py"]


def test_prompt_order_puts_dependencies_first() -> None:
    graph = graph_of(
        {
            "app.py": ["models.py", "views.py"],
            "views.py": ["models.py", "templates.py"],
            "models.py": ["db.py"],
            "db.py": [],
            "templates.py": [],
            "cur.py": ["app.py", "db.py"],
        }
    )
    files = ["app.py", "views.py", "templates.py", "models.py", "db.py", "cur.py"]
    assert prompt_order(graph, files, "cur.py") == [
        "db.py",
        "models.py",
        "templates.py",
        "views.py",
        "app.py",
    ]
    # Only edges among the chosen files count; the input order does not.
    assert prompt_order(graph, ["views.py", "app.py"], "cur.py") == ["views.py", "app.py"]
    assert prompt_order(graph, ["app.py", "views.py", "cur.py"], "cur.py") == [
        "views.py",
        "app.py",
    ]


def test_prompt_order_breaks_cycles_deterministically() -> None:
    # a -> b -> c -> a is a cycle; d depends on it; e is independent; b is imported twice.
    graph = graph_of(
        {
            "a.py": ["b.py"],
            "b.py": ["c.py"],
            "c.py": ["a.py", "b.py"],
            "d.py": ["a.py"],
            "e.py": [],
        }
    )
    files = ["e.py", "d.py", "c.py", "b.py", "a.py"]
    order = prompt_order(graph, files, "cur.py")
    # The cycle stays together and b (imported by two members) opens it; the rest of the cycle
    # is ordered by its remaining edges (c imports a); d follows what it imports.
    assert order == ["b.py", "a.py", "c.py", "d.py", "e.py"]
    assert prompt_order(graph, list(reversed(files)), "cur.py") == order


def test_prompt_order_handles_long_chains_and_cycles() -> None:
    # Deeper than Python's recursion limit: a chain of 3000 files closed into one cycle.
    names = [f"m{i:04d}.py" for i in range(3000)]
    edges = {name: [names[i - 1]] for i, name in enumerate(names)}  # m0000 imports m2999
    # The cycle opens at the smallest path (every file is imported once), then every file
    # follows the one it imports.
    assert prompt_order(graph_of(edges), names, "current.py") == names


def test_prompt_order_ignores_edits_to_the_current_file() -> None:
    graph = graph_of({"cur.ts": ["a.ts", "b.ts"], "a.ts": ["b.ts"], "b.ts": []})
    before = prompt_order(graph, ["a.ts", "b.ts"], "cur.ts")
    graph.update("cur.ts", ["b.ts"])  # the user deleted an import while typing
    assert prompt_order(graph, ["a.ts", "b.ts"], "cur.ts") == before == ["b.ts", "a.ts"]


def test_graph_from_a_real_project(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/base.py": "class Base: ...\n",
        "pkg/models.py": "from .base import Base\n",
        "pkg/service.py": "from pkg.models import Base\nfrom . import repo\n",
        "pkg/repo.py": "from .models import Base\nfrom . import service  # a cycle\n",
        "main.py": "from pkg import service\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py"))
    layout = WorkspaceLayout(paths)
    graph = ImportGraph()
    for path in paths:
        text = (tmp_path / path).read_text()
        graph.update(path, resolve_imports(path, extract_imports(path, text), layout))
    chosen = rank_context_files(graph, "main.py", [], limit=10)
    assert chosen == ["pkg/service.py", "pkg/models.py", "pkg/repo.py"]
    assert prompt_order(graph, chosen, "main.py") == [
        "pkg/models.py",
        "pkg/repo.py",
        "pkg/service.py",
    ]


# ---------------------------------------------------------------------------------------------
# Properties of prompt_order over random graphs

NAMES = [f"{letter}{i}.py" for letter in "kqbx" for i in range(4)]


@st.composite
def graphs(draw: st.DrawFn, with_cycles: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Random nodes (names unrelated to their topological rank) and edges (importer, imported).

    Acyclic edges go from a later node to an earlier one in a random permutation; with
    `with_cycles`, arbitrary extra edges are added on top.
    """
    nodes = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=12, unique=True))
    edges = [
        (nodes[i], nodes[j]) for i in range(len(nodes)) for j in range(i) if draw(st.booleans())
    ]
    if with_cycles:
        extra = draw(st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(nodes))))
        edges.extend(extra)
    return nodes, edges


def build(nodes: list[str], edges: list[tuple[str, str]]) -> ImportGraph:
    deps: dict[str, list[str]] = {node: [] for node in nodes}
    for importer, imported in edges:
        deps[importer].append(imported)
    return graph_of(deps)


@settings(max_examples=300, deadline=None)
@given(graphs(with_cycles=True), st.randoms(use_true_random=False))
def test_order_is_a_function_of_the_file_set_and_edges(
    graph: tuple[list[str], list[tuple[str, str]]], rng: Random
) -> None:
    nodes, edges = graph
    order = prompt_order(build(nodes, edges), nodes, "current.py")
    assert sorted(order) == sorted(nodes)
    shuffled_nodes = list(nodes)
    shuffled_edges = list(edges)
    rng.shuffle(shuffled_nodes)
    rng.shuffle(shuffled_edges)
    again = prompt_order(build(shuffled_nodes, shuffled_edges), shuffled_nodes, "current.py")
    assert again == order


@settings(max_examples=300, deadline=None)
@given(graphs(with_cycles=True), st.sampled_from(["a0.py", "m5.py", "z9.py", "q1x.py"]))
def test_an_unrelated_file_does_not_reorder_the_others(
    graph: tuple[list[str], list[tuple[str, str]]], newcomer: str
) -> None:
    nodes, edges = graph
    before = prompt_order(build(nodes, edges), nodes, "current.py")
    after = prompt_order(build([*nodes, newcomer], edges), [*nodes, newcomer], "current.py")
    assert [path for path in after if path != newcomer] == before


@settings(max_examples=300, deadline=None)
@given(graphs(with_cycles=False))
def test_without_cycles_every_dependency_comes_first(
    graph: tuple[list[str], list[tuple[str, str]]],
) -> None:
    nodes, edges = graph
    order = prompt_order(build(nodes, edges), nodes, "current.py")
    position = {path: index for index, path in enumerate(order)}
    for importer, imported in edges:
        assert position[imported] < position[importer]


@settings(max_examples=200, deadline=None)
@given(graphs(with_cycles=True), st.data())
def test_the_current_file_and_its_edges_never_matter(
    graph: tuple[list[str], list[tuple[str, str]]], data: st.DataObject
) -> None:
    nodes, edges = graph
    current = nodes[0]
    others = nodes[1:]
    before = prompt_order(build(nodes, edges), nodes, current)
    assert current not in before
    new_imports = data.draw(st.lists(st.sampled_from(nodes)))
    edited = [(a, b) for a, b in edges if a != current] + [(current, b) for b in new_imports]
    assert prompt_order(build(nodes, edited), others, current) == before
