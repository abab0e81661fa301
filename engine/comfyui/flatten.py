"""Stage 2, flattening: a read UI-format file -> flat `CNode`s. Subgraph instances (newer
files) and legacy group nodes are replaced by their inner nodes under namespaced ids
("instance:inner"), the links through them rewired, then each node's links are named by
its input slots."""

from __future__ import annotations

from typing import Any

from .nodes import CLink, CNode, Source, as_dict, as_list, is_int, mode, position
from .reading import UIDoc, link_tuple
from .report import Issue, Report
from .table import MAPPING

SUBGRAPH_IN, SUBGRAPH_OUT = -10, -20
MAX_DEPTH = 16


def flatten(ui: UIDoc, report: Report) -> list[CNode]:
    links = dict(ui.links)
    nodes = _flatten(ui.nodes, links, ui.subgraphs, ui.group_nodes, report)
    return _cnodes(nodes, links, report)


def _flatten(nodes: list[dict[str, Any]], links: dict[str, CLink], subgraphs: dict[str, Any],
             legacy: dict[str, Any], report: Report, depth: int = 0) -> list[dict[str, Any]]:
    """Replace subgraph instances and legacy group nodes by their inner nodes."""
    if depth > MAX_DEPTH:
        report.notes.append("subgraphs nested more than 16 deep; the rest kept as placeholders")
        return nodes
    changed = False
    flat: list[dict[str, Any]] = []
    for nd in nodes:
        t = nd.get("type")
        if isinstance(t, str) and t in subgraphs:
            flat += _expand_subgraph(nd, subgraphs[t], links)
            report.notes.append(f"subgraph {subgraphs[t].get('name') or t} (node {nd.get('id')})"
                                " was flattened into its nodes")
            changed = True
        elif isinstance(t, str) and (t.startswith("workflow/") or t.startswith("workflow>")) \
                and isinstance(legacy.get(t[9:]), dict):
            flat += _expand_group_node(nd, legacy[t[9:]], links, report)
            report.notes.append(f"group node {t[9:]} (node {nd.get('id')}) was flattened")
            changed = True
        else:
            flat.append(nd)
    if changed:
        return _flatten(flat, links, subgraphs, legacy, report, depth + 1)
    return flat


def _expand_subgraph(inst: dict[str, Any], sg: dict[str, Any], links: dict[str, CLink]
                     ) -> list[dict[str, Any]]:
    iid = str(inst.get("id"))
    base = position(inst.get("pos")) or (0.0, 0.0)
    inner = [dict(n) for n in as_list(sg.get("nodes")) if isinstance(n, dict)]
    ps = [position(n.get("pos")) or (0.0, 0.0) for n in inner]
    x0 = min((p[0] for p in ps), default=0.0)
    y0 = min((p[1] for p in ps), default=0.0)
    by_old: dict[str, dict[str, Any]] = {}
    for n, p in zip(inner, ps):
        by_old[str(n.get("id"))] = n
        n["id"] = f"{iid}:{n.get('id')}"
        n["pos"] = [base[0] + p[0] - x0, base[1] + p[1] - y0]
        if mode(inst.get("mode")) != "active" and mode(n.get("mode")) == "active":
            n["mode"] = inst["mode"]
        n["_overrides"] = {}
    inst_inputs = [i for i in as_list(inst.get("inputs")) if isinstance(i, dict)]
    # outer links into the instance, by its input slot; out of it, by output slot
    into = {l.dst_slot: l for l in links.values() if l.dst == iid}
    outof: dict[int, list[CLink]] = {}
    for l in links.values():
        if l.src == iid:
            outof.setdefault(l.src_slot, []).append(l)
    for key in [k for k, l in links.items() if iid in (l.src, l.dst)]:
        del links[key]
    widget_values = list(inst.get("widgets_values") or []) \
        if isinstance(inst.get("widgets_values"), list) else []
    # values of promoted widgets: on the instance in order of its widget inputs ...
    proxies = as_dict(inst.get("properties")).get("proxyWidgets")
    widget_inputs = [k for k, i in enumerate(inst_inputs) if i.get("widget")]
    promoted = {} if isinstance(proxies, list) else {
        k: widget_values[j] for j, k in enumerate(widget_inputs) if j < len(widget_values)}
    for ld in as_list(sg.get("links")):
        t = link_tuple(ld)
        if t is None:
            continue
        lid = f"{iid}:{t.id}"
        if t.src == SUBGRAPH_IN:
            outer = into.get(t.src_slot)
            target = by_old.get(str(t.dst))
            if outer is not None:
                links[lid] = CLink(lid, outer.src, outer.src_slot, f"{iid}:{t.dst}", t.dst_slot)
            elif t.src_slot in promoted and target is not None:
                name = _input_name(target, t.dst_slot)
                if name:
                    target["_overrides"][name] = promoted[t.src_slot]
        elif t.dst == SUBGRAPH_OUT:
            for outer in outof.get(t.dst_slot, []):
                key = f"{lid}>{outer.id}"
                links[key] = CLink(key, f"{iid}:{t.src}", t.src_slot, outer.dst, outer.dst_slot)
        else:
            links[lid] = CLink(lid, f"{iid}:{t.src}", t.src_slot, f"{iid}:{t.dst}", t.dst_slot)
    # ... or named by properties.proxyWidgets = [[inner id, widget name], ...]
    if isinstance(proxies, list):
        for j, pw in enumerate(proxies):
            if isinstance(pw, list) and len(pw) == 2 and str(pw[0]) in by_old \
                    and j < len(widget_values):
                by_old[str(pw[0])]["_overrides"][str(pw[1])] = widget_values[j]
    return inner


