"""The sigma-space samplers as a table of step functions (k-diffusion's algorithms): every
method the Sampler Select node offers has a step, and each gives the numbers the if-chain
gave before the table (recorded on a tiny deterministic denoiser, no model)."""

from __future__ import annotations

import math
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
