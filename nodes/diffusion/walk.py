"""The sampling loop as ComfyUI runs it: the model's noise levels on ComfyUI's schedules,
one noise tensor for the batch from the seed, the start scaled to the first level, the model
called at the nearest training timestep, and a k-diffusion sampler walking the sigmas
(nodes/diffusion/ksampling). The Sampler, the Advanced Sampler and the custom-sampling nodes
all walk through `walk`, so they agree with each other and with ComfyUI."""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.values import Latent

from .ksampling import SAMPLERS, Run
from .ksampling.modelsampling import EPS, ModelSampling, V, discrete
from .preview import preview_image

PREDICTIONS = {"epsilon": EPS, "v_prediction": V}


def model_sampling(comps: Any, model: Any = None, latent: Latent | None = None
                   ) -> ModelSampling:
    """A loaded model's noise levels, from its scheduler config (betas and prediction); a
    flow model's also from the Model Sampling node on its ref and the latent's size."""
    from . import flow

    if flow.is_transformer(comps):
        return flow.model_sampling(comps, model, latent)
    cached = getattr(comps, "_model_sampling", None)
    if cached is not None:
        return cached
    config = comps.scheduler_config
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise InputError("model", "a model that predicts noise or v", prediction)
    schedule = config.get("beta_schedule", "scaled_linear")
    if schedule not in ("scaled_linear", "linear"):
        raise InputError("model", "a model trained on linear or scaled-linear betas",
                         schedule)
    ms = discrete(PREDICTIONS[prediction], float(config.get("beta_start", 0.00085)),
                  float(config.get("beta_end", 0.012)),
                  int(config.get("num_train_timesteps", 1000)), schedule)
    try:
        comps._model_sampling = ms
    except AttributeError:  # frozen or slotted components: computed again next time
        pass
    return ms


def prepare_noise(shape: tuple[int, ...], seed: int,
                  batch_index: tuple[int, ...] | None = None) -> Any:
    """ComfyUI's starting noise: one CPU draw of the whole batch after seeding, or, for a
    latent cut from a batch (batch_index), the draws of the images it was cut from, so
    image k of a batch comes out the same alone."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(int(seed) % (2 ** 64))
    if batch_index is None:
        return torch.randn(shape, generator=gen, dtype=torch.float32)
    wanted = sorted(set(batch_index))
    drawn = {}
    for i in range(wanted[-1] + 1):
        noise = torch.randn((1, *shape[1:]), generator=gen, dtype=torch.float32)
        if i in wanted:
            drawn[i] = noise
    return torch.cat([drawn[i] for i in batch_index])


def check_sampler(name: str, input_name: str = "sampler") -> None:
    if name not in SAMPLERS:
        raise InputError(input_name, f"one of ComfyUI's samplers ({', '.join(SAMPLERS)})",
                         name)


def walk(ctx, model: Any, predict: Any, sampler: str, sigmas: Any, latent: Latent,
         noise: Any, seed: int | None) -> tuple[Latent, Latent]:
    """Denoise `latent` along `sigmas` with a ComfyUI sampler, from
    `noise_scaling(sigmas[0], noise, latent)`; returns the result and the model's last
    estimate of the clean latent. `noise` is a CPU tensor of the latent's shape (zeros for
    none), `seed` seeds the samplers' step noise. Callers check the sampler's name
    (`check_sampler`) before they build the predictor."""
    import torch

    ms = model_sampling(predict.comps, model, latent)
    device, dtype = predict.device, predict.dtype
    samples = latent.samples.to(device, torch.float32)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().to(device)
    if len(sigmas) < 2:
        return latent, latent
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise InputError("sigmas", "finite sigmas of at least 0", sigmas.tolist()[:8])
    noise = noise.to(device, torch.float32)
    # a 4-channel model inpaints by holding the unmasked part on the source (ComfyUI's
    # KSamplerX0Inpaint); a 9-channel one takes the mask as input instead
    mask = predict.mask.float() if predict.mask is not None and not predict.inpaint_unet \
        else None
    total = len(sigmas) - 1
    wants_uncond = sampler.endswith("_cfg_pp")  # only CFG++ steps along the unguided estimate
    state: dict[str, Any] = {"i": 0, "den": samples}
    run = Run(model=None, sigmas=sigmas, ms=ms, seed=seed, batch_index=latent.batch_index)

    def denoised(x: Any, sigma: Any) -> Any:
        ctx.check_cancelled()
        s = sigma.reshape(-1, *[1] * (x.ndim - 1)).to(device, torch.float32)
        if mask is not None:
            x = x * mask + ms.noise_scaling(s, noise, samples) * (1 - mask)
        t = ms.timestep(sigma[:1].float())[0].to(device, torch.float32)
        out = predict(ms.calculate_input(s, x).to(dtype), t, state["i"], total).float()
        den = ms.calculate_denoised(s, out, x)
        run.uncond = None
        if wants_uncond and predict.uncond is not None:
            run.uncond = ms.calculate_denoised(s, predict.uncond.float(), x)
        if mask is not None:
            den = den * mask + samples * (1 - mask)
            if run.uncond is not None:
                run.uncond = run.uncond * mask + samples * (1 - mask)
        return den

    def step_done(i: int, x: Any, den: Any) -> None:
        state["i"], state["den"] = i + 1, den
        ctx.progress(min(i + 1, total), total,
                     preview=lambda lat=den: preview_image(lat, model.family))

    run.model, run.callback = denoised, step_done
    x = ms.noise_scaling(sigmas[0], noise, samples, ms.max_denoise(sigmas))
    x = ms.inverse_noise_scaling(sigmas[-1], SAMPLERS[sampler](run, x))

    def wrap(z: Any) -> Latent:
        return Latent(samples=z.float().cpu(), noise_mask=latent.noise_mask,
                      batch_index=latent.batch_index)

    return wrap(x), wrap(state["den"])
