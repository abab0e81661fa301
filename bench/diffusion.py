#!/usr/bin/env python3
"""Diffusion benchmarks on CPU with tiny random-weight models. Prints a table.
Run: python3 tools/dev.py bench diffusion.py

- a text-to-image run through Loom (models resident, output cache cleared) against
  diffusers' StableDiffusionPipeline called directly on the same model and settings,
  interleaved in one process (target ratio <= 1.03)
- re-run times after changing only the seed, only the prompt, and nothing
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(steps: int = 20, size: int = 64, repeat: int = 9) -> None:
    import torch

    from engine import Cache, Executor, Graph
    from engine.modelpaths import ModelFolders
    from engine.runtime import generator_for
    from engine.runtime.models import ModelManager
    from nodes.diffusion.fixtures import build_sd15
    from nodes.diffusion.loading import quiet
    from nodes.diffusion.sampling import make_scheduler

    torch.set_num_threads(max(1, torch.get_num_threads()))
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_sd15(root, "tiny-sd15")
        ex = Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                             use_config=False)))
        g = Graph()
        ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
        pos = g.add("text_encode", "pos", clip=ck["clip"], text="a red circle on the left")
        neg = g.add("text_encode", "neg", clip=ck["clip"], text="")
        lat = g.add("empty_latent", "lat", width=size, height=size)
        s = g.add("sampler", "s", model=ck["model"], positive=pos["conditioning"],
                  negative=neg["conditioning"], latent=lat["latent"], seed=1, steps=steps,
                  cfg=7.0, sampler="euler")
        d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
        g.add("preview_image", "out", images=d["image"])

        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(root / "diffusers" / "tiny-sd15",
                                                       safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = make_scheduler(dict(pipe.scheduler.config), "euler", "normal")

        def direct():
            with torch.no_grad():
                pipe("a red circle on the left", negative_prompt="", height=size, width=size,
                     num_inference_steps=steps, guidance_scale=7.0, output_type="pt",
                     generator=[generator_for(1, 0)])

        def loom():
            ex.cache = Cache()  # every node computes; the models stay loaded
            ex.run(g)

        loom()
        direct()
        tl, td = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            loom()
            tl.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            direct()
            td.append(time.perf_counter() - t0)
        lm, dm = statistics.median(tl), statistics.median(td)

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        ex.cache = Cache()
        ex.run(g)
        loads = ex.models.loads
        seed_t = timed(lambda: g.set_param("s", "seed", 2) or ex.run(g))
        prompt_t = timed(lambda: g.set_param("pos", "text", "a blue square") or ex.run(g))
        cached_t = timed(lambda: ex.run(g))
        assert ex.models.loads == loads

    rows = [
        (f"txt2img {size}x{size}, {steps} steps: Loom / diffusers",
         f"{lm / dm:.3f} ({lm * 1e3:.0f} / {dm * 1e3:.0f} ms)", "<= 1.03"),
        ("re-run, seed changed (sampler, decode)", f"{seed_t * 1e3:.0f} ms", "no model load"),
        ("re-run, prompt changed (+ text encode)", f"{prompt_t * 1e3:.0f} ms", "no model load"),
        ("re-run, nothing changed", f"{cached_t * 1e3:.1f} ms", ""),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'measured':<26} target")
    for name, value, target in rows:
        print(f"{name:<{w}}  {value:<26} {target}")


if __name__ == "__main__":
    main()
