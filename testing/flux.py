"""A tiny random-weight Flux transformer and 16-channel VAE, built with diffusers' classes
and saved the ways users have them: Black Forest Labs' split file (with and without
ComfyUI's prefix), diffusers' layout as one file, a diffusers folder, an fp8 copy, and
the VAE as `ae.safetensors` in the original layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# head width 32: rotary axes (4, 14, 14), as Loom infers them (nodes/diffusion/flux.py)
TINY_FLUX = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                 attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                 pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 14, 14))
TINY_FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
                     block_out_channels=(32, 32, 32, 32), norm_num_groups=32, sample_size=64,
                     down_block_types=("DownEncoderBlock2D",) * 4,
                     up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.3611,
                     shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)


def to_bfl(sd: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """diffusers' Flux transformer state dict -> Black Forest Labs' names (the reverse of
    diffusers' convert_flux_transformer_checkpoint_to_diffusers): q, k, v fused again, the
    final modulation's halves back in (shift, scale) order."""
    import torch

    out: dict[str, Any] = {}
    emb = "time_text_embed."
    for bfl, ours in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                      ("guidance_in", "guidance_embedder")):
        for a, b in (("in_layer", "linear_1"), ("out_layer", "linear_2")):
            for p in ("weight", "bias"):
                if f"{emb}{ours}.{b}.{p}" in sd:
                    out[f"{bfl}.{a}.{p}"] = sd[f"{emb}{ours}.{b}.{p}"]
    for p in ("weight", "bias"):
        out[f"txt_in.{p}"] = sd[f"context_embedder.{p}"]
        out[f"img_in.{p}"] = sd[f"x_embedder.{p}"]
        out[f"final_layer.linear.{p}"] = sd[f"proj_out.{p}"]
        scale, shift = sd[f"norm_out.linear.{p}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{p}"] = torch.cat([shift, scale])
    double = sorted({int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")})
    for i in double:
        s, d = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{d}img_mod.lin.{p}"] = sd[f"{s}norm1.linear.{p}"]
            out[f"{d}txt_mod.lin.{p}"] = sd[f"{s}norm1_context.linear.{p}"]
            out[f"{d}img_attn.qkv.{p}"] = torch.cat([sd[f"{s}attn.to_{x}.{p}"] for x in "qkv"])
            out[f"{d}txt_attn.qkv.{p}"] = torch.cat([sd[f"{s}attn.add_{x}_proj.{p}"]
                                                     for x in "qkv"])
            out[f"{d}img_attn.proj.{p}"] = sd[f"{s}attn.to_out.0.{p}"]
            out[f"{d}txt_attn.proj.{p}"] = sd[f"{s}attn.to_add_out.{p}"]
            out[f"{d}img_mlp.0.{p}"] = sd[f"{s}ff.net.0.proj.{p}"]
            out[f"{d}img_mlp.2.{p}"] = sd[f"{s}ff.net.2.{p}"]
            out[f"{d}txt_mlp.0.{p}"] = sd[f"{s}ff_context.net.0.proj.{p}"]
            out[f"{d}txt_mlp.2.{p}"] = sd[f"{s}ff_context.net.2.{p}"]
        out[f"{d}img_attn.norm.query_norm.scale"] = sd[f"{s}attn.norm_q.weight"]
        out[f"{d}img_attn.norm.key_norm.scale"] = sd[f"{s}attn.norm_k.weight"]
        out[f"{d}txt_attn.norm.query_norm.scale"] = sd[f"{s}attn.norm_added_q.weight"]
        out[f"{d}txt_attn.norm.key_norm.scale"] = sd[f"{s}attn.norm_added_k.weight"]
    single = sorted({int(k.split(".")[1]) for k in sd
                     if k.startswith("single_transformer_blocks.")})
    for i in single:
        s, d = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for p in ("weight", "bias"):
            out[f"{d}modulation.lin.{p}"] = sd[f"{s}norm.linear.{p}"]
            out[f"{d}linear1.{p}"] = torch.cat([sd[f"{s}attn.to_{x}.{p}"] for x in "qkv"]
                                               + [sd[f"{s}proj_mlp.{p}"]])
            out[f"{d}linear2.{p}"] = sd[f"{s}proj_out.{p}"]
        out[f"{d}norm.query_norm.scale"] = sd[f"{s}attn.norm_q.weight"]
        out[f"{d}norm.key_norm.scale"] = sd[f"{s}attn.norm_k.weight"]
    return {prefix + k: v.contiguous() for k, v in out.items()}


def build_flux(root: str | Path, seed: int = 0, **config: Any) -> dict[str, Path]:
    """Under `root`: diffusion_models/ with tiny-flux.safetensors (BFL layout),
    tiny-flux-comfy.safetensors (BFL with model.diffusion_model.), tiny-flux-diffusers
    .safetensors, tiny-flux-fp8.safetensors (BFL, float8_e4m3fn) and the folder tiny-flux/
    (transformer/, scheduler/); vae/ae.safetensors. Returns the paths by those names, plus
    "transformer" -> the saved diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from safetensors.torch import save_file

    from nodes.diffusion.ldm import vae_to_ldm

    root = Path(root)
    models, vaes = root / "diffusion_models", root / "vae"
    models.mkdir(parents=True, exist_ok=True)
    vaes.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**{**TINY_FLUX, **config})
    with torch.no_grad():  # diffusers zero-initialises some layers; random weights test more
        for p in model.parameters():
            p.normal_(0, 0.2)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    paths = {"bfl": models / "tiny-flux.safetensors",
             "comfy": models / "tiny-flux-comfy.safetensors",
             "diffusers_file": models / "tiny-flux-diffusers.safetensors",
             "fp8": models / "tiny-flux-fp8.safetensors",
             "folder": models / "tiny-flux", "vae": vaes / "ae.safetensors"}
    save_file(to_bfl(sd), str(paths["bfl"]))
    save_file(to_bfl(sd, "model.diffusion_model."), str(paths["comfy"]))
    save_file(sd, str(paths["diffusers_file"]))
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v
               for k, v in to_bfl(sd).items()}, str(paths["fp8"]))
    model.save_pretrained(paths["folder"] / "transformer")
    sched = paths["folder"] / "scheduler"
    sched.mkdir(parents=True, exist_ok=True)
    from nodes.diffusion.flux import SCHEDULER

    (sched / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    vae = AutoencoderKL(**TINY_FLUX_VAE)
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.05)
    ldm = {k.removeprefix("first_stage_model."): v.contiguous()
           for k, v in vae_to_ldm(vae.state_dict(), TINY_FLUX_VAE).items()}
    save_file(ldm, str(paths["vae"]))
    paths["vae_folder"] = root / "vae" / "tiny-flux-vae"
    vae.save_pretrained(paths["vae_folder"])
    return paths
