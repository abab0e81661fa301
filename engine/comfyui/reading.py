"""Stage 1, reading: a parsed ComfyUI document -> raw nodes. The API format gives `CNode`s
with links by name at once; the UI format gives its node objects and links as they are,
with the subgraph and group-node definitions the next stage expands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .nodes import CLink, CNode, Source, as_dict, as_list, is_int
from .report import Issue, Report, short
from .table import MAPPING


def is_comfyui(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("format") == "loom.workflow":
        return False
    if isinstance(doc.get("nodes"), list) and ("links" in doc or "last_node_id" in doc
                                               or "definitions" in doc):
        return True
    return bool(doc) and all(isinstance(v, dict) and "class_type" in v for v in doc.values())


def is_ui(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("nodes"), list)


def read_api(doc: dict[str, Any], report: Report) -> list[CNode]:
    out = []
    for nid, nd in doc.items():
        nid = str(nid)
        ctype = nd.get("class_type")
        if not isinstance(ctype, str) or not ctype:
            report.values.append(Issue(nid, "class_type", ctype, "no class_type; node skipped"))
            continue
        inputs = nd.get("inputs", {})
        if not isinstance(inputs, dict):
            report.values.append(Issue(nid, "inputs", inputs, "expected an object of inputs"))
            inputs = {}
        node = CNode(nid, ctype, raw=nd)
        meta = nd.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str):
            default = MAPPING[ctype].title if ctype in MAPPING else ctype
            if meta["title"] not in (default, ctype):
                node.title = meta["title"]
        for name, v in inputs.items():
            if _is_api_link(v):
                node.links[name] = Source(str(v[0]), int(v[1]))
            else:
                node.literals[name] = v
            node.input_names.append(name)
        out.append(node)
    ids = {n.id for n in out}
    for n in out:
        for name, src in list(n.links.items()):
            if src.node not in ids:
                report.links.append(Issue(n.id, name, None, f"links to node {src.node!r}, "
                                          "which the file does not have"))
                del n.links[name]
    report.nodes = len(out)
    return out


def _is_api_link(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
            and not isinstance(v[0], bool) and is_int(v[1]))


@dataclass(frozen=True)
class UIDoc:
    """A UI-format file's parts, read but not yet flattened."""

    nodes: list[dict[str, Any]]
    links: dict[str, CLink]  # by link id
    subgraphs: dict[str, dict[str, Any]]  # definitions.subgraphs, by id
    group_nodes: dict[str, Any]  # extra.groupNodes (legacy), by name
    groups: list[dict[str, Any]]


def link_tuple(ld: Any) -> CLink | None:
    """[id, src, src_slot, dst, dst_slot, type] or the object form -> a CLink."""
    t: tuple[Any, ...] | None = None
    if isinstance(ld, list) and len(ld) >= 5:
        t = tuple(ld[:5])
    elif isinstance(ld, dict) and all(k in ld for k in ("id", "origin_id", "origin_slot",
                                                        "target_id", "target_slot")):
        t = (ld["id"], ld["origin_id"], ld["origin_slot"], ld["target_id"], ld["target_slot"])
    if t is None or not (is_int(t[2]) and is_int(t[4])) or any(
            isinstance(v, (list, dict)) for v in (t[0], t[1], t[3])):
        return None
    return CLink(*t)


def read_ui(doc: dict[str, Any], report: Report) -> UIDoc:
    nodes = [n for n in doc.get("nodes", []) if isinstance(n, dict)]
    bad = len(doc.get("nodes", [])) - len(nodes)
    if bad:
        report.notes.append(f"{bad} entry(ies) in 'nodes' are not objects; skipped")
    links_raw = doc.get("links", [])
    links: dict[str, CLink] = {}
    for ld in links_raw if isinstance(links_raw, list) else []:
        t = link_tuple(ld)
        if t is None:
            report.notes.append(f"unreadable link {short(ld)}; skipped")
            continue
        links[str(t.id)] = CLink(str(t.id), str(t.src), t.src_slot, str(t.dst), t.dst_slot)
    defs = as_dict(doc.get("definitions"))
    subgraphs = {sg["id"]: sg for sg in as_list(defs.get("subgraphs"))
                 if isinstance(sg, dict) and isinstance(sg.get("id"), str)}
    legacy = as_dict(as_dict(doc.get("extra")).get("groupNodes"))
    groups = [g for g in as_list(doc.get("groups")) if isinstance(g, dict)]
    return UIDoc(nodes, links, subgraphs, legacy, groups)
