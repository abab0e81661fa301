#!/usr/bin/env python3
"""Diffusion benchmarks on CPU with tiny random-weight models. Prints a table.
Run: python3 tools/dev.py bench diffusion.py

- text-to-image, ControlNet and inpainting runs through Loom (models resident, output
  cache cleared) against diffusers' own pipelines called directly on the same models and
  settings, interleaved in one process (target ratio <= 1.03)
- re-run times after changing only the seed, only the prompt, nothing, and the nodes a
  ControlNet strength change re-runs
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS, SIZE, REPEAT = 20, 64, 9


def interleaved(a, b, repeat: int = REPEAT) -> tuple[float, float]:
    a()
    b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    import numpy as np
    import torch
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    from engine import Cache, Executor, Graph
    from engine.modelpaths import ModelFolders
    from engine.runtime import generator_for
    from engine.runtime.models import ModelManager
    from nodes.diffusion.loading import quiet
    from nodes.diffusion.sampling import make_scheduler
    from testing.diffusion import build_controlnet, build_sd15

    quiet()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sd = build_sd15(root, "tiny-sd15")
        build_controlnet(root, sd["diffusers"], "tiny-cn")
        ex = Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                             use_config=False)))
        control = torch.rand(1, 3, SIZE, SIZE)
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., 16:48, 16:48] = 1
        from PIL import Image

        Image.fromarray((control[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
            root / "control.png")
        Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).save(root / "mask.png")

        def graph(kind: str) -> Graph:
            g = Graph()
            ck = g.add("load_checkpoint", "ck", ckpt_name="tiny-sd15")
            pos = g.add("text_encode", "pos", clip=ck["clip"], text="a red circle")["conditioning"]
            neg = g.add("text_encode", "neg", clip=ck["clip"], text="")["conditioning"]
            lat = g.add("empty_latent", "lat", width=SIZE, height=SIZE)["latent"]
            if kind == "controlnet":
                img = g.add("load_image", "img", path=str(root / "control.png"))["image"]
                cn = g.add("load_controlnet", "cn", control_net_name="tiny-cn")["control_net"]
                pos = g.add("apply_controlnet", "ap", conditioning=pos, control_net=cn,
                            image=img)["conditioning"]
                neg = g.add("apply_controlnet", "an", conditioning=neg, control_net=cn,
                            image=img)["conditioning"]
            if kind == "inpaint":
                img = g.add("load_image", "img", path=str(root / "control.png"))["image"]
                m = g.add("load_image_mask", "m", path=str(root / "mask.png"),
                          channel="red")["mask"]
                enc = g.add("vae_encode", "enc", vae=ck["vae"], image=img)["latent"]
                lat = g.add("set_latent_noise_mask", "nm", latent=enc, mask=m)["latent"]
            s = g.add("sampler", "s", model=ck["model"], positive=pos, negative=neg, latent=lat,
                      seed=1, steps=STEPS, cfg=7.0, sampler="euler")
            d = g.add("vae_decode", "d", vae=ck["vae"], latent=s["latent"])
            g.add("preview_image", "out", images=d["image"])
            return g

        def pipe(cls, **kw):
            p = cls.from_pretrained(sd["diffusers"], safety_checker=None,
                                    requires_safety_checker=False, **kw)
            p.set_progress_bar_config(disable=True)
            p.scheduler = make_scheduler(dict(p.scheduler.config), "euler")
            return p

        common = dict(negative_prompt="", height=SIZE, width=SIZE, num_inference_steps=STEPS,
                      guidance_scale=7.0, output_type="pt")
        t2i = pipe(StableDiffusionPipeline)
        cnp = pipe(StableDiffusionControlNetPipeline,
                   controlnet=ControlNetModel.from_pretrained(root / "controlnet" / "tiny-cn"))
        inp = pipe(StableDiffusionInpaintPipeline)
        graphs = {k: graph(k) for k in ("txt2img", "controlnet", "inpaint")}

        def inpaint_direct():  # encodes the image too, as the Loom graph does
            z = inp.vae.encode(control * 2 - 1).latent_dist.mean * inp.vae.config.scaling_factor
            return inp("a red circle", image=z, mask_image=mask, masked_image_latents=z,
                       generator=[generator_for(1, 0)], **common)

        directs = {
            "txt2img": lambda: t2i("a red circle", generator=[generator_for(1, 0)], **common),
            "controlnet": lambda: cnp("a red circle", image=control,
                                      generator=[generator_for(1, 0)], **common),
            "inpaint": inpaint_direct,
        }
        for kind, g in graphs.items():
            def loom(g=g):
                ex.cache = Cache()  # every node computes; models stay loaded
                ex.run(g)

            with torch.no_grad():
                lm, dm = interleaved(loom, directs[kind])
            rows.append((f"{kind} {SIZE}x{SIZE}, {STEPS} steps: Loom / diffusers",
                         f"{lm / dm:.3f} ({lm * 1e3:.0f} / {dm * 1e3:.0f} ms)", "<= 1.03"))

        def timed(fn) -> tuple[float, list[str]]:
            t0 = time.perf_counter()
            r = fn()
            return time.perf_counter() - t0, sorted(r.computed)

        g = graphs["txt2img"]
        ex.cache = Cache()
        ex.run(g)
        loads = ex.models.loads
        t, ran = timed(lambda: g.set_param("s", "seed", 2) or ex.run(g))
        rows.append(("re-run, seed changed", f"{t * 1e3:.0f} ms: {', '.join(ran)}", ""))
        t, ran = timed(lambda: g.set_param("pos", "text", "a blue square") or ex.run(g))
        rows.append(("re-run, prompt changed", f"{t * 1e3:.0f} ms: {', '.join(ran)}", ""))
        t, ran = timed(lambda: ex.run(g))
        rows.append(("re-run, nothing changed", f"{t * 1e3:.1f} ms", ""))
        g = graphs["controlnet"]
        ex.run(g)
        t, ran = timed(lambda: g.set_param("ap", "strength", 0.5) or ex.run(g))
        rows.append(("re-run, ControlNet strength changed", f"{t * 1e3:.0f} ms: "
                     f"{', '.join(ran)}", "apply, sampler, after"))
        rows.append(("models loaded by the re-runs", str(ex.models.loads - loads), "0"))

    w = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{w}}  {'measured':<34} target")
    for name, value, target in rows:
        print(f"{name:<{w}}  {value:<34} {target}")


if __name__ == "__main__":
    main()
