#!/usr/bin/env python3
"""ComfyUI import benchmarks. Prints a table; not a test.
Run: python3 tools/dev.py bench comfyui.py

1. converting a 500-node UI-format file (target < 100 ms), against the baseline of reading
   the resulting Loom workflow file of the same 500 nodes (what opening it costs anyway)
2. the share of nodes mapped (not kept as placeholders) over the test fixture set
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "comfyui"


def big_ui_file(n: int = 500) -> dict:
    """Copies of the default text-to-image graph in the UI format, n nodes in all."""
    base = json.loads((DATA / "txt2img_ui.json").read_text())
    nodes, links = [], []
    for k in range(n // len(base["nodes"]) + 1):
        off = 100 * k
        for nd in json.loads(json.dumps(base["nodes"])):
            nd["id"] += off
            nd["pos"] = [nd["pos"][0] + 2000 * k, nd["pos"][1]]
            for i in nd.get("inputs", []):
                if i.get("link"):
                    i["link"] += off
            nodes.append(nd)
        links += [[l[0] + off, l[1] + off, l[2], l[3] + off, l[4], l[5]] for l in base["links"]]
    keep = {nd["id"] for nd in nodes[:n]}
    return {**base, "nodes": nodes[:n], "links": [l for l in links if l[1] in keep
                                                   and l[3] in keep]}


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(repeat: int = 15) -> None:
    from engine import default_registry
    from engine import workflow as wf
    from engine.comfyui import convert, load

    reg = default_registry()
    text = json.dumps(big_ui_file(500))
    graph, report = convert(json.loads(text), registry=reg)
    loom_text = wf.dumps(graph)
    t_convert = timed(lambda: convert(json.loads(text), registry=reg), repeat)
    t_loom = timed(lambda: wf.loads(loom_text, registry=reg), repeat)
    print("| measure | value |")
    print("|---|---|")
    print(f"| convert a 500-node UI file (median of {repeat}) | {t_convert * 1000:.1f} ms |")
    print(f"| baseline: read the same graph as a Loom file | {t_loom * 1000:.1f} ms |")
    print(f"| ratio convert / Loom read | {t_convert / t_loom:.2f} |")
    mapped = placeholders = structural = 0
    for f in sorted(DATA.glob("*.json")):
        _, r = load(f, registry=reg)
        mapped += r.mapped_count
        placeholders += r.placeholder_count
        structural += sum(r.structural.values())
    share = mapped / (mapped + placeholders)
    print(f"| fixture set: nodes mapped / kept as placeholders / folded | {mapped} / "
          f"{placeholders} / {structural} |")
    print(f"| share mapped | {share:.1%} |")


if __name__ == "__main__":
    main()
