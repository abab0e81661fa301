"""Write the trained demo models into resources/models/ in the formats users' models come
in: loom-shapes as a single-file checkpoint (original layout, with a NAME.config/ folder;
`write_diffusers_folder` derives the diffusers folder layout from it), loom-shapes-edges
as a single-file ControlNet, loom-shapes-x2 as a safetensors upscaler. Weights are stored
in float16 (Loom loads them in the device's dtype).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.resources import RESOURCES
from training.common import RUNS, SCHEDULER, SHIPPED_UNET

MODELS = RESOURCES / "models"


def half(state: dict) -> dict:

    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def export_controlnet(target: Path) -> None:
    """loom-shapes-edges as a single file in the original layout + its config folder."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from nodes.diffusion.ldm import controlnet_to_ldm
    from testing.diffusion import write_config_folder

    cn = ControlNetModel.from_pretrained(RUNS / "controlnet" / "model")
    cdir = target / "controlnet"
    cdir.mkdir(parents=True, exist_ok=True)
    save_file(half(controlnet_to_ldm(cn.state_dict(), dict(cn.config))),
              cdir / "loom-shapes-edges.safetensors")
    tmp = cdir / ".tmp"
    cn.save_pretrained(tmp, safe_serialization=True)
    write_config_folder(tmp, cdir / "loom-shapes-edges.config")
    shutil.rmtree(tmp)


def write_diffusers_folder(checkpoint: Path, folder: Path) -> Path:
    """The diffusers folder layout of a shipped single-file checkpoint (its NAME.config/
    beside it), for the tests and benchmarks that compare the two; float16 as shipped."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(
        str(checkpoint), config=str(checkpoint.with_suffix(".config")), local_files_only=True,
        safety_checker=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


def main(target: Path = MODELS) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    from testing.diffusion import write_single_file

    unet = UNet2DConditionModel.from_pretrained(SHIPPED_UNET / "unet")
    text = CLIPTextModel.from_pretrained(SHIPPED_UNET / "text_encoder")
    vae = AutoencoderKL.from_pretrained(RUNS / "vae" / "vae")
    tokenizer = CLIPTokenizer.from_pretrained(SHIPPED_UNET / "tokenizer")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    folder = target / ".tmp-loom-shapes"  # the configs the single file's .config/ copies
    pipe.save_pretrained(folder, safe_serialization=True)
    write_single_file(folder, target / "checkpoints", "loom-shapes", unet, vae, text,
                      torch.float16)
    shutil.rmtree(folder)

    if not (RUNS / "controlnet" / "model").is_dir():
        print("no trained ControlNet yet: skipped")
    else:
        export_controlnet(target)
    udir = target / "upscale_models"
    udir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(RUNS / "upscaler" / "loom-shapes-x2.safetensors",
                 udir / "loom-shapes-x2.safetensors")
    sizes = {str(p.relative_to(target)): p.stat().st_size for p in target.rglob("*")
             if p.is_file()}
    print(json.dumps({"total_MB": round(sum(sizes.values()) / 1e6, 2)}))


if __name__ == "__main__":
    main()
