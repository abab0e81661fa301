#!/usr/bin/env python3
"""ComfyUI-parity sampling: a table, not a test.
Run: python3 tools/dev.py bench sampling.py [--speed-only | --parity-only]

1. every sampler x scheduler pair against ComfyUI 0.33's reference numbers
   (../shared/data/comfyui-reference): the largest relative difference of the schedule (every
   model kind, step count and denoise of the reference) and the largest absolute difference
   of the final latent (kinds sd_eps, sd3_shift3, flux_1024; text and image to image) where
   the reference has trajectories ("-" where it has none: CFG++ samplers and three
   schedulers)
2. time per step of the Sampler's ComfyUI loop against the diffusers loop it replaces as the
   default (the `diffusers` scheduler), on the tiny SD1.5 model, interleaved (target <= 1.02)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

STEPS, SIZE, REPEAT = 20, 64, 15


def parity() -> None:
    import torch
    from comfyref import REFERENCE, model_sampling, run_reference, runs, schedules

    from nodes.diffusion.ksampling import DISCARD_PENULTIMATE, NAMES, SAMPLERS
    from nodes.diffusion.ksampling.schedules import SCHEDULERS, ksampler_sigmas

    if not (REFERENCE / "schedules.json").is_file():
        print(f"no reference data at {REFERENCE}")
        return
    sched_diff: dict[tuple[str, str], float] = {}
    for key, ref in schedules().items():
        if "_model" in key:
            continue
        kind, scheduler, rule, steps, denoise = key.split("/")
        got = ksampler_sigmas(model_sampling(kind), scheduler, int(steps), float(denoise),
                              rule == "discard")
        want = torch.tensor(ref, dtype=torch.float32)
        if want.isnan().any():  # kl_optimal at one step: ComfyUI's 0/0
            continue
        d = float(((got - want).abs() / want.abs().clamp(min=1e-12)).max()) \
            if got.shape == want.shape else float("inf")
        sched_diff[rule, scheduler] = max(sched_diff.get((rule, scheduler), 0.0), d)
    lat_diff: dict[tuple[str, str], float] = {}
    for key in runs():
        _, sampler, scheduler, _, _ = key.split("/")
        if sampler not in SAMPLERS:
            lat_diff[sampler, scheduler] = float("nan")
            continue
        ours, theirs = run_reference(key)
        d = float((ours - theirs).abs().max())
        lat_diff[sampler, scheduler] = max(lat_diff.get((sampler, scheduler), 0.0), d)
    names = tuple(SCHEDULERS)
    print("max |schedule - ComfyUI| / ComfyUI  |  max |final latent - ComfyUI|")
    print(f"{'sampler':28}" + "".join(f"{n[:11]:>24}" for n in names))
    worst_s = worst_l = 0.0
    for sampler in NAMES:
        rule = "discard" if sampler in DISCARD_PENULTIMATE else "plain"
        cells = []
        for scheduler in names:
            s = sched_diff.get((rule, scheduler), float("nan"))
            lat = lat_diff.get((sampler, scheduler))
            worst_s = max(worst_s, s)
            if lat is not None and lat == lat:
                worst_l = max(worst_l, lat)
            ltxt = "-" if lat is None else ("missing" if lat != lat else f"{lat:.1e}")
            cells.append(f"{s:.1e} | {ltxt:>8}")
        mark = "" if sampler in SAMPLERS else "  (not implemented)"
        print(f"{sampler:28}" + "".join(f"{c:>24}" for c in cells) + mark)
    print(f"worst schedule difference {worst_s:.2e} (target 1e-6); "
          f"worst latent difference {worst_l:.2e} (target 1e-5, 1e-4 for SDE samplers)")


def speed() -> None:
    from diffusion import interleaved  # bench/diffusion.py

    from engine import Executor, Graph
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager
    from nodes.diffusion.loading import quiet
    from testing.diffusion import build_sd15

    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_sd15(root, "tiny-sd15")
        ex = Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                             use_config=False)))

        def graph(sampler: str, scheduler: str, seed: int) -> Graph:
            g = Graph()
            ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
            pos = g.add("text_encode", "pos", clip=ck["clip"], text="a red circle")
            neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
            lat = g.add("empty_latent", "lat", width=SIZE, height=SIZE)
            g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
                  negative=neg["conditioning"], latent=lat["latent"], seed=seed, steps=STEPS,
                  cfg=7.0, sampler=sampler, scheduler=scheduler)
            return g

        seeds = iter(range(10 ** 6))

        def timed(sampler: str, scheduler: str):
            def run() -> None:
                r = ex.run(graph(sampler, scheduler, next(seeds)), ["s"])
                assert r.ok, r.failures
            return run

        rows = []
        for sampler in ("euler", "dpmpp_2m", "euler_ancestral"):
            new, old = timed(sampler, "normal"), timed(sampler, "diffusers")
            a, b = (t / STEPS for t in interleaved(new, old, REPEAT))
            rows.append((sampler, a * 1e3, b * 1e3, a / b))
    print(f"\nper step, tiny SD1.5 {SIZE}x{SIZE}, {STEPS} steps, cfg 7 (median of {REPEAT})")
    print(f"{'sampler':18}{'ComfyUI loop ms':>18}{'diffusers loop ms':>20}{'ratio':>8}")
    for name, a, b, ratio in rows:
        print(f"{name:18}{a:>18.2f}{b:>20.2f}{ratio:>8.3f}")
    print("target ratio <= 1.02")


if __name__ == "__main__":
    if "--speed-only" not in sys.argv:
        parity()
    if "--parity-only" not in sys.argv:
        speed()
