"""Loader nodes: checkpoints and VAEs. They return `ModelRef`s; the model manager owns
the modules and loads each at most once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.runtime.models import ModelRef
from engine.spec import Node, Output, String
from engine.types import T


def find(ctx, kind: str, name: str, input_name: str) -> Path:
    if not name:
        raise InputError(input_name, f"the name of a model in your {kind} folder", name)
    try:
        return ctx.models.paths.find(kind, name)
    except LookupError as exc:
        raise InputError(input_name, f"a model in your {kind} folder", name,
                         hint=str(exc)) from None


def _key(prefix: str, path: Path, dtype: str) -> str:
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = 0
    return f"{prefix}:{path}:{stamp}:{dtype}"


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
        return comps

    base = manager.get(ref.key, load)
    if not ref.patches:
        return base
    from .lora import patched

    return patched(ctx, ref, base)


class LoadCheckpoint(Node):
    type = "load_checkpoint"
    title = "Load Checkpoint"
    category = "loaders"
    description = ("A Stable Diffusion 1.x, 2.x or SDXL model: a single .safetensors / .ckpt "
                   "file from checkpoints/ or a folder from diffusers/.")
    inputs = (String("ckpt_name", "", file="checkpoints",
                     description="file in checkpoints/ or folder in diffusers/"),)
    outputs = (Output("model", T.model), Output("clip", T.clip), Output("vae", T.vae))

    def run(self, ctx, ckpt_name):
        path = _find_checkpoint(ctx, ckpt_name)
        comps_key = _key("ckpt", path, ctx.models.device.dtype)
        from .loading import load_components  # noqa: F401 - fail early if diffusers is missing

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
            path = env.find_model("checkpoints", name) or env.find_model("diffusers", name)
        from engine.spec import _stat_print

        return {"ckpt_name": _stat_print(path)}


def _find_checkpoint(ctx, name: str) -> Path:
    try:
        return find(ctx, "checkpoints", name, "ckpt_name")
    except InputError:
        try:
            return ctx.models.paths.find("diffusers", name)
        except LookupError:
            raise find_error(ctx, name) from None


def find_error(ctx, name: str) -> InputError:
    paths = ctx.models.paths
    looked = [str(p) for p in paths.folders("checkpoints") + paths.folders("diffusers")]
    return InputError("ckpt_name", "a checkpoint file in checkpoints/ or a folder in "
                      "diffusers/", name or "(empty)",
                      hint="looked in " + (", ".join(looked) or "no model folders: set "
                                           "LOOM_MODELS or --models"))


NODES = (LoadCheckpoint,)
