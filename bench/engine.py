#!/usr/bin/env python3
"""Engine benchmarks. Prints a table; not a test. Run: python3 tools/dev.py bench engine.py

1. signature + plan time for a 500-node graph (target < 10 ms)
2. a fully cached re-run of a 50-node graph, total (target < 20 ms)
3. a 20-node image-processing graph run by the executor vs the same node functions
   called directly, in the same process (target ratio < 1.05)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import Cache, Executor, Graph, default_registry  # noqa: E402


def timeit(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tree_graph(reg, n: int) -> Graph:
    """n nodes that one output needs: solid masks turned into images, reduced pairwise by
    Blend Images down to one Preview Image, with Int primitives wired into mask widths."""
    g = Graph(reg)
    leaves = (n - 1) // 3
    ints = n - 1 - (3 * leaves - 1)
    widths = [g.add("int", f"i{k}", value=8 + k) for k in range(ints)]
    layer = []
    for k in range(leaves):
        m = g.add("solid_mask", f"m{k}", value=k / max(1, leaves), height=8)
        if widths:
            g.connect(widths[k % len(widths)]["value"], (m.id, "width"))
        layer.append(g.add("mask_to_image", f"t{k}", mask=m["mask"]))
    k = 0
    while len(layer) > 1:
        a, b = layer.pop(0), layer.pop(0)
        layer.append(g.add("blend_images", f"b{k}", image_a=a["image"], image_b=b["image"]))
        k += 1
    g.add("preview_image", "out", images=layer[0]["image"])
    assert len(g) == n, (len(g), n)
    return g


def image_graph(reg, path: str) -> Graph:
    g = Graph(reg)
    load = g.add("load_image", "load", path=path)
    x = g.add("resize_image", "r0", image=load["image"], width=512, height=512, method="bilinear")
    for k in range(5):
        x = g.add("resize_image", f"r{k + 1}", image=x["image"], width=512 + 8 * (k + 1),
                  height=512, method="bilinear")
        x = g.add("crop_image", f"c{k}", image=x["image"], x=0, y=0, width=512, height=512)
    m = g.add("mask_from_color", "mc", image=x["image"], color="#808080", tolerance=0.3)
    m = g.add("grow_mask", "gm", mask=m["mask"], pixels=4)
    m = g.add("blur_mask", "bm", mask=m["mask"], radius=4.0)
    m = g.add("invert_mask", "im", mask=m["mask"])
    b = g.add("blend_images", "bl", image_a=x["image"], image_b=load["image"], factor=0.3,
              mode="screen")
    c = g.add("composite_images", "cp", destination=x["image"], source=b["image"], mask=m["mask"])
    p = g.add("pad_image", "pd", image=c["image"], left=8, right=8, top=8, bottom=8)
    g.add("preview_image", "out", images=p["image"])
    assert len(g) == 20, len(g)
    return g


def direct(reg, graph: Graph) -> None:
    """The same node functions, called in dependency order with no engine around them."""
    import torch

    from engine.context import CancelToken, NodeContext
    from engine.events import EventBus

    values: dict[str, dict] = {}
    bus, token = EventBus(), CancelToken()
    resolve = lambda p: Path(p)  # noqa: E731
    with torch.no_grad():
        for nid in graph.topological():
            node = graph.nodes[nid]
            cls = reg.get(node.type)
            kwargs = dict(node.params)
            for (dst, inp), link in graph.links.items():
                if dst == nid:
                    kwargs[inp] = values[link.src][link.src_output]
            ctx = NodeContext(run_id="d", node_id=nid, node_type=node.type, bus=bus,
                              cancel=token, models=None, resolve_path=resolve,
                              output_dir=Path("."))
            values[nid] = cls().run(ctx, **kwargs)


def main() -> None:
    import tempfile

    import numpy as np
    from PIL import Image

    reg = default_registry()
    rows = []

    g500 = tree_graph(reg, 500)
    ex = Executor()
    t = timeit(lambda: ex.plan(g500), repeat=30)
    rows.append(("signature + plan, 500 nodes", f"{t * 1e3:.2f} ms", "< 10 ms", t < 0.010))
    from engine import order

    def first_plan() -> None:  # after a change of links: the dependency sort runs again
        order._sorted.cache_clear()
        ex.plan(g500)

    t = timeit(first_plan, repeat=30)
    rows.append(("  the same, links changed", f"{t * 1e3:.2f} ms", "< 10 ms", t < 0.010))

    g50 = tree_graph(reg, 50)
    ex = Executor()
    ex.run(g50)
    t = timeit(lambda: ex.run(g50), repeat=30)
    rows.append(("fully cached re-run, 50 nodes", f"{t * 1e3:.2f} ms total",
                 "< 20 ms", t < 0.020))

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "in.png")
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
        g20 = image_graph(reg, path)
        direct(reg, g20)  # warm up torch kernels

        ex = Executor()

        def engine_run():
            ex.cache = Cache()  # a fresh cache: every node computes
            ex.run(g20)

        # interleave the two to share the machine's noise fairly
        te, td = [], []
        for _ in range(15):
            t0 = time.perf_counter()
            engine_run()
            te.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            direct(reg, g20)
            td.append(time.perf_counter() - t0)
        e, d = statistics.median(te), statistics.median(td)
        rows.append(("20-node image graph: executor / direct", f"{e / d:.3f} "
                     f"({e * 1e3:.1f} / {d * 1e3:.1f} ms)", "< 1.05", e / d < 1.05))

    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'measured':<28} {'target':<9} ok")
    for name, value, target, ok in rows:
        print(f"{name:<{w}}  {value:<28} {target:<9} {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
