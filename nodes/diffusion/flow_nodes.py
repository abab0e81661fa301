"""Nodes of the flow-matching families: Flux Guidance, the 16-channel Empty Latent, and
the Model Sampling nodes that set a flow model's shift (carried on the MODEL ref, so the
weights stay shared and a change re-runs only the sampling)."""

from __future__ import annotations

import dataclasses

from engine.errors import InputError
from engine.spec import Float, In, Int, Node, Output
from engine.types import T

from .arch import Arch, Prediction
from .conditioning import map_parts
from .ksampling.modelsampling import flux_shift
from .sampling import EmptyLatent


class FluxGuidance(Node):
    type = "flux_guidance"
    title = "Flux Guidance"
    category = "conditioning"
    description = ("The distilled guidance a Flux dev model reads (3.5 when none is set); "
                   "with it the Sampler's cfg is usually 1, which skips the negative pass.")
    inputs = (In("conditioning", T.conditioning),
              Float("guidance", 3.5, min=0.0, max=100.0, step=0.1))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning, guidance=3.5):
        def put(c):
            return dataclasses.replace(c, extra={**c.extra, "guidance": float(guidance)})

        return {"conditioning": map_parts(conditioning, put)}


class ReferenceLatent(Node):
    type = "reference_latent"
    title = "Reference Latent"
    category = "conditioning"
    description = ("Give an editing model (Flux Kontext) an image to work from: its latent "
                   "joins the image's tokens at every step. Several chain, side by side.")
    inputs = (In("conditioning", T.conditioning), In("latent", T.latent, optional=True))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning, latent=None):
        if latent is None:
            return {"conditioning": conditioning}

        def put(c):
            refs = (*c.extra.get("reference_latents", ()), latent.samples)
            return dataclasses.replace(c, extra={**c.extra, "reference_latents": refs})

        return {"conditioning": map_parts(conditioning, put)}


class EmptyLatent16(EmptyLatent):
    type = "empty_latent_16"
    title = "Empty Latent (16 channels)"
    description = ("A blank latent for the 16-channel families (Flux, SD 3.5): width and "
                   "height in pixels, multiples of 16.")
    inputs = (Int("width", 1024, min=16, max=16384, step=16),
              Int("height", 1024, min=16, max=16384, step=16),
              Int("batch_size", 1, min=1, max=64))
    channels, multiple = 16, 16

    def run(self, ctx, width=1024, height=1024, batch_size=1):
        return super().run(ctx, width, height, batch_size)


def _flow_model(model):
    arch = Arch.of(model.family)
    if arch is None or arch.prediction is not Prediction.flow:
        raise InputError("model", "a flow-matching model (Flux, SD 3.5, ...)",
                         f"a {model.family or 'unknown'} model",
                         hint="SD 1.x, 2.x and SDXL keep their own noise schedule")
    return model


class ModelSamplingFlux(Node):
    type = "model_sampling_flux"
    title = "Model Sampling Flux"
    category = "sampling/model"
    description = ("Flux's shift for an image size (between base_shift at 256 tokens and "
                   "max_shift at 4096, i.e. 1024x1024): larger images spend more steps at "
                   "high noise.")
    inputs = (In("model", T.model), Float("max_shift", 1.15, min=0.0, max=100.0, step=0.01),
              Float("base_shift", 0.5, min=0.0, max=100.0, step=0.01),
              Int("width", 1024, min=16, max=16384, step=8),
              Int("height", 1024, min=16, max=16384, step=8))
    outputs = (Output("model", T.model),)

    def run(self, ctx, model, max_shift=1.15, base_shift=0.5, width=1024, height=1024):
        shift = flux_shift(width, height, max_shift, base_shift)
        return {"model": _flow_model(model).with_patch(("model_sampling", "flux", shift, 1.0))}


class ModelSamplingSD3(Node):
    type = "model_sampling_sd3"
    title = "Model Sampling SD3"
    category = "sampling/model"
    description = "SD3's shifted flow schedule (timesteps sigma x 1000); larger shift, more noise."
    inputs = (In("model", T.model), Float("shift", 3.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output("model", T.model),)
    multiplier = 1000.0

    def run(self, ctx, model, shift=3.0):
        patch = ("model_sampling", "discrete_flow", float(shift), self.multiplier)
        return {"model": _flow_model(model).with_patch(patch)}


class ModelSamplingAuraFlow(ModelSamplingSD3):
    type = "model_sampling_auraflow"
    title = "Model Sampling AuraFlow"
    description = ("The shifted flow schedule with timesteps in 0..1 (AuraFlow, and the "
                   "Qwen-Image and Z-Image templates).")
    inputs = (In("model", T.model), Float("shift", 1.73, min=0.0, max=100.0, step=0.01))
    multiplier = 1.0

    def run(self, ctx, model, shift=1.73):
        return super().run(ctx, model, shift)


NODES = (FluxGuidance, ReferenceLatent, EmptyLatent16, ModelSamplingFlux, ModelSamplingSD3,
         ModelSamplingAuraFlow)
