"""ComfyUI workflow files (API format, UI format, PNGs carrying either) -> Loom graphs.

Both formats are first brought to one flat list of nodes with named literal values and
links by output slot (subgraphs and legacy group nodes flattened into namespaced ids,
Reroutes followed, PrimitiveNodes folded into the inputs they feed); then every node is
mapped through `table.MAPPING`, or kept as a placeholder holding all its original data.
Nothing here runs code from the file, and nothing raises on bad content: what cannot be
carried is listed in the `Report`. Only a file that is not a ComfyUI workflow at all raises
`WorkflowError`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from ..graph import Graph, GraphNode, Group, Link
from ..protocols import ModelPaths
from ..registry import Registry
from ..text import SURROGATE_MESSAGE, lone_surrogate
from ..workflow import _kind
from .table import KNOWN_MISSING, MAPPING, Drop, Lossy, Map

PLACEHOLDER_PREFIX = "comfyui:"
MODES = {2: "muted", 4: "bypassed"}
SUBGRAPH_IN, SUBGRAPH_OUT = -10, -20
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")
# Loom params that name model files, and the model-folder kinds they are looked up in.
MODEL_PARAMS = {("load_checkpoint", "ckpt_name"): ("checkpoints", "diffusers"),
                ("load_vae", "vae_name"): ("vae",),
                ("load_lora", "lora_name"): ("loras",),
                ("load_controlnet", "control_net_name"): ("controlnet",),
                ("load_upscale_model", "upscale_model_name"): ("upscale_models",),
                ("load_diffusion_model", "unet_name"): ("diffusion_models",)}


@dataclass
class Issue:
    node: str
    input: str
    value: Any
    why: str

    def __str__(self) -> str:
        where = f"{self.node}.{self.input}" if self.input else self.node
        value = "" if self.value is None else f" = {_short(self.value)}"
        return f"{where}{value}: {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "input": self.input, "value": _jsonable(self.value),
                "why": self.why}


@dataclass
class Report:
    """What the import carried over and what it could not."""

    file: str = ""
    format: str = ""  # "api" or "ui"
    nodes: int = 0  # ComfyUI nodes read (after flattening subgraphs)
    mapped: Counter[str] = field(default_factory=Counter)  # ComfyUI class type -> count
    structural: Counter[str] = field(default_factory=Counter)  # Reroute / PrimitiveNode folded
    placeholders: dict[str, list[str]] = field(default_factory=dict)  # type -> node ids
    values: list[Issue] = field(default_factory=list)  # values not carried, or changed
    links: list[Issue] = field(default_factory=list)  # links not carried
    models: list[Issue] = field(default_factory=list)  # model files not found
    notes: list[str] = field(default_factory=list)

    @property
    def mapped_count(self) -> int:
        return sum(self.mapped.values())

    @property
    def placeholder_count(self) -> int:
        return sum(len(v) for v in self.placeholders.values())

    def share_mapped(self) -> float:
        n = self.mapped_count + self.placeholder_count
        return self.mapped_count / n if n else 1.0

    def problems(self) -> list[tuple[str, str, str]]:
        """(node id, input, message) for the editor's problems panel."""
        out = []
        for t, ids in self.placeholders.items():
            why = KNOWN_MISSING.get(t, "not a node Loom knows (a custom node?)")
            out += [(i, "", f"ComfyUI {t}: kept as a placeholder; {why}") for i in ids]
        out += [(m.node, m.input, f"model not found: {m.value} ({m.why})") for m in self.models]
        out += [(v.node, v.input, f"{_short(v.value)}: {v.why}") for v in self.values]
        out += [(v.node, v.input, v.why) for v in self.links]
        return out

    def text(self) -> str:
        lines = [f"{self.file}: ComfyUI {self.format.upper()} format, {self.nodes} node(s)",
                 f"mapped: {self.mapped_count} node(s)"
                 + (f" ({', '.join(f'{k} x{v}' for k, v in sorted(self.mapped.items()))})"
                    if self.mapped else "")]
        if self.structural:
            lines.append("folded: " + ", ".join(f"{k} x{v}" for k, v in
                                                sorted(self.structural.items())))
        if self.placeholders:
            lines.append(f"kept as placeholders: {self.placeholder_count} node(s)")
            for t, ids in sorted(self.placeholders.items()):
                why = KNOWN_MISSING.get(t, "unknown to Loom (a custom node?)")
                lines.append(f"  {t} x{len(ids)} ({', '.join(ids)}): {why}")
        else:
            lines.append("kept as placeholders: none")
        if self.models:
            lines.append("models not found:")
            lines += [f"  {m.node}.{m.input} = {m.value}: {m.why}" for m in self.models]
        if self.values:
            lines.append("values not carried as they were:")
            lines += [f"  {v}" for v in self.values]
        if self.links:
            lines.append("links not carried:")
            lines += [f"  {v}" for v in self.links]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "nodes": self.nodes,
                "mapped": dict(self.mapped), "structural": dict(self.structural),
                "placeholders": self.placeholders,
                "values": [v.to_dict() for v in self.values],
                "links": [v.to_dict() for v in self.links],
                "models": [v.to_dict() for v in self.models], "notes": self.notes}


