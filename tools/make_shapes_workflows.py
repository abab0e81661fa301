#!/usr/bin/env python3
"""Write the example workflows for the bundled demo models (resources/workflows/shapes_*.json)
and their input images, through the Graph API so every value is checked against the specs.

    .venv/bin/python tools/make_shapes_workflows.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from engine import Graph, default_registry  # noqa: E402
from engine import workflow as wf  # noqa: E402
from engine.resources import RESOURCES  # noqa: E402
from training import shapes  # noqa: E402

OUT = RESOURCES / "workflows"
IMAGES = RESOURCES / "images"
CKPT = "loom-shapes.safetensors"


def base(g: Graph, prompt: str, x0: float = 0.0):
    ck = g.add("load_checkpoint", "ckpt", title="Checkpoint", ckpt_name=CKPT, pos=(x0, 0))
    pos = g.add("text_encode", "positive", title="Prompt", clip=ck["clip"], text=prompt,
                pos=(x0 + 320, -140))
    neg = g.add("text_encode", "negative", title="Negative prompt", clip=ck["clip"], text="",
                pos=(x0 + 320, 140))
    return ck, pos, neg


def sampler(g, ck, pos, neg, latent, *, seed=7, denoise=1.0, id="sampler", x=1000, y=0,
            steps=20):
    return g.add("sampler", id, title="Sampler", model=ck["model"], positive=pos, negative=neg,
                 latent=latent, seed=seed, steps=steps, cfg=5.0, sampler="euler",
                 scheduler="normal", denoise=denoise, pos=(x, y))


def save(g: Graph, name: str, description: str) -> None:
    g.meta = {"created_with": "loom 0.1.0", "description": description}
    wf.save(g, OUT / f"{name}.json")


def main() -> None:
    reg = default_registry()
    IMAGES.mkdir(parents=True, exist_ok=True)

    g = Graph(reg)
    ck, pos, neg = base(g, "a red circle on the left, grey background")
    lat = g.add("empty_latent", "latent", title="Size", width=64, height=64, batch_size=4,
                pos=(660, 260))
    s = sampler(g, ck, pos["conditioning"], neg["conditioning"], lat["latent"])
    d = g.add("vae_decode", "decode", title="Decode", vae=ck["vae"], latent=s["latent"],
              pos=(1340, 0))
    g.add("save_image", "save", title="Save", images=d["image"], filename_prefix="shapes",
          pos=(1640, 0))
    save(g, "shapes_txt2img", "Text to image with the bundled demo model loom-shapes: "
         "coloured shapes, placed where the prompt says.")

    # ControlNet: a drawn outline decides where the shape goes and what form it takes
    edges = shapes.edge_map(shapes.Scene("red", "triangle", "top", "white", 40.0, 24.0, 12.0,
                                         shapes.COLOURS["red"], shapes.BACKGROUNDS["white"]))
    Image.fromarray(edges).save(IMAGES / "shapes_outline.png")
    g = Graph(reg)
    ck, pos, neg = base(g, "a blue triangle, white background")
    img = g.add("load_image", "outline", title="Drawn outline",
                path="../images/shapes_outline.png", pos=(0, 300))
    cn = g.add("load_controlnet", "cn", title="Edge ControlNet",
               control_net_name="loom-shapes-edges.safetensors", pos=(0, 480))
    ctl = g.add("apply_controlnet", "apply", title="Follow the outline",
                conditioning=pos["conditioning"], control_net=cn["control_net"],
                image=img["image"], strength=1.0, pos=(660, -140))
    lat = g.add("empty_latent", "latent", title="Size", width=64, height=64, batch_size=4,
                pos=(660, 260))
    s = sampler(g, ck, ctl["conditioning"], neg["conditioning"], lat["latent"])
    d = g.add("vae_decode", "decode", title="Decode", vae=ck["vae"], latent=s["latent"],
              pos=(1340, 0))
    g.add("save_image", "save", title="Save", images=d["image"],
          filename_prefix="shapes_controlnet", pos=(1640, 0))
    save(g, "shapes_controlnet", "ControlNet with loom-shapes-edges: a drawn outline "
         "(white on black) places the shape; the prompt picks its colour.")

    # Inpainting through the noise mask: repaint one shape in another colour
    scene = shapes.scene_of("red", "square", "left", "white")
    Image.fromarray(shapes.render(scene)).save(IMAGES / "shapes_red_square.png")
    import cv2
    import numpy as np

    inside = (shapes.shape_mask(scene) > 0.5).astype(np.uint8)
    mask = (cv2.dilate(inside, np.ones((13, 13), np.uint8)) > 0).astype(np.uint8) * 255
    Image.fromarray(mask).save(IMAGES / "shapes_red_square_mask.png")
    g = Graph(reg)
    ck, pos, neg = base(g, "a green square on the left, white background")
    src = g.add("load_image", "photo", title="Picture", path="../images/shapes_red_square.png",
                pos=(0, 300))
    m = g.add("load_image_mask", "mask", title="Where to repaint",
              path="../images/shapes_red_square_mask.png", channel="luminance", pos=(0, 480))
    # painted over first, so the old red in the VAE's latents cannot leak into the repaint
    fill = g.add("fill_masked_area", "fill", title="Paint over the old colour",
                 image=src["image"], mask=m["mask"], mode="telea", pos=(320, 380))
    enc = g.add("vae_encode", "encode", title="Encode", vae=ck["vae"], image=fill["image"],
                pos=(660, 380))
    nm = g.add("set_latent_noise_mask", "noise_mask", title="Only inside the mask",
               latent=enc["latent"], mask=m["mask"], pos=(660, 560))
    s = sampler(g, ck, pos["conditioning"], neg["conditioning"], nm["latent"], steps=50)
    d = g.add("vae_decode", "decode", title="Decode", vae=ck["vae"], latent=s["latent"],
              pos=(1340, 0))
    c = g.add("composite_images", "paste", title="Paste into the picture",
              destination=src["image"], source=d["image"], mask=m["mask"], pos=(1640, 0))
    g.add("save_image", "save", title="Save", images=c["image"],
          filename_prefix="shapes_inpaint", pos=(1960, 0))
    save(g, "shapes_inpaint", "Recolouring with loom-shapes through the noise mask: the red "
         "square is painted over inside the mask (Fill Masked Area) and repainted green; "
         "everything outside the mask stays as it was.")

    # Hires fix: generate at 64, upscale 2x with loom-shapes-x2, refine at 128
    g = Graph(reg)
    ck, pos, neg = base(g, "a magenta square at the bottom, black background")
    lat = g.add("empty_latent", "latent", title="Size", width=64, height=64, batch_size=1,
                pos=(660, 260))
    s = sampler(g, ck, pos["conditioning"], neg["conditioning"], lat["latent"])
    d = g.add("vae_decode", "decode", title="Decode", vae=ck["vae"], latent=s["latent"],
              pos=(1340, 0))
    um = g.add("load_upscale_model", "upscaler", title="Upscaler",
               upscale_model_name="loom-shapes-x2.safetensors", pos=(1340, 260))
    up = g.add("upscale_with_model", "upscale", title="Upscale 2x",
               upscale_model=um["upscale_model"], image=d["image"], pos=(1640, 0))
    enc = g.add("vae_encode", "encode", title="Encode", vae=ck["vae"], image=up["image"],
                pos=(1940, 0))
    s2 = sampler(g, ck, pos["conditioning"], neg["conditioning"], enc["latent"], denoise=0.35,
                 id="refine", x=2240)
    d2 = g.add("vae_decode", "decode2", title="Decode", vae=ck["vae"], latent=s2["latent"],
               pos=(2580, 0))
    g.add("save_image", "save", title="Save", images=d2["image"],
          filename_prefix="shapes_hires", pos=(2880, 0))
    save(g, "shapes_hires_fix", "Hires fix with the demo models: 64 px from loom-shapes, "
         "upscaled 2x by loom-shapes-x2, refined at 128 px with a light second pass.")


if __name__ == "__main__":
    main()
