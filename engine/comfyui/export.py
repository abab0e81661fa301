"""Loom graphs -> ComfyUI's API format, for graphs that use only mapped nodes: the same
table read backwards, so a Loom workflow can be queued on a ComfyUI server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import GraphError
from ..graph import Graph, GraphNode, Link
from ..spec import Node
from ..validate import source
from . import table as t
from .table import MAPPING, Map

# Loom value -> ComfyUI value, for the converters whose spellings differ.
_RESIZE_BACK = {"nearest": "nearest-exact"}


def _inverse(conv: Callable[[Any], Any] | None, value: Any) -> Any:
    if conv in (t.resize_method, t.latent_method):
        return _RESIZE_BACK.get(value, value)
    if conv is t.threshold_255:
        return round(value / 255, 2)
    if conv is t.enable:
        return "enable" if value else "disable"
    if conv is t.color_int:
        text = str(value).strip().lstrip("#")
        if len(text) == 6:
            try:
                return int(text, 16)
            except ValueError:
                pass
        raise ValueError(f"ComfyUI takes a colour as #rrggbb only, not {value!r}")
    if conv is t.crop_fit:
        back = {"stretch": "disabled", "fill": "center"}
        if value not in back:
            raise ValueError(f"ComfyUI cannot resize with fit {value!r}")
        return back[value]
    if conv is t.mask_channel and value not in ("red", "green", "blue"):
        raise ValueError(f"ComfyUI has no channel {value!r} here")
    return value


class ExportError(GraphError):
    def __init__(self, problems: list[str]):
        super().__init__("cannot export to ComfyUI's API format:\n  " + "\n  ".join(problems))
        self.problems = problems


def to_api(graph: Graph) -> dict[str, Any]:
    """The API-format prompt of a graph; raises ExportError naming every node or value that
    ComfyUI cannot express."""
    reg = graph.registry
    by_loom: dict[str, list[tuple[str, Map]]] = {}
    for comfy, m in MAPPING.items():
        by_loom.setdefault(m.loom, []).append((comfy, m))
    problems: list[str] = []
    out: dict[str, Any] = {}
    used = {(l.src, l.src_output) for l in graph.links.values()}
    memo: dict[str, Any] = {}

    def choice(nid: str) -> Any:
        """A node's effective links in and its ComfyUI class, worked out once per node."""
        if nid not in memo:
            node = graph.nodes[nid]
            links = {name: source(graph, nid, name) for name in graph.links_into(nid)}
            cls = reg.get(node.type)
            memo[nid] = links, None if cls is None else _choose(
                node, cls, by_loom.get(node.type, []), links, used)
        return memo[nid]

    for n in graph.nodes.values():
        cls = reg.get(n.type)
        if n.mode != "active" or n.type == "note":
            continue  # ComfyUI's API prompt leaves out muted and bypassed nodes and notes
        if cls is None:
            problems.append(f"{n.id}: {n.type} is not a node Loom knows")
            continue
        if not cls.outputs and not cls.output:
            continue
        if n.type in ("int", "float", "string", "bool", "seed"):
            continue  # primitives are written into the inputs they feed
        links, chosen = choice(n.id)
        if chosen is None:
            problems.append(f"{n.id}: {cls.title} has no ComfyUI counterpart with these "
                            "settings")
            continue
        comfy, m = chosen
        back = {loom: comfy_name for comfy_name, loom in m.inputs.items()}
        carried = {m.inputs.get(w, w) for w in m.widget_names}
        inputs: dict[str, Any] = {}
        for inp in cls.inputs:
            if inp.ui_only or inp.name in m.fixed:
                continue
            name = back.get(inp.name, inp.name)
            link = links.get(inp.name)
            if isinstance(link, str):
                problems.append(f"{n.id}.{inp.name}: {link}")
                continue
            if link is not None:
                src = graph.nodes[link.src]
                src_cls = reg.get(src.type)
                const = src_cls.constant(src.params) if src_cls is not None else None
                if const is not None:
                    value = const.get(link.src_output)
                else:
                    src_choice = choice(link.src)[1]
                    outputs = src_choice[1].outputs if src_choice else ()
                    if not outputs and src_cls is not None:
                        outputs = tuple(o.name for o in src_cls.outputs)
                    slot = outputs.index(link.src_output) if link.src_output in outputs else 0
                    inputs[name] = [link.src, slot]
                    continue
            else:
                value = n.params.get(inp.name, inp.default)
            if not inp.is_widget:
                continue  # an optional link left open
            if inp.name not in carried:
                if value != inp.default:
                    problems.append(f"{n.id}.{inp.name} = {value!r}: ComfyUI's {comfy} has no "
                                    "such setting")
                continue
            try:
                inputs[name] = _inverse(m.values.get(name), value)
            except ValueError as exc:
                problems.append(f"{n.id}.{inp.name}: {exc}")
        for name, default in m.ignore.items():
            if default is not None:
                inputs[name] = default
        entry: dict[str, Any] = {"inputs": inputs, "class_type": comfy}
        entry["_meta"] = {"title": n.title or m.title or comfy}
        out[n.id] = entry
    if problems:
        raise ExportError(problems)
    return out


def _choose(node: GraphNode, cls: type[Node], candidates: list[tuple[str, Map]],
            links: dict[str, Link | str | None], used: set[tuple[str, str]]
            ) -> tuple[str, Map] | None:
    """The ComfyUI class for a node: the most specific one whose fixed values the node has
    and which carries every link in and out."""
    outs = {o for (src, o) in used if src == node.id}
    for comfy, m in sorted(candidates, key=lambda c: -len(c[1].fixed)):
        if any(node.params.get(k, cls.input_map[k].default) != v for k, v in m.fixed.items()):
            continue
        if not outs <= set(m.outputs) and cls.outputs:
            continue
        loom_inputs = {m.inputs.get(w, w) for w in m.widget_names} | set(m.inputs.values())
        wired = {k for k, v in links.items() if v is not None}
        if any(k in m.fixed or (k not in loom_inputs and cls.input_map[k].is_widget)
               for k in wired):
            continue
        if comfy == "LoraLoaderModelOnly" and "clip" in wired:
            continue
        return comfy, m
    return None