@dataclass
class CNode:
    """One ComfyUI node, either format, flattened."""

    id: str
    type: str
    literals: dict[str, Any] = field(default_factory=dict)  # named input values
    widgets: list[Any] | None = None  # UI format: positional widget values
    links: dict[str, tuple[str, int]] = field(default_factory=dict)  # input -> (src, slot)
    overrides: dict[str, Any] = field(default_factory=dict)  # named values that win
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    title: str | None = None
    pos: tuple[float, float] | None = None
    mode: str = "active"
    raw: Any = None
    reroutes: dict[str, list[list[float]]] = field(default_factory=dict)  # input -> points


# ---- reading files ---------------------------------------------------------------------------

def is_comfyui(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("format") == "loom.workflow":
        return False
    if isinstance(doc.get("nodes"), list) and ("links" in doc or "last_node_id" in doc
                                               or "definitions" in doc):
        return True
    return bool(doc) and all(isinstance(v, dict) and "class_type" in v for v in doc.values())


def read(path: str | Path) -> Any:
    """The ComfyUI document in a .json file or a PNG's text chunks (workflow, else prompt)."""
    from ..fsutil import WORKFLOW_LIMIT, open_user_file, read_user_file
    from ..pngmeta import NotPNG, read_text
    from ..workflow import parse_json

    path = Path(path)
    try:
        with open_user_file(path, "workflow file") as f:
            head = f.read(8)
        if not head.startswith(b"\x89PNG"):
            data = read_user_file(path, "workflow file", WORKFLOW_LIMIT)
    except OSError as exc:
        raise WorkflowError(str(path), "", f"cannot read the file ({exc.strerror or exc})") \
            from None
    if head.startswith(b"\x89PNG"):
        try:
            chunks = read_text(path)
        except (OSError, NotPNG) as exc:
            raise WorkflowError(str(path), "", f"not a readable PNG ({exc})") from None
        for key in ("workflow", "prompt"):
            if key in chunks:
                doc = parse_json(chunks[key], f"{path} ({key} chunk)")
                if is_comfyui(doc):
                    return doc
        raise WorkflowError(str(path), "", "this PNG carries no ComfyUI workflow (no "
                            "'workflow' or 'prompt' text chunk)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkflowError(str(path), f"byte {exc.start}", "not UTF-8 text") from None
    return parse_json(text, str(path))


def load(path: str | Path, registry: Registry | None = None, models: ModelPaths | None = None
         ) -> tuple[Graph, Report]:
    path = Path(path)
    graph, report = convert(read(path), registry=registry, models=models, file=str(path))
    graph.base_dir = path.resolve().parent
    return graph, report


# ---- conversion ------------------------------------------------------------------------------

def convert(doc: Any, *, registry: Registry | None = None, models: ModelPaths | None = None,
            file: str = "<comfyui>") -> tuple[Graph, Report]:
    """A ComfyUI document (parsed JSON) -> a Loom graph and the report of what was carried.
    `models` (engine.modelpaths.ModelFolders) is where model names are looked up."""
    if not isinstance(doc, dict):
        raise WorkflowError(file, "top level", f"expected a ComfyUI workflow (an object), got "
                            f"{_kind(doc)}")
    if not is_comfyui(doc):
        raise WorkflowError(file, "top level", "not a ComfyUI workflow: expected an API-format "
                            "object of nodes with 'class_type', or a UI-format object with "
                            "'nodes' and 'links'")
    where = lone_surrogate(doc)
    if where is not None:
        raise WorkflowError(file, where or "top level", SURROGATE_MESSAGE)
    report = Report(file=file)
    if isinstance(doc.get("nodes"), list):
        report.format = "ui"
        cnodes, groups = _from_ui(doc, report)
    else:
        report.format = "api"
        cnodes, groups = _from_api(doc, report), []
    graph = Graph(registry)
    _build(graph, cnodes, report, models)
    for g in groups:
        graph.groups.append(_group(g, cnodes))
    if report.format == "api":
        _layout(graph)
    graph.meta["comfyui"] = {"format": report.format, "file": Path(file).name}
    graph.revision = 0
    return graph, report


def _from_api(doc: dict[str, Any], report: Report) -> list[CNode]:
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
                node.links[name] = (str(v[0]), int(v[1]))
            else:
                node.literals[name] = v
            node.input_names.append(name)
        out.append(node)
    ids = {n.id for n in out}
    for n in out:
        for name, (src, _) in list(n.links.items()):
            if src not in ids:
                report.links.append(Issue(n.id, name, None, f"links to node {src!r}, which the "
                                          "file does not have"))
                del n.links[name]
    report.nodes = len(out)
    return _fold_structural(out, report)


def _is_api_link(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
            and not isinstance(v[0], bool) and isinstance(v[1], int)
            and not isinstance(v[1], bool))


# UI format ------------------------------------------------------------------------------------

# a UI-format link: (link id, source node id, source slot, target node id, target slot)
CLink = tuple[str, str, Any, str, Any]


def _link_tuple(ld: Any) -> tuple[Any, ...] | None:
    """[id, src, src_slot, dst, dst_slot, type] or the object form -> a tuple of those."""
    t = None
    if isinstance(ld, list) and len(ld) >= 5:
        t = tuple(ld[:5])
    elif isinstance(ld, dict) and all(k in ld for k in ("id", "origin_id", "origin_slot",
                                                        "target_id", "target_slot")):
        t = (ld["id"], ld["origin_id"], ld["origin_slot"], ld["target_id"], ld["target_slot"])
    if t is None or not (_is_int(t[2]) and _is_int(t[4])) or any(
            isinstance(v, (list, dict)) for v in (t[0], t[1], t[3])):
        return None
    return t


def _from_ui(doc: dict[str, Any], report: Report) -> tuple[list[CNode], list[Any]]:
    nodes = [n for n in doc.get("nodes", []) if isinstance(n, dict)]
    bad = len(doc.get("nodes", [])) - len(nodes)
    if bad:
        report.notes.append(f"{bad} entry(ies) in 'nodes' are not objects; skipped")
    links_raw = doc.get("links", [])
    links: dict[str, CLink] = {}
    for ld in links_raw if isinstance(links_raw, list) else []:
        t = _link_tuple(ld)
        if t is None:
            report.notes.append(f"unreadable link {_short(ld)}; skipped")
            continue
        links[str(t[0])] = (str(t[0]), str(t[1]), t[2], str(t[3]), t[4])
    # subgraphs (newer files) and legacy group nodes become plain nodes with namespaced ids
    defs = _dict(doc.get("definitions"))
    subgraphs = {sg["id"]: sg for sg in _list(defs.get("subgraphs"))
                 if isinstance(sg, dict) and isinstance(sg.get("id"), str)}
    extra = _dict(doc.get("extra"))
    legacy = _dict(extra.get("groupNodes"))
    nodes, links = _flatten(nodes, links, subgraphs, legacy, report)

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
        node = CNode(nid, ctype, raw=nd, mode=_mode(nd.get("mode")),
                     pos=_pos(nd.get("pos")), overrides=dict(_dict(nd.get("_overrides"))))
        if isinstance(nd.get("title"), str) and nd["title"] not in (
                ctype, MAPPING[ctype].title if ctype in MAPPING else None):
            node.title = nd["title"]
        wv = nd.get("widgets_values")
        if isinstance(wv, list):
            node.widgets = list(wv)
        elif isinstance(wv, dict):
            node.literals.update(wv)
        for inp in _list(nd.get("inputs")):
            if isinstance(inp, dict):
                node.input_names.append(str(inp.get("name", "")))
        for o in _list(nd.get("outputs")):
            node.output_names.append(str(o.get("name", "")) if isinstance(o, dict) else "")
        out[nid] = node
    for lid, (_, src, src_slot, dst, dst_slot) in links.items():
        d = out.get(dst)
        if d is None:
            continue
        if src not in out:
            report.links.append(Issue(dst, _slot_name(d, dst_slot), None,
                                      f"link {lid} comes from node {src}, which the file "
                                      "does not have"))
            continue
        if not isinstance(dst_slot, int) or not 0 <= dst_slot < len(d.input_names):
            report.links.append(Issue(dst, str(dst_slot), None, f"link {lid} goes to input slot "
                                      f"{dst_slot}, which the node does not have"))
            continue
        if not isinstance(src_slot, int) or src_slot < 0:
            report.links.append(Issue(dst, d.input_names[dst_slot], None,
                                      f"link {lid} has a bad output slot {src_slot!r}"))
            continue
        d.links[d.input_names[dst_slot]] = (src, src_slot)
    report.nodes = len(out)
    groups = [g for g in _list(doc.get("groups")) if isinstance(g, dict)]
    return _fold_structural(list(out.values()), report), groups


def _slot_name(node: CNode, slot: Any) -> str:
    if isinstance(slot, int) and 0 <= slot < len(node.input_names):
        return node.input_names[slot]
    return str(slot)


def _flatten(nodes: list[dict[str, Any]], links: dict[str, CLink], subgraphs: dict[str, Any],
             legacy: dict[str, Any], report: Report, depth: int = 0
             ) -> tuple[list[dict[str, Any]], dict[str, CLink]]:
    """Replace subgraph instances and legacy group nodes by their inner nodes."""
    if depth > 16:
        report.notes.append("subgraphs nested more than 16 deep; the rest kept as placeholders")
        return nodes, links
    changed = False
    flat: list[dict[str, Any]] = []
    for nd in nodes:
        t = nd.get("type")
        if isinstance(t, str) and t in subgraphs:
            flat += _expand_subgraph(nd, subgraphs[t], links, report)
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
    return flat, links


def _expand_subgraph(inst: dict[str, Any], sg: dict[str, Any], links: dict[str, CLink],
                     report: Report) -> list[dict[str, Any]]:
    iid = str(inst.get("id"))
    base = _pos(inst.get("pos")) or (0.0, 0.0)
    inner = [dict(n) for n in _list(sg.get("nodes")) if isinstance(n, dict)]
    ps = [_pos(n.get("pos")) or (0.0, 0.0) for n in inner]
    x0 = min((p[0] for p in ps), default=0.0)
    y0 = min((p[1] for p in ps), default=0.0)
    by_old: dict[str, dict[str, Any]] = {}
    for n, p in zip(inner, ps):
        by_old[str(n.get("id"))] = n
        n["id"] = f"{iid}:{n.get('id')}"
        n["pos"] = [base[0] + p[0] - x0, base[1] + p[1] - y0]
        if _mode(inst.get("mode")) != "active" and _mode(n.get("mode")) == "active":
            n["mode"] = inst["mode"]
        n["_overrides"] = {}
    inst_inputs = [i for i in _list(inst.get("inputs")) if isinstance(i, dict)]
    # outer links into the instance, by its input slot; out of it, by output slot
    into = {l[4]: l for l in links.values() if l[3] == iid}
    outof: dict[int, list[CLink]] = {}
    for l in links.values():
        if l[1] == iid:
            outof.setdefault(l[2], []).append(l)
    for key in [k for k, l in links.items() if l[1] == iid or l[3] == iid]:
        del links[key]
    widget_values = list(inst.get("widgets_values") or []) \
        if isinstance(inst.get("widgets_values"), list) else []
    # values of promoted widgets: on the instance in order of its widget inputs ...
    props = _dict(inst.get("properties"))
    proxies = props.get("proxyWidgets")
    widget_inputs = [k for k, i in enumerate(inst_inputs) if i.get("widget")]
    promoted = {} if isinstance(proxies, list) else {
        k: widget_values[j] for j, k in enumerate(widget_inputs) if j < len(widget_values)}
    for ld in _list(sg.get("links")):
        t = _link_tuple(ld)
        if t is None:
            continue
        lid, src, src_slot, dst, dst_slot = t
        lid = f"{iid}:{lid}"
        if src == SUBGRAPH_IN:
            outer = into.get(src_slot)
            target = by_old.get(str(dst))
            if outer is not None:
                links[lid] = (lid, outer[1], outer[2], f"{iid}:{dst}", dst_slot)
            elif src_slot in promoted and target is not None:
                name = _input_name(target, dst_slot)
                if name:
                    target["_overrides"][name] = promoted[src_slot]
        elif dst == SUBGRAPH_OUT:
            for outer in outof.get(dst_slot, []):
                links[f"{lid}>{outer[0]}"] = (f"{lid}>{outer[0]}", f"{iid}:{src}", src_slot,
                                              outer[3], outer[4])
        else:
            links[lid] = (lid, f"{iid}:{src}", src_slot, f"{iid}:{dst}", dst_slot)
    # ... or named by properties.proxyWidgets = [[inner id, widget name], ...]
    if isinstance(proxies, list):
        for j, pw in enumerate(proxies):
            if isinstance(pw, list) and len(pw) == 2 and str(pw[0]) in by_old \
                    and j < len(widget_values):
                by_old[str(pw[0])]["_overrides"][str(pw[1])] = widget_values[j]
    return inner


def _input_name(node: dict[str, Any], slot: Any) -> str | None:
    inputs = [i for i in _list(node.get("inputs")) if isinstance(i, dict)]
    if isinstance(slot, int) and 0 <= slot < len(inputs):
        return inputs[slot].get("name")
    return None


def _expand_group_node(inst: dict[str, Any], cfg: dict[str, Any], links: dict[str, CLink],
                       report: Report) -> list[dict[str, Any]]:
    """A legacy group node (extra.groupNodes): inner nodes by index, internal links as
    [src index, src slot, dst index, dst slot, ...]; the instance's inputs are the inner
    inputs not linked inside, its outputs the inner outputs not used inside (or listed in
    `external`), both in inner-node order."""
    iid = str(inst.get("id"))
    base = _pos(inst.get("pos")) or (0.0, 0.0)
    inner = [dict(n) for n in _list(cfg.get("nodes")) if isinstance(n, dict)]
    internal = [l for l in _list(cfg.get("links")) if isinstance(l, list) and len(l) >= 4
                and all(_is_int(v) for v in l[:4])]
    linked_in = {(l[2], l[3]) for l in internal}
    linked_out = {(l[0], l[1]) for l in internal}
    external = {(e[0], e[1]) for e in _list(cfg.get("external"))
                if isinstance(e, list) and len(e) >= 2 and _is_int(e[0]) and _is_int(e[1])}
    for k, n in enumerate(inner):
        idx = n.get("index", k)
        idx = idx if _is_int(idx) else k
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
        links[lid] = (lid, src["id"], l[1], dst["id"], l[3])
    in_slots: list[tuple[str, int]] = []
    out_slots: list[tuple[str, int]] = []
    for n in inner:
        for s, _ in enumerate(_list(n.get("inputs"))):
            if (n["_index"], s) not in linked_in:
                in_slots.append((n["id"], s))
        for s, _ in enumerate(_list(n.get("outputs"))):
            if (n["_index"], s) not in linked_out or (n["_index"], s) in external:
                out_slots.append((n["id"], s))
    for key, cl in list(links.items()):
        if cl[3] == iid:
            if isinstance(cl[4], int) and cl[4] < len(in_slots):
                dst_id, slot = in_slots[cl[4]]
                links[key] = (key, cl[1], cl[2], dst_id, slot)
            else:
                report.links.append(Issue(iid, str(cl[4]), None, "group node input slot not "
                                          "found in its definition"))
                del links[key]
        elif cl[1] == iid:
            if isinstance(cl[2], int) and cl[2] < len(out_slots):
                src_id, slot = out_slots[cl[2]]
                links[key] = (key, src_id, slot, cl[3], cl[4])
            else:
                report.links.append(Issue(cl[3], str(cl[4]), None, "group node output slot not "
                                          "found in its definition"))
                del links[key]
    # the instance's widget values, split over the inner nodes in order
    values = inst.get("widgets_values")
    if isinstance(values, list) and values:
        sizes = [len(_list(n.get("widgets_values"))) for n in inner]
        if sum(sizes) == len(values):
            pos = 0
            for n, size in zip(inner, sizes):
                n["widgets_values"] = values[pos: pos + size]
                pos += size
        else:
            report.notes.append(f"group node {iid}: {len(values)} widget values for "
                                f"{sum(sizes)} inner widgets; the definition's values kept")
    return inner


def _fold_structural(nodes: list[CNode], report: Report) -> list[CNode]:
    """Follow links through Reroutes; put PrimitiveNode values into the inputs they feed."""
    by_id = {n.id: n for n in nodes}
    reroutes = {n.id for n in nodes if n.type == "Reroute"}
    prims = {n.id for n in nodes if n.type == "PrimitiveNode"}
    for n in nodes:
        if n.id in reroutes or n.id in prims:
            continue
        for name, (src, slot) in list(n.links.items()):
            points: list[list[float]] = []
            seen = set()
            while src in reroutes and src not in seen:
                seen.add(src)
                r = by_id[src]
                if r.pos is not None:
                    points.insert(0, [r.pos[0], r.pos[1]])
                nxt = next(iter(r.links.values()), None)
                if nxt is None:
                    break
                src, slot = nxt
            if src in reroutes:
                report.links.append(Issue(n.id, name, None, "fed by a Reroute that nothing "
                                          "feeds"))
                del n.links[name]
                continue
            if src in prims:
                p = by_id[src]
                value = (p.widgets or [None])[0] if p.widgets else p.literals.get("value")
                if value is None:
                    report.links.append(Issue(n.id, name, None, f"fed by PrimitiveNode {src}, "
                                              "which holds no value"))
                else:
                    n.overrides[name] = value
                    if p.widgets and len(p.widgets) > 1 and p.widgets[1] in SEED_CONTROLS:
                        n.overrides.setdefault("__control__", p.widgets[1])
                del n.links[name]
                continue
            n.links[name] = (src, slot)
            if points:
                n.reroutes[name] = points
    for kind, ids in (("Reroute", reroutes), ("PrimitiveNode", prims)):
        if ids:
            report.structural[kind] += len(ids)
    return [n for n in nodes if n.id not in reroutes and n.id not in prims]


# building the Loom graph ----------------------------------------------------------------------

def _build(graph: Graph, cnodes: list[CNode], report: Report, models: ModelPaths | None
           ) -> None:
    reg = graph.registry
    maps: dict[str, Map | None] = {}
    for c in cnodes:
        m = MAPPING.get(c.type)
        cls = reg.get(m.loom) if m is not None else None
        if m is None or cls is None:
            maps[c.id] = None
            report.placeholders.setdefault(c.type, []).append(c.id)
            params = {k: _jsonable(v) for k, v in c.literals.items()}
            extra = {"comfyui": {"class_type": c.type, "data": _jsonable(c.raw)}}
            node = GraphNode(c.id, PLACEHOLDER_PREFIX + c.type, 1, params, c.title,
                             c.pos or (0.0, 0.0), c.mode, extra)
            graph.insert(node)
            continue
        maps[c.id] = m
        report.mapped[c.type] += 1
        params = _params(c, m, cls, report)
        node = GraphNode(c.id, cls.type, cls.version, params, c.title, c.pos or (0.0, 0.0),
                         c.mode)
        graph.insert(node)
        if models is not None:
            _check_models(node, models, report)
    # links
    by_id = {c.id: c for c in cnodes}
    for c in cnodes:
        dm = maps[c.id]
        dcls = reg[dm.loom] if dm is not None else None  # mapped nodes have a class
        for name, (src, slot) in c.links.items():
            if src not in graph.nodes:
                continue
            sm = maps.get(src)
            if sm is not None:
                if slot >= len(sm.outputs):
                    report.links.append(Issue(c.id, name, None, f"comes from output {slot} of "
                                              f"{src}, which Loom's node does not have"))
                    continue
                out_name = sm.outputs[slot]
            else:
                names = by_id[src].output_names if src in by_id else []
                out_name = names[slot] if slot < len(names) and names[slot] else f"output_{slot}"
            if dm is not None and dcls is not None:
                if name in dm.ignore:
                    report.links.append(Issue(c.id, name, None, f"Loom's {dcls.title} takes no "
                                              f"{name!r}; the link is dropped"))
                    continue
                in_name = dm.inputs.get(name, name)
                if in_name not in dcls.input_map:
                    report.links.append(Issue(c.id, name, None, f"Loom's {dcls.title} has no "
                                              "such input; the link is dropped"))
                    continue
            else:
                in_name = name
            link = Link(src, out_name, c.id, in_name)
            if name in c.reroutes:
                link.extra["reroutes"] = c.reroutes[name]
            graph.links[(c.id, in_name)] = link


def _params(c: CNode, m: Map, cls: Any, report: Report) -> dict[str, Any]:
    named = dict(c.literals)
    control = None
    if c.widgets is not None:
        named_w, control = _read_widgets(c, m, report)
        named = {**named_w, **named}
    if "__control__" in c.overrides:
        control = c.overrides["__control__"]
    named.update({k: v for k, v in c.overrides.items() if k != "__control__"})
    params: dict[str, Any] = dict(m.fixed)
    for name, value in named.items():
        if name in c.links and name not in c.overrides:
            continue  # a linked widget input: the link decides
        if name in m.ignore:
            default = m.ignore[name]
            if value not in (None, "", "default") if default is None else value != default:
                report.values.append(Issue(c.id, name, value, f"Loom's {cls.title} has no "
                                           "such setting; not carried"))
            continue
        loom_name = m.inputs.get(name, name)
        spec = cls.input_map.get(loom_name)
        if spec is None:
            report.values.append(Issue(c.id, name, value, f"Loom's {cls.title} has no such "
                                       "input; not carried"))
            continue
        conv = m.values.get(name)
        try:
            if conv is not None:
                value = conv(value)
        except Lossy as exc:
            report.values.append(Issue(c.id, name, value, exc.why))
            value = exc.value
        except Drop as exc:
            report.values.append(Issue(c.id, name, value, exc.why + "; the default is used"))
            continue
        if not spec.is_widget:
            report.values.append(Issue(c.id, name, value, f"Loom's {cls.title}.{loom_name} "
                                       f"takes a {spec.type.value} link, not a value"))
            continue
        ok, coerced = spec.coerce(value)
        if not ok:
            report.values.append(Issue(c.id, name, value, f"expected {spec.expected()}; the "
                                       "default is used"))
            continue
        params[loom_name] = coerced
    if control is not None and "control_after_run" in cls.input_map:
        if control in SEED_CONTROLS:
            params["control_after_run"] = control
    return params


def _read_widgets(c: CNode, m: Map, report: Report) -> tuple[dict[str, Any], str | None]:
    values = list(c.widgets or [])
    named: dict[str, Any] = {}
    control = None
    i = 0
    for w in m.widgets:
        if w == "|":
            continue
        name = w.rstrip("+")
        if i >= len(values):
            break
        named[name] = values[i]
        i += 1
        if w.endswith("+") and i < len(values) and values[i] in SEED_CONTROLS:
            control = values[i]
            i += 1
    need = m.required_widgets() - (1 if any(w.endswith("+") for w in m.widgets) else 0)
    if len(values) < need or i < len(values):
        names = ", ".join(m.widget_names)
        report.values.append(Issue(c.id, "widgets_values", values,
                                   f"expected {m.required_widgets()}"
                                   + (f" to {m.max_widgets()}" if m.max_widgets() !=
                                      m.required_widgets() else "")
                                   + f" values ({names}); read them in that order"
                                   + (", the rest ignored" if i < len(values) else
                                      ", the missing ones take Loom's defaults")))
    return named, control


def _check_models(node: GraphNode, models: ModelPaths, report: Report) -> None:
    for (ntype, param), kinds in MODEL_PARAMS.items():
        if node.type != ntype or param not in node.params:
            continue
        name = node.params[param]
        if _find(models, kinds, name):
            continue
        base = Path(str(name)).name
        hits = [e.name for k in kinds for e in models.list(k) if Path(e.name).name == base]
        if len(hits) == 1:
            node.params[param] = hits[0]
            report.notes.append(f"{node.id}.{param}: {name!r} found as {hits[0]!r}")
            continue
        report.models.append(Issue(node.id, param, name, "not in the " + " or ".join(
            f"{k}/" for k in kinds) + " model folders; put it there or pick another"))


def _find(models: ModelPaths, kinds: tuple[str, ...], name: Any) -> bool:
    for k in kinds:
        try:
            models.find(k, str(name))
            return True
        except LookupError:
            pass
    return False


def _group(g: dict[str, Any], cnodes: list[CNode]) -> Group:
    b = g.get("bounding")
    members = []
    if isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b):
        x, y, w, h = b
        members = [c.id for c in cnodes if c.pos is not None
                   and x <= c.pos[0] <= x + w and y <= c.pos[1] <= y + h]
    color = g.get("color") if isinstance(g.get("color"), str) else None
    extra = {"comfyui": {k: _jsonable(v) for k, v in g.items() if k not in ("title", "color")}}
    return Group(str(g.get("title", "")), members, color, extra)


def _layout(graph: Graph) -> None:
    """API files have no positions: columns by dependency depth."""
    depth: dict[str, int] = {}
    order = [n for n in graph.nodes]
    try:
        order = graph.topological()
    except Exception:
        pass
    for nid in order:
        d = 0
        for l in graph.links_into(nid).values():
            d = max(d, depth.get(l.src, 0) + 1)
        depth[nid] = d
    rows: Counter[int] = Counter()
    for nid in order:
        col = depth.get(nid, 0)
        graph.nodes[nid].pos = (col * 320.0, rows[col] * 220.0)
        rows[col] += 1


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _mode(v: Any) -> str:
    return MODES.get(v, "active") if isinstance(v, int) and not isinstance(v, bool) \
        else "active"


def _pos(p: Any) -> tuple[float, float] | None:
    if isinstance(p, dict):
        p = [p.get("0"), p.get("1")]
    if isinstance(p, (list, tuple)) and len(p) >= 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in p[:2]):
        return (float(p[0]), float(p[1]))
    return None


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v, allow_nan=False)
        return v
    except (TypeError, ValueError):
        return repr(v)


