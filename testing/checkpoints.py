"""Full-size (or scaled-down) random-weight Stable Diffusion single-file checkpoints, written
tensor by tensor, for the loading tests and bench: the modules are built on the meta device
from the shipped configs, their names converted to the original layout, and each tensor is
drawn and written on its own, so writing an SDXL file needs no more memory than its
largest tensor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nodes.diffusion.loading import CONFIGS

_ST = {"float16": "F16", "float32": "F32", "bfloat16": "BF16", "int64": "I64"}


def _meta_parts(config: Path, unet: dict, vae: dict, text: dict) -> dict[str, Any]:
    """The original-layout names and meta tensors of a model described by `config`, with
    `unet` / `vae` / `text` overriding its configs (a mid-size model)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodes.diffusion.ldm import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
    from nodes.diffusion.weights import build

    def cfg(part, over):
        return {**json.loads((config / part / "config.json").read_text()), **over}

    u = build(lambda: UNet2DConditionModel.from_config(cfg("unet", unet)))
    v = build(lambda: AutoencoderKL.from_config(cfg("vae", vae)))
    state = unet_to_ldm(u.state_dict(), dict(u.config))
    state.update(vae_to_ldm(v.state_dict(), dict(v.config)))
    index = json.loads((config / "model_index.json").read_text())
    te1 = CLIPTextConfig(**cfg("text_encoder", text))
    if (index.get("text_encoder") or [None])[0] is None:  # SDXL refiner: OpenCLIP only
        pass
    elif "text_encoder_2" in index:
        state.update(clip_to_ldm(build(lambda: CLIPTextModel(te1)).state_dict(),
                                 "conditioner.embedders.0.transformer."))
    elif te1.hidden_size == 1024:  # SD 2: OpenCLIP ViT-H
        state.update(open_clip_to_ldm(build(lambda: CLIPTextModel(te1)).state_dict(),
                                      "cond_stage_model.model."))
    else:
        state.update(clip_to_ldm(build(lambda: CLIPTextModel(te1)).state_dict()))
    if "text_encoder_2" in index:
        te2 = CLIPTextConfig(**cfg("text_encoder_2", text))
        state.update(open_clip_to_ldm(
            build(lambda: CLIPTextModelWithProjection(te2)).state_dict()))
    return state


def write_random_checkpoint(path: Path, family: str = "sd15", *, unet: dict | None = None,
                            vae: dict | None = None, text: dict | None = None,
                            seed: int = 0) -> int:
    """Write `path` (fp16, original layout) for `family`'s shipped configs; with overrides,
    also a `NAME.config/` folder beside it describing the changed architecture. Returns the
    file's size in bytes."""
    import torch

    config = CONFIGS / family
    overrides = unet or vae or text
    if overrides:
        side = path.with_suffix(".config")
        shutil.rmtree(side, ignore_errors=True)
        shutil.copytree(config, side)
        for part, over in (("unet", unet), ("vae", vae), ("text_encoder", text),
                           ("text_encoder_2", text)):
            f = side / part / "config.json"
            if over and f.is_file():
                f.write_text(json.dumps({**json.loads(f.read_text()), **over}))
    state = _meta_parts(config, unet or {}, vae or {}, text or {})
    header: dict[str, Any] = {}
    offset = 0
    for k, t in state.items():
        dtype = torch.float16 if t.is_floating_point() else t.dtype
        n = t.numel() * dtype.itemsize
        header[k] = {"dtype": _ST[str(dtype).removeprefix("torch.")], "shape": list(t.shape),
                     "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for k, t in state.items():
            if t.is_floating_point():
                # norms near 1, everything else small: finite activations through the net
                base = 1.0 if k.endswith(("norm.weight", "norm1.weight", "norm2.weight")) else 0.0
                x = (torch.randn(t.shape, generator=g) * 0.02 + base).half()
            else:
                x = torch.arange(t.numel(), dtype=t.dtype).reshape(t.shape)
            f.write(x.contiguous().view(torch.uint8).numpy().tobytes())
    return path.stat().st_size


MID_SD15 = dict(unet={"block_out_channels": [128, 256, 512, 512]},
                vae={"block_out_channels": [64, 128, 256, 256]},
                text={"num_hidden_layers": 4})