def _input_name(node: dict[str, Any], slot: Any) -> str | None:
    inputs = [i for i in as_list(node.get("inputs")) if isinstance(i, dict)]
    if isinstance(slot, int) and 0 <= slot < len(inputs):
        name = inputs[slot].get("name")
        return name if isinstance(name, str) else None
    return None


def _expand_group_node(inst: dict[str, Any], cfg: dict[str, Any], links: dict[str, CLink],
                       report: Report) -> list[dict[str, Any]]:
    """A legacy group node (extra.groupNodes): inner nodes by index, internal links as
    [src index, src slot, dst index, dst slot, ...]; the instance's inputs are the inner
    inputs not linked inside, its outputs the inner outputs not used inside (or listed in
    `external`), both in inner-node order."""
    iid = str(inst.get("id"))
    base = position(inst.get("pos")) or (0.0, 0.0)
    inner = [dict(n) for n in as_list(cfg.get("nodes")) if isinstance(n, dict)]
    internal = [l for l in as_list(cfg.get("links")) if isinstance(l, list) and len(l) >= 4
                and all(is_int(v) for v in l[:4])]
    linked_in = {(l[2], l[3]) for l in internal}
    linked_out = {(l[0], l[1]) for l in internal}
    external = {(e[0], e[1]) for e in as_list(cfg.get("external"))
                if isinstance(e, list) and len(e) >= 2 and is_int(e[0]) and is_int(e[1])}
    for k, n in enumerate(inner):
        idx = n.get("index", k)
        idx = idx if is_int(idx) else k
        n["_index"] = idx
        n["id"] = f"{iid}:{idx}"
        n["pos"] = [base[0] + 40 * k, base[1] + 60 * k]
        n["mode"] = inst.get("mode", n.get("mode", 0))
        n["_overrides"] = {}
    by_index = {n["_index"]: n for n in inner}
    for j, l in enumerate(internal):
        src, dst = by_index.get(l[0]), by_index.get(l[2])
        if src is None or dst is None:
            report.notes.append(f"group node {iid}: internal link {l[:4]} to a missing node")
            continue
        lid = f"{iid}:g{j}"
        links[lid] = CLink(lid, src["id"], l[1], dst["id"], l[3])
    in_slots: list[Source] = []
    out_slots: list[Source] = []
    for n in inner:
        for s, _ in enumerate(as_list(n.get("inputs"))):
            if (n["_index"], s) not in linked_in:
                in_slots.append(Source(n["id"], s))
        for s, _ in enumerate(as_list(n.get("outputs"))):
            if (n["_index"], s) not in linked_out or (n["_index"], s) in external:
                out_slots.append(Source(n["id"], s))
    for key, cl in list(links.items()):
        if cl.dst == iid:
            if isinstance(cl.dst_slot, int) and cl.dst_slot < len(in_slots):
                to = in_slots[cl.dst_slot]
                links[key] = cl._replace(id=key, dst=to.node, dst_slot=to.slot)
            else:
                report.links.append(Issue(iid, str(cl.dst_slot), None, "group node input slot "
                                          "not found in its definition"))
                del links[key]
        elif cl.src == iid:
            if isinstance(cl.src_slot, int) and cl.src_slot < len(out_slots):
                frm = out_slots[cl.src_slot]
                links[key] = cl._replace(id=key, src=frm.node, src_slot=frm.slot)
            else:
                report.links.append(Issue(cl.dst, str(cl.dst_slot), None, "group node output "
                                          "slot not found in its definition"))
                del links[key]
    # the instance's widget values, split over the inner nodes in order
    values = inst.get("widgets_values")
    if isinstance(values, list) and values:
        sizes = [len(as_list(n.get("widgets_values"))) for n in inner]
        if sum(sizes) == len(values):
            pos = 0
            for n, size in zip(inner, sizes):
                n["widgets_values"] = values[pos: pos + size]
                pos += size
        else:
            report.notes.append(f"group node {iid}: {len(values)} widget values for "
                                f"{sum(sizes)} inner widgets; the definition's values kept")
    return inner


