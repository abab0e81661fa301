"""Stable Diffusion 1.x / 2.x / SDXL: loaders, text encoding, sampling, VAE."""

from engine.registry import Registry

from . import (
    conditioning,
    controlnet,
    custom_sampling,
    flow_nodes,
    inpaint,
    latent_batch,
    lora,
    memory,
    models,
    sampling,
    vae,
)
from .files import CHECKPOINTS, DIFFUSERS, DIFFUSION_MODELS, LORAS, VAES

NODES = (*models.NODES, *lora.NODES, *controlnet.NODES, *conditioning.NODES, *sampling.NODES,
         *custom_sampling.NODES, *vae.NODES, *inpaint.NODES, *latent_batch.NODES,
         *flow_nodes.NODES)


def register(registry: Registry) -> None:
    registry.add_link_type(controlnet.CONTROL_NET)
    for kind in (CHECKPOINTS, DIFFUSERS, LORAS, VAES, controlnet.CONTROLNETS, DIFFUSION_MODELS):
        registry.add_model_kind(kind)
    registry.register_all(NODES)
    memory.register(registry)
