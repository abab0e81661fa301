#!/usr/bin/env python3
"""Upscaling benchmarks on CPU with a tiny random-weight ESRGAN x2. Prints tables.
Run: python3 tools/dev.py bench upscale.py [max_side]

1. peak memory of tiled model upscaling as the input grows (each size in a fresh
   process): what is left after the input and output buffers should stay flat
2. throughput in megapixels per second, Loom's tiled node against spandrel's model
   called directly on the whole image (target <= 1.05 of its time)
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Ctx:
    def __init__(self, models):
        self.models = models

    def check_cancelled(self):
        pass

    def progress(self, step, total, preview=None):
        pass


def one_size(model: str, side: int, tile: int) -> dict:
    """Run in a child process: upscale a side x side image, report peak memory."""
    import torch

    from engine.runtime.device import choose
    from engine.runtime.models import ModelManager, ModelRef
    from nodes.upscale import upscale_tiled, upscaler

    torch.set_grad_enabled(False)
    ctx = Ctx(ModelManager(device=choose("cpu")))
    desc = upscaler(ctx, ModelRef("UPSCALE_MODEL", "", model, "m"))
    image = torch.rand(1, 3, side, side)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    out = upscale_tiled(ctx, desc, image, tile, 32)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    buffers = image.numel() * 4 + out.numel() * 4 * 4 // 3  # input, output, blend weights
    return {"side": side, "seconds": seconds, "peak_mb": (peak - base) / 2**20,
            "buffers_mb": buffers / 2**20}


def sampler_size(root: str, side: int, tiled: bool) -> dict:
    """Run in a child process: one img2img-sized sampling pass (3 steps) at side x side
    with the tiny SD model, plain or in 512-px tiles; report peak memory beyond the
    state after a small warm-up run (models loaded)."""
    import torch

    from engine import Executor, Graph
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    torch.set_grad_enabled(False)
    ex = Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                         use_config=False)))

    def graph(size: int, tile: bool) -> Graph:
        g = Graph()
        ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
        pos = g.add("text_encode", "pos", clip=ck["clip"], text="a red circle")
        neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
        lat = g.add("empty_latent", "lat", width=size, height=size)
        params = dict(model=ck["model"], positive=pos["conditioning"],
                      negative=neg["conditioning"], latent=lat["latent"], steps=3, cfg=6.0)
        if tile:
            g.add("tiled_sampler", "s", tile_width=512, tile_height=512, tile_overlap=64,
                  **params)
        else:
            g.add("sampler", "s", **params)
        return g

    import threading

    ex.run(graph(64, tiled), ["s"])
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:  # the current resident size, not the high-water mark
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    ex.run(graph(side, tiled), ["s"])
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    return {"side": side, "seconds": seconds, "peak_mb": (max(peak[0], rss()) - base) / 2**20}


def main(max_side: int = 4096) -> None:
    import torch

    from testing.diffusion import build_upscalers

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_upscalers(tmp)["esrgan_x2"])
        rows = []
        side = 512
        while side <= max_side:
            r = subprocess.run([sys.executable, __file__, "--child", model, str(side)],
                               capture_output=True, text=True, cwd=ROOT, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            side *= 2
        print("tiled model upscaling (tiny ESRGAN x2, 256 px tiles), each size in a new process")
        print(f"{'input':>10} {'seconds':>8} {'MP/s':>6} {'peak MB':>8} {'buffers MB':>11} "
              f"{'beyond buffers MB':>18}")
        for r in rows:
            mp = r["side"] ** 2 / 1e6
            print(f"{r['side']:>5}x{r['side']:<4} {r['seconds']:>8.1f} {mp / r['seconds']:>6.2f} "
                  f"{r['peak_mb']:>8.0f} {r['buffers_mb']:>11.0f} "
                  f"{r['peak_mb'] - r['buffers_mb']:>18.0f}")

        from engine.runtime.device import choose
        from engine.runtime.models import ModelManager, ModelRef
        from nodes.upscale import upscale_tiled, upscaler

        ctx = Ctx(ModelManager(device=choose("cpu")))
        desc = upscaler(ctx, ModelRef("UPSCALE_MODEL", "", model, "m"))
        image = torch.rand(1, 3, 512, 512)
        tl, td = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            upscale_tiled(ctx, desc, image, 512, 32)  # one tile: the node's own overhead
            tl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            desc(image)
            td.append(time.perf_counter() - t0)
        lm, dm = statistics.median(tl), statistics.median(td)
        print(f"\n512x512, one tile: Loom / spandrel direct = {lm / dm:.3f} "
              f"({lm * 1e3:.0f} / {dm * 1e3:.0f} ms, {0.262 / lm:.2f} MP/s), target <= 1.05")

        from testing.diffusion import build_sd15

        build_sd15(tmp, "tiny-sd15")
        print("\nsampling memory (tiny SD model, 3 steps): peak resident MB above the state "
              "before the run")
        print(f"{'size':>10} {'plain':>12} {'tiled 512 px':>14}")
        for side in (512, 1024, 2048):
            cells = []
            for tiled in (False, True):
                if not tiled and side > 1024:  # whole-image attention grows as pixels squared
                    cells.append("-")
                    continue
                r = subprocess.run([sys.executable, __file__, "--sampler", tmp, str(side),
                                    str(int(tiled))], capture_output=True, text=True, cwd=ROOT,
                                   check=True)
                res = json.loads(r.stdout.strip().splitlines()[-1])
                cells.append(f"{res['peak_mb']:.0f} ({res['seconds']:.1f} s)")
            print(f"{side:>5}x{side:<4} {cells[0]:>12} {cells[1]:>14}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(one_size(sys.argv[2], int(sys.argv[3]), 256)))
    elif len(sys.argv) > 1 and sys.argv[1] == "--sampler":
        print(json.dumps(sampler_size(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