def _cnodes(nodes: list[dict[str, Any]], links: dict[str, CLink], report: Report
            ) -> list[CNode]:
    out: dict[str, CNode] = {}
    for nd in nodes:
        nid = str(nd.get("id"))
        ctype = nd.get("type")
        if not isinstance(ctype, str) or not ctype:
            report.values.append(Issue(nid, "type", ctype, "no type; node skipped"))
            continue
        if nid in out:
            report.notes.append(f"duplicate node id {nid}; the second was skipped")
            continue
        node = CNode(nid, ctype, raw=nd, mode=mode(nd.get("mode")),
                     pos=position(nd.get("pos")), overrides=dict(as_dict(nd.get("_overrides"))))
        if isinstance(nd.get("title"), str) and nd["title"] not in (
                ctype, MAPPING[ctype].title if ctype in MAPPING else None):
            node.title = nd["title"]
        wv = nd.get("widgets_values")
        if isinstance(wv, list):
            node.widgets = list(wv)
        elif isinstance(wv, dict):
            node.literals.update(wv)
        for inp in as_list(nd.get("inputs")):
            if isinstance(inp, dict):
                node.input_names.append(str(inp.get("name", "")))
        for o in as_list(nd.get("outputs")):
            node.output_names.append(str(o.get("name", "")) if isinstance(o, dict) else "")
        out[nid] = node
    for lid, l in links.items():
        d = out.get(l.dst)
        if d is None:
            continue
        if l.src not in out:
            report.links.append(Issue(l.dst, _slot_name(d, l.dst_slot), None,
                                      f"link {lid} comes from node {l.src}, which the file "
                                      "does not have"))
            continue
        if not isinstance(l.dst_slot, int) or not 0 <= l.dst_slot < len(d.input_names):
            report.links.append(Issue(l.dst, str(l.dst_slot), None, f"link {lid} goes to input "
                                      f"slot {l.dst_slot}, which the node does not have"))
            continue
        if not isinstance(l.src_slot, int) or l.src_slot < 0:
            report.links.append(Issue(l.dst, d.input_names[l.dst_slot], None,
                                      f"link {lid} has a bad output slot {l.src_slot!r}"))
            continue
        d.links[d.input_names[l.dst_slot]] = Source(l.src, l.src_slot)
    report.nodes = len(out)
    return list(out.values())


def _slot_name(node: CNode, slot: Any) -> str:
    if isinstance(slot, int) and 0 <= slot < len(node.input_names):
        return node.input_names[slot]
    return str(slot)
