"""Diffusion: SD 1.x / 2.x / SDXL and Flux.1 loaders, text encoders, sampling, VAE."""

from engine.registry import Registry

from . import (
    conditioning,
    controlnet,
    custom_sampling,
    encode_flow,
    flow_nodes,
    inpaint,
    latent_batch,
    lora,
    memory,
    models,
    sampling,
    text_encoders,
    vae,
)
from .files import (
    CHECKPOINTS,
    CLIP_FILES,
    DIFFUSERS,
    DIFFUSION_MODELS,
    LORAS,
    TEXT_ENCODERS,
    VAES,
)

NODES = (*models.NODES, *lora.NODES, *controlnet.NODES, *conditioning.NODES, *sampling.NODES,
         *custom_sampling.NODES, *vae.NODES, *inpaint.NODES, *latent_batch.NODES,
         *flow_nodes.NODES, *text_encoders.NODES, *encode_flow.NODES)


def register(registry: Registry) -> None:
    registry.add_link_type(controlnet.CONTROL_NET)
    for kind in (CHECKPOINTS, DIFFUSERS, LORAS, VAES, controlnet.CONTROLNETS, DIFFUSION_MODELS,
                 TEXT_ENCODERS, CLIP_FILES):
        registry.add_model_kind(kind)
    registry.register_all(NODES)
    memory.register(registry)
