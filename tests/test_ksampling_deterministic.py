"""ComfyUI's deterministic samplers: each reproduces ComfyUI 0.33's final latents (every
reference kind, scheduler, text to image and image to image) within 1e-5, and the CFG++
variants step along the unconditional estimate when the model guides."""

from __future__ import annotations

import comfyref
import pytest

DETERMINISTIC = (
    "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2m", "ipndm",
    "ipndm_v", "deis", "res_multistep", "gradient_estimation", "exp_heun_2_x0", "ddim",
    "uni_pc", "uni_pc_bh2")
# CFG++ sampler -> the sampler it is when the model does not guide
CFG_PP = {"euler_cfg_pp": "euler", "dpmpp_2m_cfg_pp": "dpmpp_2m",
          "res_multistep_cfg_pp": "res_multistep",
          "gradient_estimation_cfg_pp": "gradient_estimation"}


def _max_diff(key: str, sampler_fn=None) -> float:
    ours, theirs = comfyref.run_reference(key, sampler_fn)
    return float((ours - theirs).abs().max())


@comfyref.needs_reference
@pytest.mark.parametrize("key", [k for name in DETERMINISTIC for k in comfyref.keys_for(name)])
def test_sampler_gives_comfyui_final_latent(key):
    assert _max_diff(key) <= 1e-5, key


@comfyref.needs_reference
@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_cfg_pp_without_guidance_is_the_plain_sampler(name):
    """run.uncond None (no guidance): the plain sampler's ComfyUI numbers, every key."""
    from nodes.diffusion.ksampling import SAMPLERS

    keys = comfyref.keys_for(CFG_PP[name])
    assert len(keys) == 36
    assert max(_max_diff(key, SAMPLERS[name]) for key in keys) <= 1e-5


def _forgetful(run, model):
    """The same guided model, but the run is told nothing of the unconditional estimate."""

    def forgetful(x, sigma):
        out = model(x, sigma)
        run.uncond = None
        return out

    run.model = forgetful
    return run


def _guided_run(sigmas, scale=3.0):
    """A toy guided model over the ideal denoiser: the unconditional estimate is 0.8 of
    the conditional one, and the wrapper records it on the run as a CFG wrapper does."""
    import torch

    from nodes.diffusion.ksampling import Run
    from nodes.diffusion.ksampling.modelsampling import discrete

    ideal = comfyref.ideal_denoiser(False)
    run = Run(None, torch.tensor(sigmas), discrete())

    def model(x, sigma):
        cond = ideal(x, sigma)
        run.uncond = cond * 0.8
        return run.uncond + scale * (cond - run.uncond)

    run.model = model
    return run, model


@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_cfg_pp_steps_from_the_guided_estimate_along_the_unconditional_slope(name):
    """One step s0 -> s1 (> 0): x1 = denoised + s1 * (x0 - uncond) / s0, where the plain
    sampler would step along the guided slope instead."""
    import torch

    from nodes.diffusion.ksampling import SAMPLERS

    x = torch.randn([1, 4, 8, 8], generator=torch.manual_seed(3))
    s0, s1 = 4.0, 1.5
    run, model = _guided_run([s0, s1])
    denoised = model(x, torch.tensor([s0]))
    expected = denoised + s1 * (x - run.uncond) / s0
    got = SAMPLERS[name](run, x)
    assert torch.allclose(got, expected, atol=1e-6)
    plain, _ = _guided_run([s0, s1])
    assert not torch.allclose(SAMPLERS[CFG_PP[name]](plain, x), expected, atol=1e-3)


@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_cfg_pp_later_steps_read_the_unconditional_estimate(name):
    """Over a whole schedule the guided run differs from the same run told nothing of the
    unconditional estimate (run.uncond cleared after each call)."""
    import torch

    from nodes.diffusion.ksampling import SAMPLERS

    x = torch.randn([1, 4, 8, 8], generator=torch.manual_seed(5)) * 6
    sigmas = [6.0, 3.0, 1.2, 0.4, 0.0]
    guided, _ = _guided_run(sigmas)
    blind = _forgetful(*_guided_run(sigmas))
    a, b = SAMPLERS[name](guided, x), SAMPLERS[name](blind, x)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(set(CFG_PP.values())))
def test_plain_samplers_ignore_the_unconditional_estimate(name):
    import torch

    from nodes.diffusion.ksampling import SAMPLERS

    x = torch.randn([1, 4, 8, 8], generator=torch.manual_seed(5)) * 6
    sigmas = [6.0, 3.0, 1.2, 0.4, 0.0]
    guided, _ = _guided_run(sigmas)
    blind = _forgetful(*_guided_run(sigmas))
    assert torch.equal(SAMPLERS[name](guided, x), SAMPLERS[name](blind, x))


def test_dpm_adaptive_stops_on_a_non_finite_model():
    import torch

    from nodes.diffusion.ksampling import SAMPLERS, Run
    from nodes.diffusion.ksampling.modelsampling import discrete

    run = Run(lambda x, sigma: x * float("nan"), torch.tensor([6.0, 1.0, 0.0]), discrete())
    with pytest.raises(ValueError, match="dpm_adaptive: the model's estimate at sigma 6"):
        SAMPLERS["dpm_adaptive"](run, torch.ones([1, 4, 8, 8]))
