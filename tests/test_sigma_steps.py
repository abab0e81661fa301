"""The sigma-space samplers as a table of step functions (k-diffusion's algorithms): every
method the Sampler Select node offers has a step, and each gives the numbers the if-chain
gave before the table (recorded on a tiny deterministic denoiser, no model)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.values import Latent
from nodes.diffusion import custom_sampling as cs

# sum and first element of the result and of the last denoised estimate, from the if-chain
REFERENCE = {
    ("euler", 0.0): [-3506.5063881874084, -60.24327087402344,
                     -3506.5063881874084, -60.24327087402344],
    ("euler", 0.05): [-3508.438386321068, -60.286502838134766,
                      -3506.5063881874084, -60.24327087402344],
    ("euler_ancestral", 0.0): [-4760.411677360535, -86.15569305419922,
                               -4760.411677360535, -86.15569305419922],
    ("euler_ancestral", 0.05): [-4760.806899547577, -86.23764038085938,
                                -4760.411677360535, -86.15569305419922],
    ("heun", 0.0): [-1702.9111721515656, -3.4428234100341797,
                    -1702.9111721515656, -3.4428234100341797],
    ("heun", 0.05): [-1705.5064324140549, -3.6049304008483887,
                     -1702.9111721515656, -3.4428234100341797],
    ("dpmpp_2m", 0.0): [-2511.622893810272, -33.29206085205078,
                        -2511.622893810272, -33.29206085205078],
    ("dpmpp_2m", 0.05): [-2437.5268612504005, -32.4327278137207,
                         -2511.622893810272, -33.29206085205078],
    ("lcm", 0.0): [-4696.857192993164, -78.28775024414062,
                   -4696.857192993164, -78.28775024414062],
    ("lcm", 0.05): [-4696.944229125977, -78.36607360839844,
                    -4696.857192993164, -78.28775024414062],
    ("ddim", 0.0): [-3506.5063881874084, -60.24327087402344,
                    -3506.5063881874084, -60.24327087402344],
    ("ddim", 0.05): [-3508.438386321068, -60.286502838134766,
                     -3506.5063881874084, -60.24327087402344],
}
SIGMAS = [14.6, 6.1, 2.5, 0.9, 0.3]
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}


class ToyPredictor:
    """A smooth, deterministic stand-in for the guided UNet."""

    def __init__(self, ctx, model, comps, positive, negative, cfg, latent):
        self.device, self.dtype, self.mask, self.inpaint_unet = "cpu", torch.float32, None, False

    def __call__(self, x, t, i, total):
        return torch.tanh(0.7 * x) + 0.01 * float(t) * torch.cos(x)


def walk(monkeypatch, sampler, last):
    comps = SimpleNamespace(scheduler_config=SCHEDULER)
    monkeypatch.setattr(cs, "components", lambda ctx, model: comps)
    monkeypatch.setattr(cs, "Predictor", ToyPredictor)
    ctx = SimpleNamespace(check_cancelled=lambda: None, progress=lambda *a, **k: None)
    model = SimpleNamespace(family="sd15")
    latent = Latent(samples=torch.zeros(1, 4, 4, 4))
    out, den = cs.run_sigmas(ctx, cs.Guider(model, None, None, 1.0), sampler,
                             torch.tensor(SIGMAS + [last]), latent, cs.Noise(7))
    o, d = out.samples.double(), den.samples.double()
    return [o.sum().item(), o.flatten()[0].item(), d.sum().item(), d.flatten()[0].item()]


def test_every_offered_sampler_has_a_step():
    from nodes.diffusion.sigma_steps import STEPS

    choice = next(i for i in cs.SamplerSelect.inputs if i.name == "sampler")
    assert set(choice.choices) <= set(STEPS)
    assert tuple(STEPS) == cs.SIGMA_SAMPLERS


@pytest.mark.parametrize("last", [0.0, 0.05])  # down to 0, or leftover noise
@pytest.mark.parametrize("sampler", cs.SIGMA_SAMPLERS)
def test_steps_give_the_if_chain_s_numbers(monkeypatch, sampler, last):
    got = walk(monkeypatch, sampler, last)
    assert all(math.isfinite(v) for v in got)
    assert got == pytest.approx(REFERENCE[sampler, last], rel=1e-6, abs=1e-6)


COMFY_REFERENCE = Path(__file__).resolve().parents[2] / "shared/data/comfyui-reference"


@pytest.mark.skipif(not (COMFY_REFERENCE / "trajectories.json").is_file(),
                    reason="needs ../shared/data/comfyui-reference beside the checkout")
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_deterministic_steps_follow_comfyui_trajectories(sampler):
    """ComfyUI 0.33's final latents for the ideal denoiser of x0 ~ N(0, 0.5^2), every
    scheduler, text to image and image to image, from the same start: the steps match."""
    import json

    from safetensors.torch import load_file

    from nodes.diffusion.sigma_steps import STEPS, Walk

    runs = json.loads((COMFY_REFERENCE / "trajectories.json").read_text())["runs"]
    tensors = load_file(str(COMFY_REFERENCE / "trajectories.safetensors"))
    noise, image = tensors["noise"], tensors["latent_image"]

    def ideal(x, s, _i=0):
        return x * 0.25 / (0.25 + s * s)

    keys = [k for k in runs if k.startswith(f"sd_eps/{sampler}/")]
    assert keys
    for key in keys:
        sigmas = runs[key]["sigmas"]
        txt2img = key.endswith("/1.0")
        x = noise * math.sqrt(1 + sigmas[0] ** 2) if txt2img else noise * sigmas[0] + image
        walk = Walk(sigmas, ideal, lambda: None)
        for i in range(len(sigmas) - 1):
            den = ideal(x, sigmas[i])
            x, walk.old = STEPS[sampler](walk, x, den, i), den
        assert torch.allclose(x, tensors[key], atol=1e-5), key