def _short(v: Any) -> str:
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def open_workflow(path: str | Path, registry: Registry | None = None,
                  models: ModelPaths | None = None) -> tuple[Graph, Report | None]:
    """A Loom workflow (.json, or a PNG Loom saved) or a ComfyUI one (converted on the fly,
    with its report). Raises WorkflowError for anything else."""
    from .. import workflow as wf
    from ..pngmeta import WORKFLOW_KEY, NotPNG, read_text

    path = Path(path)
    if path.suffix.lower() == ".png":
        try:
            chunks = read_text(path)
        except (OSError, NotPNG) as exc:
            raise WorkflowError(str(path), "", f"cannot read a PNG: {exc}") from None
        if WORKFLOW_KEY in chunks:
            graph = wf.loads(chunks[WORKFLOW_KEY], file=str(path), registry=registry)
            graph.base_dir = path.resolve().parent
            return graph, None
        if "workflow" in chunks or "prompt" in chunks:
            return load(path, registry, models)
        raise WorkflowError(str(path), "", "this PNG holds no workflow (neither Loom's nor "
                            "ComfyUI's)")
    doc = read(path)
    if is_comfyui(doc):
        graph, report = convert(doc, registry=registry, models=models, file=str(path))
        graph.base_dir = path.resolve().parent
        return graph, report
    graph = wf.from_dict(doc, file=str(path), registry=registry)
    graph.base_dir = path.resolve().parent
    return graph, None


def runnable_targets(graph: Graph) -> tuple[list[str], dict[str, str]]:
    """The output nodes that do not depend on placeholders, and why each other one is left
    out: the part of an imported workflow that can run."""
    placeholders = {n.id for n in graph.nodes.values() if graph.registry.get(n.type) is None}
    ok, skipped = [], {}
    for nid in graph.output_nodes():
        up = graph.upstream(nid)
        bad = sorted(up & placeholders)
        if bad:
            types = ", ".join(graph.nodes[b].type.removeprefix(PLACEHOLDER_PREFIX) for b in bad)
            skipped[nid] = f"depends on placeholder node(s) {', '.join(bad)} ({types})"
        else:
            ok.append(nid)
    return ok, skipped
