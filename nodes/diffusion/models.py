"""Loader nodes: checkpoints and VAEs. They return `ModelRef`s; the model manager owns
the modules and loads each at most once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.runtime.models import ModelRef
from engine.spec import Choice, Node, Output, String
from engine.types import T

from .arch import Arch
from .files import CHECKPOINTS, DIFFUSERS, DIFFUSION_MODELS, VAES, find, model_key
from .patches import patched


def components(ctx, ref: ModelRef) -> Any:
    """The live modules behind a MODEL / CLIP / VAE ref (loads once, stays resident)."""
    from .loading import load_components

    manager = ctx.models
    choice = manager.device

    def load():
        import torch

        comps = load_components(Path(ref.source), getattr(torch, choice.dtype))
        vae_dtype = getattr(torch, choice.vae_dtype)
        if comps.vae.dtype != vae_dtype:
            comps.vae.to(vae_dtype)
        if choice.channels_last:
            comps.unet.to(memory_format=torch.channels_last)
        if choice.compile:
            comps.unet = torch.compile(comps.unet)
        return comps

    if ref.key.startswith("tenc:"):  # text encoders from their own files
        from .text_encoders import components as text_encoders

        return text_encoders(ctx, ref)
    if ref.key.startswith("vae:"):
        return manager.get(ref.key, lambda: _load_vae(Path(ref.source), ref.family, choice))
    if ref.key.startswith("unet:"):
        from .loading import load_unet_only

        def load_unet():
            import torch

            return load_unet_only(Path(ref.source), getattr(torch, choice.dtype))

        base = manager.get(ref.key, load_unet)
        return patched(ctx, ref, base)
    base = manager.get(ref.key, load)
    return patched(ctx, ref, base)  # puts exactly this ref's patches in place (or none)


class VAEOnly:
    def __init__(self, vae: Any, family: str):
        self.vae, self.family = vae, family

    def values(self):
        return [self.vae]


def _load_vae(path: Path, family: str, choice: Any) -> VAEOnly:
    import json

    import torch
    from diffusers import AutoencoderKL

    from .loading import CONFIGS, load_weights, quiet, read_state_dict, strip_prefix

    quiet()
    dtype = getattr(torch, choice.vae_dtype)
    if path.is_dir():
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    else:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        sidecar = path.with_suffix(".config") / "config.json"  # an unusual architecture
        config = json.loads((sidecar if sidecar.is_file() else
                             CONFIGS / family / "vae" / "config.json").read_text())
        sd = strip_prefix(read_state_dict(path), ("first_stage_model.", "vae."))
        if not any(k.startswith("encoder.down_blocks.") for k in sd):
            sd = convert_ldm_vae_checkpoint(sd, config)
        vae = AutoencoderKL.from_config(config)
        load_weights(vae, sd, "vae_name", f"a VAE for {family}", path.name)
    vae.requires_grad_(False).eval().to(dtype)
    return VAEOnly(vae, family)


class LoadCheckpoint(Node):
    type = "load_checkpoint"
    title = "Load Checkpoint"
    category = "loaders"
    description = ("A Stable Diffusion 1.x, 2.x or SDXL model: a single .safetensors / .ckpt "
                   "file from checkpoints/ or a folder from diffusers/.")
    inputs = (String("ckpt_name", "", file=CHECKPOINTS,
                     description="file in checkpoints/ or folder in diffusers/"),)
    outputs = (Output("model", T.model), Output("clip", T.clip), Output("vae", T.vae))

    def run(self, ctx, ckpt_name):
        path = _find_checkpoint(ctx, ckpt_name)
        comps_key = model_key("ckpt", path, ctx.models.device.dtype)
        ref = ModelRef("MODEL", "", str(path), comps_key)
        comps = components(ctx, ref)  # load now: errors belong to this node
        fam = comps.family
        return {"model": ModelRef("MODEL", fam, str(path), comps_key),
                "clip": ModelRef("CLIP", fam, str(path), comps_key),
                "vae": ModelRef("VAE", fam, str(path), comps_key)}

    @classmethod
    def fingerprint(cls, values, env):
        name = values.get("ckpt_name") or ""
        path = None
        if env.find_model and name:
            path = env.find_model(CHECKPOINTS, name) or env.find_model(DIFFUSERS, name)
        from engine.spec import _stat_print

        return {"ckpt_name": _stat_print(path)}


def _find_checkpoint(ctx, name: str) -> Path:
    try:
        return find(ctx, CHECKPOINTS, name, "ckpt_name")
    except InputError:
        try:
            return ctx.models.paths.find(DIFFUSERS, name)
        except LookupError:
            raise find_error(ctx, name) from None


def find_error(ctx, name: str) -> InputError:
    paths = ctx.models.paths
    looked = [str(p) for p in paths.folders(CHECKPOINTS) + paths.folders(DIFFUSERS)]
    return InputError("ckpt_name", "a checkpoint file in checkpoints/ or a folder in "
                      "diffusers/", name or "(empty)",
                      hint="looked in " + (", ".join(looked) or "no model folders: set "
                                           "LOOM_MODELS or --models"))


class LoadVAE(Node):
    type = "load_vae"
    title = "Load VAE"
    category = "loaders"
    description = "A separate VAE (.safetensors / .pt file in vae/, or a diffusers folder)."
    inputs = (String("vae_name", "", file=VAES),
              Choice("family", tuple(a.value for a in Arch.bases()), Arch.sd15.value,
                     description="the model family whose latents it decodes"))
    outputs = (Output("vae", T.vae),)

    def run(self, ctx, vae_name, family=Arch.sd15.value):
        path = find(ctx, VAES, vae_name, "vae_name")
        key = model_key("vae", path, ctx.models.device.vae_dtype)
        ref = ModelRef("VAE", family, str(path), key)
        components(ctx, ref)  # load now: a bad file fails this node
        return {"vae": ref}


class LoadDiffusionModel(Node):
    type = "load_diffusion_model"
    title = "Load Diffusion Model"
    category = "loaders"
    description = ("A UNet on its own (SD 1.x, 2.x or SDXL; a single file in original or "
                   "diffusers layout, or a diffusers unet folder) from diffusion_models/. "
                   "Pair it with a checkpoint's CLIP and VAE.")
    inputs = (String("unet_name", "", file=DIFFUSION_MODELS),)
    outputs = (Output("model", T.model),)

    def run(self, ctx, unet_name):
        path = find(ctx, DIFFUSION_MODELS, unet_name, "unet_name")
        key = model_key("unet", path, ctx.models.device.dtype)
        comps = components(ctx, ModelRef("MODEL", "", str(path), key))
        return {"model": ModelRef("MODEL", comps.family, str(path), key)}


NODES = (LoadCheckpoint, LoadVAE, LoadDiffusionModel)
