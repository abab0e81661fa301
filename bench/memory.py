#!/usr/bin/env python3
"""Memory planning: a graph over three mid-size checkpoints (A X B A X: text to image,
then image to image with each next model) under a budget that holds two of them. Loads
(models read from disk, background loads included), evictions, prefetches (background
loads, or moves onto the device) and seconds for least-recently-used eviction,
look-ahead eviction, and look-ahead with background prefetch, in one run. Prints a
table. Works on CPU (the budget bounds resident models) and on CUDA (the budget bounds
VRAM; evicted models go to CPU memory first).
Run: python3 tools/dev.py bench memory.py  [--steps N] [--size PX] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {"LRU": dict(lookahead=False, prefetch=False),
            "look-ahead": dict(lookahead=True, prefetch=False),
            "look-ahead + prefetch": dict(lookahead=True, prefetch=True)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.device import choose
    from engine.runtime.models import ModelManager
    from nodes.diffusion.loading import quiet
    from testing.midsize import build_mid_sd15, model_chain

    quiet()
    device = choose()
    names = ["mid-a.safetensors", "mid-x.safetensors", "mid-b.safetensors"]
    order = [names[i] for i in (0, 1, 2, 0, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed, name in enumerate(names):
            path = build_mid_sd15(root, name.removesuffix(".safetensors"), seed=seed)
            path.read_bytes()  # in the page cache: every variant reads warm files
        folders = ModelFolders([root], use_env=False, use_config=False)
        probe = ModelManager(device, paths=folders)
        Executor(models=probe).run(model_chain(names[:1], 1, 64))
        size = max(e["bytes"] for e in probe.summary()["loaded"].values())
        budget = 2 * size + size // 4  # two models fit, three do not
        del probe
        rows = []
        for label, kw in VARIANTS.items():
            times, m = [], None
            for _ in range(args.repeat):
                m = ModelManager(device, budget, folders, **kw)
                ex = Executor(models=m)  # a fresh output cache: every node runs
                t0 = time.perf_counter()
                r = ex.run(model_chain(order, args.steps, args.size))
                if device.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                assert r.ok, r.failures
            assert m is not None
            rows.append((label, m.loads, len(m.evicted), len(m.prefetched), m.oom_retries,
                         statistics.median(times)))

    print(f"# three mid-size SD 1.5-shaped checkpoints ({size / 2**20:.0f} MiB each on "
          f"{device.device}, {device.dtype}), budget {budget / 2**20:.0f} MiB, graph A X B A X, "
          f"{args.size}px, {args.steps} steps, median of {args.repeat}")
    print("| eviction | loads | evictions | of them prefetched | OOM retries | seconds |")
    print("|---|---|---|---|---|---|")
    for label, loads, ev, pf, oom, secs in rows:
        print(f"| {label} | {loads} | {ev} | {pf} | {oom} | {secs:.2f} |")


if __name__ == "__main__":
    main()
