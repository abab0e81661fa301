"""diffusers -> original (LDM) checkpoint layout, the reverse of diffusers' own single-file
conversion. Used to write single-file checkpoints of tiny test models; the loading path
stays diffusers' forward conversion, which is what users' files go through."""

from __future__ import annotations

import re
from typing import Any

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def unet_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    L = config["layers_per_block"]
    has_attn_up = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in sd.items():
        new = _unet_key(key, L, has_attn_up)
        out["model.diffusion_model." + new] = value
    return out


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def _unet_key(key: str, L: int, has_attn_up: list[bool]) -> str:
    for d, l in _UNET_TOP.items():
        if key.startswith(d + "."):
            return l + key[len(d):]
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * (L + 1) + j}.0.{_resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + b * (L + 1) + j}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (L + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * (L + 1) + j}.0.{_resnet(rest)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        b, j, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{b * (L + 1) + j}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        return f"output_blocks.{b * (L + 1) + L}.{2 if has_attn_up[b] else 1}.conv.{m[2]}"
    raise KeyError(f"no original-layout name for UNet key {key!r}")


def controlnet_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ControlNetModel in the original layout (control_model.*). The hint
    embedding must have four channel stages, as every released ControlNet has."""
    L = config["layers_per_block"]
    out = {}
    for key, value in sd.items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + key.split(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            new = "input_hint_block.0." + key.rsplit(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            new = "input_hint_block.14." + key.rsplit(".", 1)[1]
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        else:
            new = _unet_key(key, L, [])
        out["control_model." + new] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(sd: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        new = key.replace("conv_norm_out", "norm_out")
        attn = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*?)\.(weight|bias)$", key)
        if m := attn:
            part = _VAE_ATTN[m[2]]
            new = f"{m[1]}.mid.attn_1.{part}.{m[3]}"
            if m[3] == "weight" and part != "norm":
                value = value[:, :, None, None]  # linear -> 1x1 conv
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        new = new.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict[str, Any], prefix: str = "cond_stage_model.transformer."
                ) -> dict[str, Any]:
    """SD 1.x / SDXL's first encoder: the HF CLIPTextModel keys under `prefix` +
    text_model. (newer transformers save them without the `text_model.` level)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        k = k if k.startswith("text_model.") else "text_model." + k
        out[prefix + k] = v
    return out


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
              "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(sd: dict[str, Any], prefix: str = "conditioner.embedders.1.model."
                     ) -> dict[str, Any]:
    """SDXL's second encoder (CLIPTextModelWithProjection) in OpenCLIP's layout:
    q/k/v fused into in_proj, the projection transposed."""
    import torch

    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
          for k, v in sd.items() if not k.endswith("position_ids")}
    out = {prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           prefix + "text_projection": sd["text_projection.weight"].T.contiguous()}
    layers = {int(m[1]) for k in sd if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    for i in sorted(layers):
        src = f"text_model.encoder.layers.{i}."
        dst = f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{part}"] for p in "qkv"])
            for a, b in _OPEN_CLIP.items():
                out[dst + f"{b}.{part}"] = sd[src + f"{a}.{part}"]
    return out
