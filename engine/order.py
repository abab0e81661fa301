"""Dependency order and cycles over (source, target) edges, with the standard library's
graphlib."""

from __future__ import annotations

import functools
import graphlib
from collections.abc import Iterable
from typing import Any

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
    order, cycle = order_or_cycle(ids, edges)
    if cycle:
        raise GraphError("the graph has a cycle: " + " -> ".join(cycle + cycle[:1]))
    return order


def find_cycle(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """The nodes of one cycle along (source, target) edges, in edge order, or []."""
    return order_or_cycle(ids, edges)[1]


def order_or_cycle(ids: Iterable[str],
                   edges: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(`dependency_order`'s order, []) or ([], the nodes of one cycle): one sort for
    validation and planning both. The answer is remembered for the last few shapes, so
    running a graph again after changing only values (a seed, a prompt, a sweep's next
    point) costs no sort."""
    order, cycle = _sorted(tuple(ids), tuple(edges))
    return list(order), list(cycle)


@functools.lru_cache(maxsize=16)
def _sorted(ids: tuple[str, ...], edges: tuple[tuple[str, str], ...]
            ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sorter = _sorter(ids, edges)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        return (), tuple(exc.args[1][:-1])
    order: list[str] = []
    ready = list(sorter.get_ready())
    while ready:
        node = ready.pop()
        order.append(node)
        sorter.done(node)
        ready.extend(sorter.get_ready())
    return tuple(order), ()


def _sorter(ids: Iterable[str], edges: Iterable[tuple[str, str]]
            ) -> graphlib.TopologicalSorter[str]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for i in ids:
        sorter.add(i)
    for src, dst in edges:
        sorter.add(dst, src)
    return sorter


def consumer_counts(plan: Any) -> dict[str, int]:
    """How many nodes of the plan's run read each source."""
    counts: dict[str, int] = {}
    for nid in plan.run:
        for l in plan.sources[nid].values():
            counts[l.src] = counts.get(l.src, 0) + 1
    return counts


def grouped_order(targets: list[str], sources: dict[str, dict[str, Any]],
                   to_run: set[str]) -> list[str]:
    """Depth-first post-order from each target: dependency order that finishes one
    branch (and so one model's work) before starting the next."""
    order: list[str] = []
    done: set[str] = set()
    for t in targets:
        if t not in to_run or t in done:
            continue
        stack: list[tuple[str, bool]] = [(t, False)]
        while stack:
            nid, expanded = stack.pop()
            if nid in done:
                continue
            if expanded:
                done.add(nid)
                order.append(nid)
                continue
            stack.append((nid, True))
            for l in reversed(list(sources[nid].values())):
                if l.src in to_run and l.src not in done:
                    stack.append((l.src, False))
    return order
