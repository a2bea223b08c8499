"""The workspace import graph: which files to show the model, and in which order.

`rank_context_files` picks the files most related to the current one; `prompt_order` lays them
out dependencies first. The order must be a pure function of the chosen files and the edges
among them, so that typing in the current file, or adding an unrelated file, leaves the prompt
prefix (and the engine's KV prefix cache) untouched.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class ImportGraph:
    """Directed graph of workspace files: an edge a -> b means a imports b."""

    def __init__(self) -> None:
        self._dependencies: dict[str, tuple[str, ...]] = {}
        self._dependents: dict[str, set[str]] = {}

    def update(self, path: str, dependencies: Iterable[str]) -> None:
        """Replace the dependencies of `path` (in import order; duplicates and self dropped)."""
        new = tuple(d for d in dict.fromkeys(dependencies) if d != path)
        old = self._dependencies.get(path, ())
        for dependency in old:
            importers = self._dependents.get(dependency)
            if importers is not None:
                importers.discard(path)
                if not importers:
                    del self._dependents[dependency]
        self._dependencies[path] = new
        for dependency in new:
            self._dependents.setdefault(dependency, set()).add(path)

    def remove(self, path: str) -> None:
        """Forget `path`: its own imports and the edges of files that import it.

        Importers keep their other dependencies; if the file comes back, re-resolving the
        importers (as after any change to the set of files) restores the edges.
        """
        self.update(path, ())
        del self._dependencies[path]
        for importer in sorted(self._dependents.pop(path, set())):
            deps = self._dependencies.get(importer)
            if deps is not None:
                self._dependencies[importer] = tuple(d for d in deps if d != path)

    def dependencies(self, path: str) -> list[str]:
        """The files `path` imports, in import order."""
        return list(self._dependencies.get(path, ()))

    def dependents(self, path: str) -> list[str]:
        """The files that import `path`, sorted by path."""
        return sorted(self._dependents.get(path, ()))

    def __contains__(self, path: object) -> bool:
        return path in self._dependencies

    def __len__(self) -> int:
        return len(self._dependencies)

    def paths(self) -> list[str]:
        """Every file whose dependencies are known, sorted."""
        return sorted(self._dependencies)


def rank_context_files(
    graph: ImportGraph, current: str, recent: list[str], limit: int
) -> list[str]:
    """The files most worth showing next to `current`, best first, at most `limit`.

    Tiers, in order: what `current` imports; what those import (two hops, files reached from
    more direct imports first); files that import `current`; then `recent` (most recent first,
    e.g. recently edited or open files). Within a tier, files that are also recent come first,
    then by path, so equal inputs always give equal output.
    """
    if limit <= 0:
        return []
    recency = {path: rank for rank, path in reversed(list(enumerate(recent)))}
    no_rank = len(recent)

    def by_recency(paths: Iterable[str]) -> list[str]:
        return sorted(paths, key=lambda p: (recency.get(p, no_rank), p))

    direct = graph.dependencies(current)
    reached: dict[str, int] = {}
    for dependency in direct:
        for second in graph.dependencies(dependency):
            reached[second] = reached.get(second, 0) + 1
    two_hops = sorted(reached, key=lambda p: (-reached[p], recency.get(p, no_rank), p))
    tiers = [by_recency(direct), two_hops, by_recency(graph.dependents(current)), list(recent)]

    ranked: dict[str, None] = {}
    for tier in tiers:
        for path in tier:
            if path != current and path not in ranked:
                ranked[path] = None
                if len(ranked) == limit:
                    return list(ranked)
    return list(ranked)


def prompt_order(graph: ImportGraph, files: list[str], current: str) -> list[str]:
    """The order of `files` in the prompt: every file after the files it imports.

    Only edges among `files` count. Among files free to go next, the smallest path goes first,
    so the result depends only on the set of files and their edges: not on the order of `files`,
    not on `current` (which is left out: it ends the prompt), and a file with no edges to the
    others never moves them relative to each other. Import cycles are collapsed into strongly
    connected components and broken inside by `_order_cycle`.
    """
    nodes = sorted(set(files) - {current})
    if not nodes:
        return []
    members = set(nodes)
    edges = {node: sorted(set(graph.dependencies(node)) & members) for node in nodes}
    order: list[str] = []
    for component in _topological_components(nodes, edges):
        order.extend(_order_cycle(component, edges))
    return order


def _order_cycle(component: list[str], edges: dict[str, list[str]]) -> list[str]:
    """Order one strongly connected component (sorted paths) deterministically.

    A single file is its own order. In a cycle, the file imported by the most other members
    goes first (ties: smallest path); the rest are then ordered as their own subgraph, so edges
    that do not close a cycle are still respected. A work stack instead of recursion: a cycle
    can hold more files than Python's recursion limit.
    """
    order: list[str] = []
    pending = [component]  # the last entry is ordered next
    while pending:
        nodes = pending.pop()
        if len(nodes) == 1:
            order.append(nodes[0])
            continue
        members = set(nodes)
        local = {node: [d for d in edges[node] if d in members] for node in nodes}
        imported_by = Counter(d for node in nodes for d in local[node])
        first = min(nodes, key=lambda n: (-imported_by[n], n))
        order.append(first)
        rest = [n for n in nodes if n != first]
        rest_edges = {n: [d for d in local[n] if d != first] for n in rest}
        pending.extend(reversed(_topological_components(rest, rest_edges)))
    return order


def _topological_components(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components in dependency order (Kahn's algorithm on the condensation,
    which is acyclic; among free components the one with the smallest path goes first)."""
    components = _strongly_connected(nodes, edges)
    component_of = {node: index for index, comp in enumerate(components) for node in comp}
    waiting_on = [0] * len(components)
    unblocks: list[set[int]] = [set() for _ in components]
    for node in nodes:
        for dependency in edges[node]:
            source, target = component_of[dependency], component_of[node]
            if source != target and target not in unblocks[source]:
                unblocks[source].add(target)
                waiting_on[target] += 1
    ready = [(comp[0], index) for index, comp in enumerate(components) if waiting_on[index] == 0]
    heapq.heapify(ready)
    ordered: list[list[str]] = []
    while ready:
        _, index = heapq.heappop(ready)
        ordered.append(components[index])
        for target in unblocks[index]:
            waiting_on[target] -= 1
            if waiting_on[target] == 0:
                heapq.heappush(ready, (components[target][0], target))
    return ordered


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (import chains can be deeper than Python's recursion limit).

    Returns each component as a sorted list.
    """
    index_of: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index_of:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index_of[node] = lowlink[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = edges[node]
            if child < len(successors):
                work.append((node, child + 1))
                successor = successors[child]
                if successor not in index_of:
                    work.append((successor, 0))
                elif successor in on_stack:
                    lowlink[node] = min(lowlink[node], index_of[successor])
                continue
            if lowlink[node] == index_of[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
    return components
