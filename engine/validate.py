"""Validation before any run: every problem at once, each naming node, input, expected, got."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from .errors import LoomError, describe
from .graph import Graph, GraphNode, Link
from .order import order_or_cycle
from .spec import REQUIRED, Input
from .types import can_connect


@dataclass
class Problem:
    message: str
    node: str | None = None
    input: str | None = None
    expected: str | None = None
    got: str | None = None
    severity: str = "error"  # error | warning
    code: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.node or "workflow"
        if self.input:
            where += f".{self.input}"
        return f"{self.severity}: {where}: {self.message}"


class InvalidGraph(LoomError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"the workflow has {len(errors)} problem(s):\n"
                         + "\n".join(f"  {p}" for p in errors))


def source(graph: Graph, node_id: str, input_name: str) -> Link | None | str:
    """The link that really feeds an input, looking through bypassed nodes.

    Returns the link, None when the input is not wired, or a message when a bypassed
    node has nothing of the right type to pass through.
    """
    link = graph.links.get((node_id, input_name))
    seen = set()
    while link is not None:
        src = graph.nodes[link.src]
        if src.mode != "bypassed":
            return link
        if src.id in seen:
            return f"bypassed nodes around {src.id} form a loop"
        seen.add(src.id)
        cls = graph.registry.get(src.type)
        out = cls.output_map.get(link.src_output) if cls else None
        if cls is None or out is None:
            return f"bypassed node {src.id} cannot pass {link.src_output!r} through"
        nxt = None
        for inp in cls.inputs:
            cand = graph.links.get((src.id, inp.name))
            if cand is not None and inp.type == out.type:
                nxt = cand
                break
        if nxt is None:
            return (f"bypassed node {src.id} has no wired {out.type.value} input to pass "
                    f"through as {link.src_output!r}")
        link = nxt
    return None


def needed(graph: Graph, targets: Iterable[str],
           incoming: dict[str, list[Link]] | None = None) -> list[str]:
    """The targets and everything they depend on (bypassed nodes included)."""
    incoming = incoming_links(graph) if incoming is None else incoming
    seen: set[str] = set()
    stack = list(targets)
    out = []
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        out.append(nid)
        for l in incoming.get(nid, ()):
            stack.append(l.src)
    return out


def incoming_links(graph: Graph) -> dict[str, list[Link]]:
    index: dict[str, list[Link]] = {}
    for l in graph.links.values():
        index.setdefault(l.dst, []).append(l)
    return index


def param_value(inp: Input, node: GraphNode, coerced: dict[str, Any], default: Any = None) -> Any:
    """A node's own value for `inp`: as analyze() coerced it, else coerced now."""
    if inp.name in coerced:
        return coerced[inp.name]
    v = node.params.get(inp.name, default)
    return inp.coerce(v)[1] if inp.is_widget and v is not REQUIRED else v


def validate(graph: Graph, targets: Iterable[str] | None = None) -> list[Problem]:
    """All problems of the graph, or of what the given targets need. Errors first."""
    return analyze(graph, targets)[0]


class Analysis(NamedTuple):
    problems: list[Problem]
    sources: dict[str, dict[str, Link]]  # effective links into each checked node
    values: dict[str, dict[str, Any]]  # each checked node's widget values, coerced
    order: list[str]  # the checked nodes in dependency order ([] when there is a cycle)


