"""Stage 3, folding: flat `CNode`s -> the same without Reroute and PrimitiveNode nodes.
Links are followed through Reroutes (their points kept for drawing), and a PrimitiveNode's
value goes into each input it feeds."""

from __future__ import annotations

from .nodes import SEED_CONTROLS, CNode, Source
from .report import Issue, Report


def fold(nodes: list[CNode], report: Report) -> list[CNode]:
    by_id = {n.id: n for n in nodes}
    reroutes = {n.id for n in nodes if n.type == "Reroute"}
    prims = {n.id for n in nodes if n.type == "PrimitiveNode"}
    for n in nodes:
        if n.id in reroutes or n.id in prims:
            continue
        for name, src in list(n.links.items()):
            points: list[list[float]] = []
            seen = set()
            while src.node in reroutes and src.node not in seen:
                seen.add(src.node)
                r = by_id[src.node]
                if r.pos is not None:
                    points.insert(0, [r.pos[0], r.pos[1]])
                nxt = next(iter(r.links.values()), None)
                if nxt is None:
                    break
                src = nxt
            if src.node in reroutes:
                report.links.append(Issue(n.id, name, None, "fed by a Reroute that nothing "
                                          "feeds"))
                del n.links[name]
                continue
            if src.node in prims:
                _fold_primitive(n, name, by_id[src.node], report)
                del n.links[name]
                continue
            n.links[name] = Source(src.node, src.slot)
            if points:
                n.reroutes[name] = points
    for kind, ids in (("Reroute", reroutes), ("PrimitiveNode", prims)):
        if ids:
            report.structural[kind] += len(ids)
    return [n for n in nodes if n.id not in reroutes and n.id not in prims]


def _fold_primitive(n: CNode, name: str, p: CNode, report: Report) -> None:
    value = (p.widgets or [None])[0] if p.widgets else p.literals.get("value")
    if value is None:
        report.links.append(Issue(n.id, name, None, f"fed by PrimitiveNode {p.id}, which "
                                  "holds no value"))
        return
    n.overrides[name] = value
    if p.widgets and len(p.widgets) > 1 and p.widgets[1] in SEED_CONTROLS:
        n.overrides.setdefault("__control__", p.widgets[1])
