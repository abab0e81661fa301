"""The graph model: nodes with stable ids and named params, links, groups.

Edits keep the graph valid or raise `GraphError` saying why, leaving it unchanged.
Nodes of unknown types (placeholders) are kept with all their data; edits around them
skip the checks that need a spec.
"""

from __future__ import annotations

import copy
import graphlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import GraphError, describe
from .registry import Registry
from .types import can_connect

MODES = ("active", "muted", "bypassed")


@dataclass
class GraphNode:
    id: str
    type: str
    version: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    pos: tuple[float, float] = (0.0, 0.0)
    mode: str = "active"
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept verbatim


@dataclass
class Link:
    src: str
    src_output: str
    dst: str
    dst_input: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Group:
    title: str
    nodes: list[str] = field(default_factory=list)
    color: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class OutRef(NamedTuple):
    """One output of one node, as passed to `Graph.add` or `Graph.connect`."""

    node: str
    output: str


class NodeRef(NamedTuple):
    """What `Graph.add` returns: index it by output name to wire it onward."""

    id: str
    outputs: tuple[str, ...]

    def __getitem__(self, name: str) -> OutRef:  # type: ignore[override]
        if isinstance(name, int):
            return tuple.__getitem__(self, name)
        if self.outputs and name not in self.outputs:
            raise GraphError(f"node {self.id} has no output {name!r}; it has {list(self.outputs)}")
        return OutRef(self.id, name)

    def out(self, name: str) -> OutRef:
        return self[name]


