"""Stage 4, building: folded `CNode`s -> a Loom `Graph`. Each node is mapped through
`table.MAPPING` (its values converted, checked against Loom's input specs, and its model
files looked up), or kept as a placeholder holding all its original data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..graph import Graph, GraphNode, Group, Link
from ..protocols import ModelPaths
from ..registry import Registry
from .nodes import PLACEHOLDER_PREFIX, SEED_CONTROLS, CNode
from .report import Issue, Report, jsonable
from .table import MAPPING, Drop, Lossy, Map

# Loom params that name model files, and the model-folder kinds they are looked up in.
MODEL_PARAMS = {("load_checkpoint", "ckpt_name"): ("checkpoints", "diffusers"),
                ("load_vae", "vae_name"): ("vae",),
                ("load_lora", "lora_name"): ("loras",),
                ("load_controlnet", "control_net_name"): ("controlnet",),
                ("load_upscale_model", "upscale_model_name"): ("upscale_models",),
                ("load_diffusion_model", "unet_name"): ("diffusion_models",)}


def build(cnodes: list[CNode], groups: list[dict[str, Any]], report: Report,
          registry: Registry | None, models: ModelPaths | None, layout: bool) -> Graph:
    """`layout` places the nodes by dependency depth, for files that hold no positions."""
    graph = Graph(registry)
    _nodes_and_links(graph, cnodes, report, models)
    for g in groups:
        graph.groups.append(_group(g, cnodes))
    if layout:
        _layout(graph)
    return graph


def _nodes_and_links(graph: Graph, cnodes: list[CNode], report: Report,
                     models: ModelPaths | None) -> None:
    reg = graph.registry
    maps: dict[str, Map | None] = {}
    for c in cnodes:
        m = MAPPING.get(c.type)
        cls = reg.get(m.loom) if m is not None else None
        if m is None or cls is None:
            maps[c.id] = None
            report.placeholders.setdefault(c.type, []).append(c.id)
            params = {k: jsonable(v) for k, v in c.literals.items()}
            extra = {"comfyui": {"class_type": c.type, "data": jsonable(c.raw)}}
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
    extra = {"comfyui": {k: jsonable(v) for k, v in g.items() if k not in ("title", "color")}}
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