def analyze(graph: Graph, targets: Iterable[str] | None = None) -> Analysis:
    """Problems, plus the effective links (through bypassed nodes) into every checked node:
    {node: {input: link}}, and its widget values coerced. The executor plans from the same
    walk, so it is done (and each value coerced) once per run."""
    problems: list[Problem] = []
    sources: dict[str, dict[str, Link]] = {}
    values: dict[str, dict[str, Any]] = {}
    reg = graph.registry
    incoming = incoming_links(graph)
    if targets is None:
        targets = graph.output_nodes()
        if not targets:
            problems.append(Problem("the workflow has no output node (such as Save Image or "
                                    "Preview Image), so nothing would run", code="no_output"))
        ids = list(graph.nodes)
    else:
        targets = list(targets)
        for t in targets:
            if t not in graph.nodes:
                problems.append(Problem(f"no node with id {t!r} to run", node=t, code="no_node"))
        targets = [t for t in targets if t in graph.nodes]
        ids = needed(graph, targets, incoming)

    for t in targets:
        if graph.nodes[t].mode != "active":
            problems.append(Problem(f"node is {graph.nodes[t].mode}, so it cannot be run",
                                    node=t, code="inactive_target"))

    for nid in ids:
        node = graph.nodes[nid]
        cls = reg.get(node.type)
        if cls is None:
            if node.type.startswith("comfyui:"):  # from an imported ComfyUI workflow
                why = (f"ComfyUI node {node.type[8:]!r} has no Loom counterpart: kept as a "
                       "placeholder with all its data and links")
            else:
                why = (f"unknown node type {node.type!r}: kept as a placeholder with all its "
                       "data; install the node package that provides it")
            problems.append(Problem(why, node=nid, got=node.type, code="unknown_type"))
            continue
        if node.version > cls.version:
            problems.append(Problem(
                f"saved by a newer version of {cls.title} ({node.version}; this Loom has "
                f"{cls.version})", node=nid, expected=f"version <= {cls.version}",
                got=str(node.version), code="node_version"))
        for name in node.params:
            if name not in cls.input_map:
                problems.append(Problem(f"{cls.title} has no input {name!r}; the value is kept "
                                        "but not used", node=nid, input=name,
                                        severity="warning", code="unknown_param"))
        wired = {l.dst_input: l for l in incoming.get(nid, ())}
        for name in wired:
            if name not in cls.input_map:
                problems.append(Problem(f"a link goes to {name!r}, which {cls.title} does not "
                                        "have", node=nid, input=name, code="unknown_input"))
        if node.mode != "active":
            continue
        srcs = sources[nid] = {}
        known: dict[str, Any] = {}  # values known before running, for cls.check
        for inp in cls.inputs:
            got_src = source(graph, nid, inp.name) if inp.name in wired else None
            if isinstance(got_src, str):
                problems.append(Problem(got_src, node=nid, input=inp.name, code="bypass"))
                continue
            if got_src is not None:
                srcs[inp.name] = got_src
                src = graph.nodes[got_src.src]
                if src.mode == "muted":
                    problems.append(Problem(f"fed by muted node {src.id}", node=nid,
                                            input=inp.name, code="muted_source"))
                    continue
                src_cls = reg.get(src.type)
                if src_cls is None:
                    continue  # the placeholder is reported on its own
                out = src_cls.output_map.get(got_src.src_output)
                if out is None:
                    problems.append(Problem(
                        f"{src_cls.title} ({src.id}) has no output {got_src.src_output!r}",
                        node=nid, input=inp.name, code="unknown_output"))
                elif not can_connect(out.type, inp.type):
                    problems.append(Problem(
                        f"type mismatch: {out.type.value} from {src.id}.{got_src.src_output}",
                        node=nid, input=inp.name, expected=inp.type.value, got=out.type.value,
                        code="type_mismatch"))
                elif inp.is_widget and cls.checks_values():
                    _know(known, inp, (src_cls.constant(src.params) or {}), got_src.src_output)
                continue
            if inp.name in node.params:
                value = node.params[inp.name]
                if not inp.is_widget:
                    problems.append(Problem(f"takes a {inp.type.value} link, not a value",
                                            node=nid, input=inp.name, expected=inp.type.value,
                                            got=describe(value), code="not_a_widget"))
                    continue
                ok, coerced = inp.coerce(value)
                if ok:
                    values.setdefault(nid, {})[inp.name] = known[inp.name] = coerced
                else:
                    problems.append(Problem(f"expected {inp.expected()}, got {describe(value)}",
                                            node=nid, input=inp.name, expected=inp.expected(),
                                            got=describe(value), code="bad_value"))
            elif inp.is_widget and inp.default is not REQUIRED:
                known[inp.name] = inp.default
            elif inp.required:
                what = inp.type.value if not inp.is_widget else inp.expected()
                problems.append(Problem(f"missing required input (expected {what})",
                                        node=nid, input=inp.name, expected=what, got="nothing",
                                        code="missing_input"))

        for name, message in cls.check(known):
            problems.append(Problem(message, node=nid, input=name, code="check"))

    idset = set(ids)
    order, cycle = order_or_cycle(ids, ((l.src, l.dst) for l in graph.links.values()
                                        if l.src in idset and l.dst in idset))
    if cycle:
        path = " -> ".join(cycle + [cycle[0]])
        problems.append(Problem(f"the graph has a cycle: {path}", node=cycle[0], code="cycle"))
    if graph.read_only:
        problems.append(Problem(f"this workflow was {graph.read_only}; it runs, but saving a "
                                "changed copy is refused", severity="warning", code="newer_file"))
    problems.sort(key=lambda p: p.severity != "error")
    return Analysis(problems, sources, values, order)


def _know(known: dict[str, Any], inp: Any, values: dict[str, Any], key: str) -> None:
    """Record `values[key]` as the value of `inp` when it is one the input accepts."""
    if key in values:
        ok, value = inp.coerce(values[key])
        if ok:
            known[inp.name] = value


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
