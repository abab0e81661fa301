"""Tiny random-weight CLIP-L, CLIP-G and T5 encoders (transformers' own classes) written as
ComfyUI's single files in text_encoders/: fp16, fp8_e4m3fn, and fp8_e4m3fn_scaled (per-weight
`scale_weight` and the `scaled_fp8` marker). They read the real CLIP and T5 vocabularies,
so their embedding tables are full-length; everything else is small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLIP_VOCAB, T5_VOCAB = 49408, 32128


def tiny_configs() -> dict[str, Any]:
    from transformers import CLIPTextConfig, T5Config

    clip = dict(vocab_size=CLIP_VOCAB, max_position_embeddings=77, bos_token_id=49406,
                eos_token_id=49407)
    return {
        "clip_l": CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=1, hidden_act="quick_gelu",
                                 projection_dim=32, **clip),
        "clip_g": CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                 num_attention_heads=1, hidden_act="gelu", projection_dim=64,
                                 **clip),
        "t5": T5Config(vocab_size=T5_VOCAB, d_model=128, d_kv=64, d_ff=96, num_layers=2,
                       num_heads=2, relative_attention_num_buckets=32,
                       feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                       use_cache=False),
    }


def tiny_models(seed: int = 0) -> dict[str, Any]:
    import torch
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    torch.manual_seed(seed)
    configs = tiny_configs()
    out = {r: CLIPTextModelWithProjection(configs[r]) for r in ("clip_l", "clip_g")}
    out["t5"] = T5EncoderModel(configs["t5"])
    for m in out.values():
        m.eval().requires_grad_(False)
        for p in m.parameters():  # fp16 values, so the fp16 files hold exactly these models
            p.copy_(p.half().float())
    return out


def _matrices(state: dict[str, Any]) -> list[str]:
    """The tensors ComfyUI's fp8 files store in fp8: the weight matrices."""
    return [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]


def state_dicts(model: Any) -> dict[str, dict[str, Any]]:
    """The model as each file variant holds it: fp16, fp8, fp8 scaled."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"}
    fp16 = {k: v.half() for k, v in state.items()}
    fp8 = dict(fp16)
    scaled = dict(fp16)
    f8 = torch.float8_e4m3fn
    for k in _matrices(state):
        fp8[k] = state[k].to(f8)
        scale = state[k].abs().max().float() / 448.0
        scaled[k] = (state[k].float() / scale).to(f8)
        scaled[k[:-len("weight")] + "scale_weight"] = scale.reshape(())
    scaled["scaled_fp8"] = torch.empty(0, dtype=f8)
    return {"fp16": fp16, "fp8_e4m3fn": fp8, "fp8_e4m3fn_scaled": scaled}


def write_text_encoders(root: str | Path, seed: int = 0) -> dict[str, Any]:
    """Files named like ComfyUI's (clip_l.safetensors, t5xxl_fp8_e4m3fn_scaled.safetensors,
    ...) under root/text_encoders; returns the fp32 models."""
    from safetensors.torch import save_file

    folder = Path(root) / "text_encoders"
    folder.mkdir(parents=True, exist_ok=True)
    models = tiny_models(seed)
    for role, model in models.items():
        stem = "t5xxl" if role == "t5" else role
        for variant, sd in state_dicts(model).items():
            name = f"{stem}.safetensors" if variant == "fp16" else f"{stem}_{variant}.safetensors"
            save_file(sd, str(folder / name))
    return models


def to_open_clip(state: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face CLIP text model's weights in OpenCLIP's layout (fused q/k/v,
    `transformer.resblocks.*`, an untransposed text_projection)."""
    import torch

    ren = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
           "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    out: dict[str, Any] = {}
    layers = "text_model.encoder.layers."
    for key, t in state.items():
        if key.startswith(layers):
            n, rest = key[len(layers):].split(".", 1)
            head, _, leaf = rest.rpartition(".")
            if head.startswith("self_attn.") and head != "self_attn.out_proj":
                if head == "self_attn.q_proj":
                    parts = [state[f"{layers}{n}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
                    out[f"transformer.resblocks.{n}.attn.in_proj_{leaf}"] = torch.cat(parts)
                continue
            out[f"transformer.resblocks.{n}.{ren[head]}.{leaf}"] = t
        elif key == "text_model.embeddings.token_embedding.weight":
            out["token_embedding.weight"] = t
        elif key == "text_model.embeddings.position_embedding.weight":
            out["positional_embedding"] = t
        elif key.startswith("text_model.final_layer_norm."):
            out["ln_final." + key.rsplit(".", 1)[1]] = t
        elif key == "text_projection.weight":
            out["text_projection"] = t.T.contiguous()
    return out
