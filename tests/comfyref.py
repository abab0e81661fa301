"""ComfyUI 0.33's reference numbers (../shared/data/comfyui-reference, see its README):
the schedules its KSampler runs and the final latents of its samplers on fixed noise with
the ideal denoiser of x0 ~ N(0, 0.5^2). Tests skip where the folder is not beside the
checkout."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

# the nearest shared/ above the checkout: beside it (/work/main) or above a worktree (/work/wt/x)
REFERENCE = next((p / "shared/data/comfyui-reference" for p in Path(__file__).resolve().parents
                  if (p / "shared/data/comfyui-reference").is_dir()),
                 Path(__file__).resolve().parents[2] / "shared/data/comfyui-reference")
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "trajectories.json").is_file(),
    reason="needs ../shared/data/comfyui-reference beside the checkout")

# txt2img / img2img denoise values of the trajectories
DENOISES = ("1.0", "0.6")


@functools.cache
def schedules() -> dict:
    return json.loads((REFERENCE / "schedules.json").read_text())["sigmas"]


@functools.cache
def runs() -> dict:
    return json.loads((REFERENCE / "trajectories.json").read_text())["runs"]


@functools.cache
def tensors() -> dict:
    from safetensors.torch import load_file

    return load_file(str(REFERENCE / "trajectories.safetensors"))


def model_sampling(kind: str):
    from nodes.diffusion.ksampling import modelsampling as m

    if kind == "sd_eps":
        return m.discrete(m.EPS)
    if kind == "sd_v":
        return m.discrete(m.V)
    if kind == "sd3_shift3":
        return m.discrete_flow(3.0, 1000.0)
    if kind == "auraflow_shift3.1":
        return m.discrete_flow(3.1, 1.0)
    if kind == "flux_1024":
        return m.flux(m.flux_shift(1024, 1024))
    raise KeyError(kind)


def ideal_denoiser(flow: bool):
    """D(x, sigma) for data x0 ~ N(0, 0.5^2): the reference's stand-in for a model."""

    def discrete(x, sigma):
        s = sigma.reshape(-1, *[1] * (x.ndim - 1))
        return x * 0.25 / (0.25 + s * s)

    def rectified(x, sigma):
        s = sigma.reshape(-1, *[1] * (x.ndim - 1))
        return x * (1 - s) * 0.25 / ((1 - s) ** 2 * 0.25 + s * s)

    return rectified if flow else discrete


def run_reference(key: str, sampler_fn=None):
    """Run the sampler of trajectory `key` (KIND/SAMPLER/SCHEDULER/STEPS/DENOISE) from the
    reference's start as ComfyUI does; returns (ours, ComfyUI's)."""
    import torch

    from nodes.diffusion.ksampling import SAMPLERS, Run

    kind, sampler, _sched, _steps, denoise = key.split("/")
    ms = model_sampling(kind)
    sigmas = torch.tensor(runs()[key]["sigmas"], dtype=torch.float32)
    t = tensors()
    noise = t["noise"]
    latent = torch.zeros_like(noise) if denoise == "1.0" else t["latent_image"]
    x = ms.noise_scaling(sigmas[0], noise, latent, ms.max_denoise(sigmas))
    run = Run(ideal_denoiser(ms.flow), sigmas, ms, seed=42)
    out = (sampler_fn or SAMPLERS[sampler])(run, x)
    return ms.inverse_noise_scaling(sigmas[-1], out), t[key]


def keys_for(sampler: str) -> list[str]:
    if not (REFERENCE / "trajectories.json").is_file():
        return []
    return [k for k in runs() if k.split("/")[1] == sampler]
