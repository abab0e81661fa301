"""Workflow files: one versioned JSON format with named params.

Unknown node types and unknown fields are kept verbatim and written back. Files from a
newer Loom load read-only-safe: they run, and save back exactly as read, but a changed
one is not written, since this version would drop what it does not understand.
"""

from __future__ import annotations

import builtins
import copy
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import GraphError, WorkflowError
from .fsutil import WORKFLOW_LIMIT, atomic_write, read_user_file
from .graph import MODES, Graph, GraphNode, Group, Link
from .registry import Registry
from .text import SURROGATE_MESSAGE, lone_surrogate

FORMAT = "loom.workflow"
VERSION = 1

# File migrations: FILE_MIGRATIONS[v] turns a version-v document into a version v+1 one.
FILE_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_NODE_FIELDS = ("id", "type", "version", "title", "params", "pos", "mode")
_LINK_FIELDS = ("from", "to")
_GROUP_FIELDS = ("title", "nodes", "color")
_TOP_FIELDS = ("format", "version", "nodes", "links", "groups", "meta")


def load(path: str | os.PathLike[str], registry: Registry | None = None) -> Graph:
    path = Path(path)
    try:
        data = read_user_file(path, "workflow file", WORKFLOW_LIMIT)
    except OSError as exc:
        why = exc.strerror or exc
        raise WorkflowError(str(path), "", f"cannot read the file ({why})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkflowError(str(path), f"byte {exc.start}", "not UTF-8 text") from None
    graph = loads(text, file=str(path), registry=registry)
    graph.base_dir = path.resolve().parent
    return graph


def loads(text: str, *, file: str = "<workflow>", registry: Registry | None = None,
          migrations: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
          current: int = VERSION) -> Graph:
    doc = parse_json(text, file)
    return from_dict(doc, file=file, registry=registry, migrations=migrations, current=current)


def parse_json(text: str, file: str) -> Any:
    if not text.strip():
        raise WorkflowError(file, "", "the file is empty")
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise WorkflowError(file, f"line {exc.lineno}, column {exc.colno}",
                            f"not valid JSON: {exc.msg}") from None
    except _BadConstant as exc:
        raise WorkflowError(file, "", f"not valid JSON: {exc.args[0]}") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise WorkflowError(file, "", f"not readable: {exc}") from None
    except RecursionError:
        raise WorkflowError(file, "", "nested too deeply to be a workflow") from None
    where = lone_surrogate(doc)
    if where is not None:  # saving or printing it later would fail
        raise WorkflowError(file, where or "top level", SURROGATE_MESSAGE)
    return doc


class _BadConstant(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _BadConstant(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadConstant(f"the number {text[:40]} is too large")
    return value


def from_dict(doc: Any, *, file: str = "<workflow>", registry: Registry | None = None,
              migrations: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
              current: int = VERSION) -> Graph:
    r = _Reader(file)
    if not isinstance(doc, dict):
        raise WorkflowError(file, "top level", f"expected an object, got {_kind(doc)}")
    fmt = doc.get("format")
    if fmt != FORMAT:
        hint = ""
        if "nodes" in doc and "links" in doc and "last_node_id" in doc or any(
                isinstance(v, dict) and "class_type" in v for v in doc.values()):
            hint = " (this looks like a ComfyUI workflow)"
        raise WorkflowError(file, "format", f"expected {FORMAT!r}, got {fmt!r}{hint}")
    version = r.int(doc.get("version"), "version", minimum=1)
    migrations = FILE_MIGRATIONS if migrations is None else migrations
    newer = version > current
    raw = copy.deepcopy(doc) if newer else None  # written back as read unless changed
    if version < current:
        doc = copy.deepcopy(doc)
    while version < current:
        step = migrations.get(version)
        if step is None:
            raise WorkflowError(file, "version", f"no migration from file version {version}")
        doc = step(doc)
        version += 1
        doc["version"] = version

    graph = Graph(registry)
    graph.file_version = version
    if newer:
        graph.raw = raw
        graph.read_only = (f"written by a newer Loom (file version {version}; this one reads "
                           f"up to {current})")
    reg = graph.registry

    nodes = r.list(doc.get("nodes", []), "nodes")
    for i, nd in enumerate(nodes):
        place = f"nodes[{i}]"
        nd = r.obj(nd, place)
        node_id = r.str(nd.get("id"), f"{place}.id", nonempty=True)
        place = f"nodes[{i}] (id {node_id!r})"
        type_id = r.str(nd.get("type"), f"{place}.type", nonempty=True)
        params = r.obj(nd.get("params", {}), f"{place}.params")
        title = nd.get("title")
        if title is not None:
            r.str(title, f"{place}.title")
        pos = nd.get("pos", [0, 0])
        if not (isinstance(pos, list) and len(pos) == 2 and all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
                for p in pos)):
            raise WorkflowError(file, f"{place}.pos", f"expected [x, y] numbers, got {_short(pos)}")
        mode = nd.get("mode", "active")
        if mode not in MODES:
            raise WorkflowError(file, f"{place}.mode",
                                f"expected one of {list(MODES)}, got {_short(mode)}")
        node_version = r.int(nd.get("version", 1), f"{place}.version", minimum=1)
        extra = {k: v for k, v in nd.items() if k not in _NODE_FIELDS}
        cls = reg.get(type_id)
        if cls is not None:
            type_id = cls.type  # old aliases become the current id
            while node_version < cls.version:
                try:
                    params = cls.migrate(node_version, dict(params))
                except Exception as exc:
                    raise WorkflowError(file, place, f"cannot migrate {type_id} from version "
                                        f"{node_version}: {exc}") from None
                node_version += 1
        node = GraphNode(node_id, type_id, node_version, dict(params), title, tuple(pos), mode,
                         extra)
        if node_id in graph.nodes:
            raise WorkflowError(file, f"{place}.id", f"duplicate node id {node_id!r}")
        graph.insert(node)

    for i, ld in enumerate(r.list(doc.get("links", []), "links")):
        place = f"links[{i}]"
        ld = r.obj(ld, place)
        src = r.pair(ld.get("from"), f"{place}.from")
        dst = r.pair(ld.get("to"), f"{place}.to")
        for end, (nid, _) in (("from", src), ("to", dst)):
            if nid not in graph.nodes:
                raise WorkflowError(file, f"{place}.{end}", f"no node with id {nid!r}")
        if (dst[0], dst[1]) in graph.links:
            raise WorkflowError(file, f"{place}.to", f"input {dst[0]}.{dst[1]} is fed by two links")
        extra = {k: v for k, v in ld.items() if k not in _LINK_FIELDS}
        graph.links[(dst[0], dst[1])] = Link(src[0], src[1], dst[0], dst[1], extra)

    for i, gd in enumerate(r.list(doc.get("groups", []), "groups")):
        place = f"groups[{i}]"
        gd = r.obj(gd, place)
        title = r.str(gd.get("title", ""), f"{place}.title")
        members = [r.str(m, f"{place}.nodes[{j}]") for j, m in
                   enumerate(r.list(gd.get("nodes", []), f"{place}.nodes"))]
        color = gd.get("color")
        if color is not None:
            r.str(color, f"{place}.color")
        extra = {k: v for k, v in gd.items() if k not in _GROUP_FIELDS}
        graph.groups.append(Group(title, members, color, extra))

    graph.meta = dict(r.obj(doc.get("meta", {}), "meta"))
    graph.extra = {k: v for k, v in doc.items() if k not in _TOP_FIELDS}
    graph.revision = 0
    return graph


def to_dict(graph: Graph) -> dict[str, Any]:
    raw = getattr(graph, "raw", None)
    if raw is not None:
        if graph.revision != 0:
            raise GraphError(f"not saved: this workflow was {graph.read_only}, and it was "
                             "changed here; saving it would lose what this version does not "
                             "understand")
        return copy.deepcopy(raw)
    return _document(graph)


NOTE_KEY = "loom.note"


def embedded_dict(graph: Graph) -> dict[str, Any]:
    """The workflow to embed in an output file. A changed graph from a newer Loom, which
    `to_dict` refuses, is embedded as this version holds it, with a note in its meta saying
    so: an image should still tell how it was made."""
    if getattr(graph, "raw", None) is None or graph.revision == 0:
        return to_dict(graph)
    doc = _document(graph)
    doc["meta"] = {**doc["meta"], NOTE_KEY: (
        f"this workflow was {graph.read_only}, and changed by Loom file version {VERSION} "
        "before this run; fields that version did not know were kept as read, but the "
        "change may not mean the same to a newer Loom")}
    return doc


def _document(graph: Graph) -> dict[str, Any]:
    nodes = []
    for n in graph.nodes.values():
        d: dict[str, Any] = {"id": n.id, "type": n.type, "version": n.version}
        if n.title is not None:
            d["title"] = n.title
        d["params"] = n.params
        d["pos"] = list(n.pos)
        if n.mode != "active":
            d["mode"] = n.mode
        d.update(n.extra)
        nodes.append(d)
    links = [{"from": [l.src, l.src_output], "to": [l.dst, l.dst_input], **l.extra}
             for l in graph.links.values()]
    groups = []
    for g in graph.groups:
        gd: dict[str, Any] = {"title": g.title, "nodes": list(g.nodes)}
        if g.color is not None:
            gd["color"] = g.color
        gd.update(g.extra)
        groups.append(gd)
    doc = {"format": FORMAT, "version": graph.file_version or VERSION, "nodes": nodes,
           "links": links, "groups": groups, "meta": graph.meta}
    doc.update(graph.extra)
    return doc


def dumps(graph: Graph) -> str:
    return json.dumps(to_dict(graph), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def save(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write the workflow atomically (a temporary file renamed over the target)."""
    atomic_write(path, dumps(graph).encode("utf-8"))


class _Reader:
    """Type checks that name the file and the place in it."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, place: str, expected: str, got: Any) -> WorkflowError:
        return WorkflowError(self.file, place, f"expected {expected}, got {_short(got)}")

    def obj(self, v: Any, place: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(place, "an object", v)
        return v

    def list(self, v: Any, place: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(place, "a list", v)
        return v

    def str(self, v: Any, place: str, nonempty: bool = False) -> str:
        if not isinstance(v, str) or (nonempty and not v):
            raise self.fail(place, "a non-empty string" if nonempty else "a string", v)
        return v

    def int(self, v: Any, place: builtins.str, minimum: builtins.int | None = None
            ) -> builtins.int:
        if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
            raise self.fail(place, "an integer" + (f" of at least {minimum}" if minimum else ""), v)
        if v > 10**9:
            raise self.fail(place, "a plausible version number", v)
        return v

    def pair(self, v: Any, place: builtins.str) -> tuple[builtins.str, builtins.str]:
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) and x for x in v)):
            raise self.fail(place, '["node id", "port name"]', v)
        return v[0], v[1]


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_kind(v)} {text}" if not isinstance(v, (dict, list)) else f"{_kind(v)} {text}"
