"""Dependency order and cycles over (source, target) edges, with the standard library's
graphlib."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable

from .errors import GraphError


def reachable(start: str, edges: Iterable[tuple[str, str]]) -> set[str]:
    """The ids reachable from `start` along (from, to) edges, `start` itself excluded."""
    nexts: dict[str, list[str]] = {}
    for a, b in edges:
        nexts.setdefault(a, []).append(b)
    seen: set[str] = set()
    stack = [start]
    while stack:
        for c in nexts.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def dependency_order(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """The given ids in dependency order over (source, target) edges between them, newest
    ready node first (so a branch is finished before the next, and the order is the one
    layouts and files have always had). Raises GraphError naming the nodes of a cycle."""
    sorter = _sorter(ids, edges)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise GraphError("the graph has a cycle: " + " -> ".join(exc.args[1])) from None
    order: list[str] = []
    ready = list(sorter.get_ready())
    while ready:
        node = ready.pop()
        order.append(node)
        sorter.done(node)
        ready.extend(sorter.get_ready())
    return order


def find_cycle(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """The nodes of one cycle along (source, target) edges, in edge order, or []."""
    try:
        _sorter(ids, edges).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1][:-1])
    return []


def _sorter(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> graphlib.TopologicalSorter:
    sorter: graphlib.TopologicalSorter = graphlib.TopologicalSorter()
    for i in ids:
        sorter.add(i)
    for src, dst in edges:
        sorter.add(dst, src)
    return sorter