class Graph:
    def __init__(self, registry: Registry | None = None):
        if registry is None:
            from .registry import default_registry

            registry = default_registry()
        self.registry = registry
        self.nodes: dict[str, GraphNode] = {}
        self.links: dict[tuple[str, str], Link] = {}  # keyed by (dst, dst_input)
        self.groups: list[Group] = []
        self.meta: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # unknown top-level fields of the file
        self.file_version: int | None = None  # the version of the file it was read from
        self.base_dir: Path | None = None  # where relative paths in params resolve first
        self.read_only: str | None = None  # why saving a changed graph would lose data
        self.raw: dict[str, Any] | None = None  # the document as read, for newer files
        self.revision = 0

    # ---- reading -------------------------------------------------------------------------
    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __iter__(self) -> Iterator[GraphNode]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> GraphNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"no node with id {node_id!r}") from None

    def spec(self, node_id: str):
        return self.registry.get(self.node(node_id).type)

    def links_into(self, node_id: str) -> dict[str, Link]:
        return {l.dst_input: l for l in self.links.values() if l.dst == node_id}

    def links_from(self, node_id: str) -> list[Link]:
        return [l for l in self.links.values() if l.src == node_id]

    def find(self, key: str) -> GraphNode:
        """A node by id, or else by its unique title (for `--set Title.input=...`)."""
        if key in self.nodes:
            return self.nodes[key]
        hits = [n for n in self.nodes.values() if n.title == key]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise GraphError(f"{len(hits)} nodes are titled {key!r}; use a node id: "
                             + ", ".join(n.id for n in hits))
        raise GraphError(f"no node with id or title {key!r}")

    def downstream(self, node_id: str) -> set[str]:
        """Every node that depends on `node_id` (not including itself)."""
        return _reachable(node_id, ((l.src, l.dst) for l in self.links.values()))

    def upstream(self, node_id: str) -> set[str]:
        """Every node that `node_id` depends on (not including itself)."""
        return _reachable(node_id, ((l.dst, l.src) for l in self.links.values()))

    # ---- edits ---------------------------------------------------------------------------
    def new_id(self, prefix: str = "n") -> str:
        i = len(self.nodes) + 1
        while f"{prefix}{i}" in self.nodes:
            i += 1
        return f"{prefix}{i}"

    def add(self, type: str, id: str | None = None, *, title: str | None = None,
            pos: tuple[float, float] = (0.0, 0.0), **values: Any) -> NodeRef:
        """Add a node. Keyword values set params; an `OutRef` or `NodeRef` value wires a link."""
        cls = self.registry.get(type)
        if cls is None:
            raise GraphError(f"unknown node type {type!r}")
        node_id = id or self.new_id()
        if node_id in self.nodes:
            raise GraphError(f"a node with id {node_id!r} already exists")
        params = {k: v for k, v in values.items() if not isinstance(v, (OutRef, NodeRef))}
        wires = {k: v for k, v in values.items() if isinstance(v, (OutRef, NodeRef))}
        for name, value in params.items():
            self._check_param(cls, node_id, name, value)
        node = GraphNode(node_id, cls.type, cls.version, dict(params), title, tuple(pos))
        self.nodes[node_id] = node
        try:
            for name, ref in wires.items():
                self.connect(ref, (node_id, name))
        except GraphError:
            self.remove(node_id)
            raise
        self.revision += 1
        return NodeRef(node_id, tuple(o.name for o in cls.outputs))

    def insert(self, node: GraphNode) -> None:
        """Add a node as it is (placeholders and file loading); only the id is checked."""
        if node.id in self.nodes:
            raise GraphError(f"a node with id {node.id!r} already exists")
        self.nodes[node.id] = node
        self.revision += 1

    def remove(self, node_id: str) -> None:
        self.node(node_id)
        del self.nodes[node_id]
        self.links = {k: l for k, l in self.links.items() if l.src != node_id and l.dst != node_id}
        for g in self.groups:
            if node_id in g.nodes:
                g.nodes.remove(node_id)
        self.revision += 1

    def connect(self, src: OutRef | NodeRef | tuple[str, str], dst: tuple[str, str]) -> Link:
        """Wire an output to an input, replacing what fed that input before."""
        if isinstance(src, NodeRef):
            if len(src.outputs) != 1:
                raise GraphError(f"node {src.id} has {len(src.outputs)} outputs; name one")
            src = OutRef(src.id, src.outputs[0])
        src_id, out_name = src
        dst_id, in_name = dst
        a, b = self.node(src_id), self.node(dst_id)
        a_cls, b_cls = self.registry.get(a.type), self.registry.get(b.type)
        out_t = in_t = None
        if a_cls is not None:
            if out_name not in a_cls.output_map:
                raise GraphError(f"{_label(a)} has no output {out_name!r}; it has "
                                 f"{[o.name for o in a_cls.outputs]}")
            out_t = a_cls.output_map[out_name].type
        if b_cls is not None:
            if in_name not in b_cls.input_map:
                raise GraphError(f"{_label(b)} has no input {in_name!r}; it has "
                                 f"{[i.name for i in b_cls.inputs]}")
            in_t = b_cls.input_map[in_name].type
        if out_t is not None and in_t is not None and not can_connect(out_t, in_t):
            raise GraphError(f"cannot connect {out_t.value} output {src_id}.{out_name} to "
                             f"{in_t.value} input {dst_id}.{in_name}")
        if src_id == dst_id or src_id in self.downstream(dst_id):
            raise GraphError(f"connecting {src_id}.{out_name} to {dst_id}.{in_name} "
                             "would make a cycle")
        link = Link(src_id, out_name, dst_id, in_name)
        self.links[(dst_id, in_name)] = link
        self.revision += 1
        return link

    def disconnect(self, dst_id: str, in_name: str) -> Link:
        try:
            link = self.links.pop((dst_id, in_name))
        except KeyError:
            raise GraphError(f"nothing is connected to {dst_id}.{in_name}") from None
        self.revision += 1
        return link

    def set_param(self, node_id: str, name: str, value: Any) -> None:
        node = self.node(node_id)
        cls = self.registry.get(node.type)
        if cls is not None:
            value = self._check_param(cls, node_id, name, value)
        node.params[name] = value
        self.revision += 1

    def set_mode(self, node_id: str, mode: str) -> None:
        if mode not in MODES:
            raise GraphError(f"mode must be one of {MODES}, got {mode!r}")
        self.node(node_id).mode = mode
        self.revision += 1

    def _check_param(self, cls, node_id: str, name: str, value: Any) -> Any:
        spec = cls.input_map.get(name)
        if spec is None:
            raise GraphError(f"{cls.title} ({node_id}) has no input {name!r}")
        if not spec.is_widget:
            raise GraphError(f"{cls.title} ({node_id}).{name} takes a {spec.type.value} "
                             "link, not a value")
        ok, coerced = spec.coerce(value)
        if not ok:
            raise GraphError(f"{cls.title} ({node_id}).{name}: expected {spec.expected()}, "
                             f"got {describe(value)}")
        return coerced

    def copy(self) -> Graph:
        """An independent snapshot (what a run executes while the editor goes on editing)."""
        g = Graph.__new__(Graph)
        g.__dict__.update({k: v for k, v in self.__dict__.items() if k != "registry"})
        g.registry = self.registry
        for key in ("nodes", "links", "groups", "meta", "extra", "raw"):
            setattr(g, key, copy.deepcopy(getattr(self, key)))
        return g

    def output_nodes(self) -> list[str]:
        out = []
        for n in self.nodes.values():
            cls = self.registry.get(n.type)
            if cls is not None and cls.output and n.mode == "active":
                out.append(n.id)
        return out

    def topological(self, only: Iterable[str] | None = None) -> list[str]:
        """Node ids in dependency order. Raises GraphError on a cycle."""
        ids = list(self.nodes) if only is None else [i for i in self.nodes if i in set(only)]
        idset = set(ids)
        return dependency_order(ids, ((l.src, l.dst) for l in self.links.values()
                                      if l.src in idset and l.dst in idset))


def _reachable(start: str, edges: Iterable[tuple[str, str]]) -> set[str]:
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
    """The given ids in dependency order over (source, target) edges between them.
    Raises GraphError naming the nodes of a cycle."""
    sorter = _sorter(ids, edges)
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise GraphError("the graph has a cycle: " + " -> ".join(exc.args[1])) from None


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


def _label(node: GraphNode) -> str:
    return f"{node.title or node.type} ({node.id})"
