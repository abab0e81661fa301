"""Stable Diffusion 1.x / 2.x / SDXL: loaders, text encoding, sampling, VAE."""

from . import conditioning, controlnet, custom_sampling, inpaint, lora, models, sampling, vae

NODES = (*models.NODES, *lora.NODES, *controlnet.NODES, *conditioning.NODES, *sampling.NODES,
         *custom_sampling.NODES, *vae.NODES, *inpaint.NODES)
