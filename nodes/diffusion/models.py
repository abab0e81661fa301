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
from .flux import WEIGHT_DTYPES
from .patches import patched


def components(ctx, ref: ModelRef) -> Any:
    """The live modules behind a MODEL / CLIP / VAE ref (loads once, stays resident)."""
    from .loading import load_components

    manager = ctx.models
    choice = manager.device

    def load():
        import torch

        comps = load_components(Path(ref.source), getattr(torch, choice.dtype),
                                getattr(torch, choice.vae_dtype))
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
        from .flux import load_denoiser

        def load_unet():
            import torch

            return load_denoiser(Path(ref.source), getattr(torch, choice.dtype),
                                 ref.get("weight_dtype", "default"))

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
    import torch
    from diffusers import AutoencoderKL

    from .loading import CONFIGS, build_vae, open_checkpoint, quiet, read_config
    from .weights import Part, load

    quiet()
    dtype = getattr(torch, choice.vae_dtype)
    if path.is_dir():
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
        vae.requires_grad_(False).eval().to(dtype)
        return VAEOnly(vae, family)
    from .flux import vae_config
    from .weights import Weights

    state = open_checkpoint(path, "vae_name")
    shapes = {k.removeprefix("first_stage_model.").removeprefix("vae."):
              tuple(state.shape(k) if isinstance(state, Weights) else state[k].shape)
              for k in state}
    sidecar = path.with_suffix(".config")  # an unusual architecture
    config = (read_config(sidecar) if (sidecar / "config.json").is_file()
              else vae_config(shapes, family) or read_config(CONFIGS / family / "vae"))
    vae = build_vae(config)
    load(state, [Part(vae, dtype, _vae_conversion(config))], "vae_name",
         f"a VAE for {family}", path.name)
    return VAEOnly(vae, family)


def _vae_conversion(config: dict[str, Any]) -> Any:
    """A VAE file's names (original layout or diffusers', maybe under a prefix) ->
    diffusers'."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from .loading import strip_prefix

    def convert(sd):
        sd = strip_prefix(sd, ("first_stage_model.", "vae."))
        if any(k.startswith("encoder.down_blocks.") for k in sd):
            return sd
        return convert_ldm_vae_checkpoint(sd, config)

    return convert


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
    description = ("A denoiser on its own from diffusion_models/: an SD 1.x, 2.x or SDXL "
                   "UNet or a Flux transformer, as a single file in original or diffusers "
                   "layout or a diffusers folder. Pair it with text encoders and a VAE. "
                   "fp8 weight dtypes keep the weights in fp8 and compute layer by layer "
                   "in the device's dtype.")
    inputs = (String("unet_name", "", file=DIFFUSION_MODELS),
              Choice("weight_dtype", WEIGHT_DTYPES, "default",
                     description="how the weights are stored in memory"))
    outputs = (Output("model", T.model),)

    def run(self, ctx, unet_name, weight_dtype="default"):
        path = find(ctx, DIFFUSION_MODELS, unet_name, "unet_name")
        stored = () if weight_dtype == "default" else (weight_dtype,)
        key = model_key("unet", path, ctx.models.device.dtype, *stored)
        extra = (("weight_dtype", weight_dtype),) if stored else ()
        comps = components(ctx, ModelRef("MODEL", "", str(path), key, extra=extra))
        return {"model": ModelRef("MODEL", comps.family, str(path), key, extra=extra)}


NODES = (LoadCheckpoint, LoadVAE, LoadDiffusionModel)
