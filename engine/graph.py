"""The graph model: nodes with stable ids and named params, links, groups.

Edits keep the graph valid or raise `GraphError` saying why, leaving it unchanged.
Nodes of unknown types (placeholders) are kept with all their data; edits around them
skip the checks that need a spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex, overload

from .errors import GraphError, describe
from .order import dependency_order, reachable
from .registry import Registry
from .types import can_connect

if TYPE_CHECKING:
    from .spec import Node

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
class Removed:
    """What `Graph.remove_items` took out, for `Graph.restore`."""

    nodes: list[GraphNode]
    links: list[Link]
    groups: list[Group]
    node_order: list[str]
    link_order: list[tuple[str, str]]


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

    @overload  # type: ignore[override]  # by name, unlike a tuple; by index still unpacks
    def __getitem__(self, name: str) -> OutRef: ...

    @overload
    def __getitem__(self, name: SupportsIndex) -> Any: ...

    def __getitem__(self, name: str | SupportsIndex) -> Any:
        if not isinstance(name, str):
            return tuple.__getitem__(self, name)
        return self.out(name)

    def out(self, name: str) -> OutRef:
        if self.outputs and name not in self.outputs:
            raise GraphError(f"node {self.id} has no output {name!r}; it has {list(self.outputs)}")
        return OutRef(self.id, name)


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

    def spec(self, node_id: str) -> type[Node] | None:
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
        return reachable(node_id, ((l.src, l.dst) for l in self.links.values()))

    def upstream(self, node_id: str) -> set[str]:
        """Every node that `node_id` depends on (not including itself)."""
        return reachable(node_id, ((l.dst, l.src) for l in self.links.values()))

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
        x, y = pos
        node = GraphNode(node_id, cls.type, cls.version, dict(params), title, (x, y))
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

    def connect(self, src: OutRef | NodeRef | tuple[str, str], dst: tuple[str, str],
                extra: dict[str, Any] | None = None) -> Link:
        """Wire an output to an input, replacing what fed that input before."""
        if isinstance(src, NodeRef):
            if len(src.outputs) != 1:
                raise GraphError(f"node {src.id} has {len(src.outputs)} outputs; name one")
            src = OutRef(src.id, src.outputs[0])
        self.node(src[0]), self.node(dst[0])
        why = self.link_problem(src, dst)
        if why is not None:
            raise GraphError(why)
        link = Link(src[0], src[1], dst[0], dst[1], dict(extra or {}))
        self.links[(dst[0], dst[1])] = link
        self.revision += 1
        return link

    def link_problem(self, src: tuple[str, str], dst: tuple[str, str],
                     name: Callable[[str], str] = str) -> str | None:
        """Why `src` may not feed `dst` (no such node or port, incompatible types, a cycle),
        or None if it may. `name` labels nodes in the message."""
        (src_id, out_name), (dst_id, in_name) = src, dst
        for nid in (src_id, dst_id):
            if nid not in self.nodes:
                return f"no node with id {nid!r}"
        a, b = self.nodes[src_id], self.nodes[dst_id]
        a_cls, b_cls = self.registry.get(a.type), self.registry.get(b.type)
        out_t = in_t = None
        if a_cls is not None:
            if out_name not in a_cls.output_map:
                return f"{_label(a)} has no output {out_name!r}; it has " \
                       f"{[o.name for o in a_cls.outputs]}"
            out_t = a_cls.output_map[out_name].type
        if b_cls is not None:
            if in_name not in b_cls.input_map:
                return f"{_label(b)} has no input {in_name!r}; it has " \
                       f"{[i.name for i in b_cls.inputs]}"
            in_t = b_cls.input_map[in_name].type
        where = f"{name(src_id)}.{out_name}", f"{name(dst_id)}.{in_name}"
        if out_t is not None and in_t is not None and not can_connect(out_t, in_t):
            return f"cannot connect {out_t.value} output {where[0]} to {in_t.value} input " \
                   f"{where[1]}"
        if src_id == dst_id or src_id in self.downstream(dst_id):
            return f"connecting {where[0]} to {where[1]} would make a cycle"
        return None

    def restore_link(self, link: Link) -> Link | None:
        """Put a link back exactly as it was written (undo, placeholders): no checks.
        Returns the link it replaced, if any."""
        key = (link.dst, link.dst_input)
        old = self.links.get(key)
        self.links[key] = copy.deepcopy(link)
        self.revision += 1
        return old

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

    def unset_param(self, node_id: str, name: str) -> None:
        """Drop a stored value, so the input's default applies again."""
        self.node(node_id).params.pop(name, None)
        self.revision += 1

    def set_title(self, node_id: str, title: str | None) -> None:
        self.node(node_id).title = title
        self.revision += 1

    def move(self, node_id: str, pos: tuple[float, float]) -> None:
        self.node(node_id).pos = (float(pos[0]), float(pos[1]))
        self.revision += 1

    def set_groups(self, groups: Iterable[Group]) -> None:
        """Replace the frames (add, remove, rename, recolour one)."""
        self.groups = copy.deepcopy(list(groups))
        self.revision += 1

    def set_link_extra(self, key: tuple[str, str], name: str, value: Any) -> Link:
        """Set (or with None drop) a field a link carries for editors, such as `reroutes`."""
        try:
            link = self.links[key]
        except KeyError:
            raise GraphError(f"nothing is connected to {key[0]}.{key[1]}") from None
        if value is None:
            link.extra.pop(name, None)
        else:
            link.extra[name] = copy.deepcopy(value)
        self.revision += 1
        return link

    def set_mode(self, node_id: str, mode: str) -> None:
        if mode not in MODES:
            raise GraphError(f"mode must be one of {MODES}, got {mode!r}")
        self.node(node_id).mode = mode
        self.revision += 1

    def _check_param(self, cls: type[Node], node_id: str, name: str, value: Any) -> Any:
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

    # ---- several items at once: paste, delete, and their undo -----------------------------
    def add_items(self, nodes: Iterable[GraphNode], links: Iterable[Link] = (),
                  groups: Iterable[Group] = ()) -> list[Link]:
        """Insert copies of `nodes`, then `links` (checked where both ends have a spec), then
        `groups`; all or nothing. Returns the links that the new ones replaced."""
        nodes, replaced = list(nodes), []
        try:
            for n in nodes:
                self.insert(copy.deepcopy(n))
            for link in links:
                old = self.links.get((link.dst, link.dst_input))
                if self.registry.get(self.node(link.src).type) is None or \
                        self.registry.get(self.node(link.dst).type) is None:
                    self.restore_link(link)  # placeholders: kept as written
                else:
                    self.connect((link.src, link.src_output), (link.dst, link.dst_input),
                                 link.extra)
                if old is not None:
                    replaced.append(old)
        except GraphError:
            for n in nodes:
                if n.id in self.nodes:
                    self.remove(n.id)
            for old in replaced:
                self.restore_link(old)
            raise
        if groups:
            self.set_groups(self.groups + copy.deepcopy(list(groups)))
        return replaced

    def remove_items(self, node_ids: Iterable[str],
                     link_keys: Iterable[tuple[str, str]] = ()) -> Removed:
        """Delete nodes (with every link touching them) and links; what `restore` needs
        to put them back exactly, order included."""
        ids, keys = list(node_ids), set(link_keys)
        for i in ids:
            self.node(i)
        idset = set(ids)
        gone = Removed([copy.deepcopy(self.nodes[i]) for i in ids],
                       [copy.deepcopy(l) for k, l in self.links.items()
                        if l.src in idset or l.dst in idset or k in keys],
                       copy.deepcopy(self.groups), list(self.nodes), list(self.links))
        for link in gone.links:
            self.links.pop((link.dst, link.dst_input), None)
        for i in ids:
            self.remove(i)
        return gone

    def restore(self, gone: Removed) -> None:
        """Undo `remove_items`: nodes, links, frames and the file's order as they were."""
        for n in gone.nodes:
            self.insert(copy.deepcopy(n))
        for link in gone.links:
            self.restore_link(link)
        self.reorder(gone.node_order, gone.link_order)
        self.set_groups(gone.groups)

    def reorder(self, node_ids: list[str], link_keys: list[tuple[str, str]]) -> None:
        """Put nodes and links in the given order (the file's order); others follow."""
        self.nodes = {k: self.nodes[k] for k in node_ids + list(self.nodes) if k in self.nodes}
        self.links = {k: self.links[k] for k in link_keys + list(self.links) if k in self.links}
        self.revision += 1

    def subgraph(self, ids: Iterable[str]) -> Graph:
        """A copy of the given nodes, the links among them and the frames wholly inside
        (what Copy puts on the clipboard)."""
        keep = set(ids)
        sub = Graph(self.registry)
        sub.nodes = {i: copy.deepcopy(n) for i, n in self.nodes.items() if i in keep}
        sub.links = {k: copy.deepcopy(l) for k, l in self.links.items()
                     if l.src in keep and l.dst in keep}
        sub.groups = [copy.deepcopy(g) for g in self.groups if set(g.nodes) <= keep]
        return sub

    def pasteable(self, sub: Graph, offset: tuple[float, float] = (0.0, 0.0)) -> Graph:
        """`sub` with ids renamed where they clash with this graph's, moved by `offset`:
        ready for `add_items` (ids already free are kept)."""
        rename: dict[str, str] = {}
        out = Graph(self.registry)
        for n in sub:
            new_id = n.id if n.id not in self.nodes and n.id not in rename.values() \
                else self.new_id(n.type.split("_")[0])
            while new_id in rename.values():
                new_id = new_id + "_"
            rename[n.id] = new_id
            out.nodes[new_id] = replace(copy.deepcopy(n), id=new_id,
                                        pos=(n.pos[0] + offset[0], n.pos[1] + offset[1]))
        for l in sub.links.values():
            link = Link(rename[l.src], l.src_output, rename[l.dst], l.dst_input,
                        copy.deepcopy(l.extra))
            out.links[(link.dst, link.dst_input)] = link
        out.groups = [Group(g.title, [rename[i] for i in g.nodes], g.color, dict(g.extra))
                      for g in sub.groups]
        return out

    def paste(self, sub: Graph, offset: tuple[float, float] = (0.0, 0.0)) -> Graph:
        """Add a copy of `sub` (ids renamed, moved by `offset`); returns what was added."""
        added = self.pasteable(sub, offset)
        self.add_items(added, added.links.values(), added.groups)
        return added

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


def _label(node: GraphNode) -> str:
    return f"{node.title or node.type} ({node.id})"
