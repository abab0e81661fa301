"""Stable-Hair's parts on diffusers building blocks (arXiv 2407.14078), written from the
paper's description: the Latent ControlNet, hair attention, and the reader of the released
weight files. torch and diffusers are imported only when a part is built."""

from __future__ import annotations

import inspect
import json
from functools import cache
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.resources import RESOURCES

from ..diffusion.arch import Arch

# The released layout: part -> file stem under the model folder (.safetensors or .bin).
PARTS = {
    "bald_converter": "stage1/pytorch_model",
    "hair_extractor": "stage2/pytorch_model",
    "hair_attention": "stage2/pytorch_model_1",
    "identity_net": "stage2/pytorch_model_2",
}
WHAT = {
    "bald_converter": "the Bald Converter (stage 1 Latent ControlNet)",
    "hair_extractor": "the Hair Extractor (stage 2 reference UNet)",
    "hair_attention": "the hair attention layers (stage 2, to_k_SSR / to_v_SSR)",
    "identity_net": "the Latent IdentityNet (stage 2 Latent ControlNet)",
}
SD15_UNET_CONFIG = RESOURCES / "configs" / Arch.sd15 / "unet" / "config.json"


@cache
def classes() -> Any:
    """(LatentControlNet, HairAttnProcessor, PlainProcessor, CaptureProcessor), built once."""
    import torch
    import torch.nn.functional as F
    from diffusers import ControlNetModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    class LatentControlNet(ControlNetModel):
        """A ControlNet whose condition is a VAE latent: no pixel embedding network; a
        second input convolution `conv_in_2` (shaped like `conv_in`) maps the condition
        latent, added to `conv_in(noisy latent)`. The rest is diffusers' ControlNet."""

        latent_input = True

        @classmethod
        def build(cls, config: dict[str, Any]) -> LatentControlNet:
            """From a ControlNet config (ControlNetModel's own __init__ builds it, then
            the pixel embedding is swapped for conv_in_2)."""
            net = cls.from_config(config)
            del net.controlnet_cond_embedding
            c = net.conv_in
            net.conv_in_2 = torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size,
                                            padding=c.padding)
            return net

        def __getattr__(self, name: str) -> Any:
            # diffusers' forward adds controlnet_cond_embedding(cond) to conv_in(sample):
            # here that is conv_in_2(cond latent), kept under its released name only
            if name == "controlnet_cond_embedding":
                return self._modules["conv_in_2"]
            return super().__getattr__(name)

    def attention(attn, q, k, v, batch):
        heads = attn.heads
        head_dim = q.shape[-1] // heads
        q, k, v = (x.view(batch, -1, heads, head_dim).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(batch, -1, heads * head_dim)

    class PlainProcessor(torch.nn.Module):
        """diffusers' attention, as a module (an entry of the released ModuleList)."""

        def __call__(self, attn, hidden_states, *args: Any, **kwargs: Any):
            return AttnProcessor2_0()(attn, hidden_states, *args, **kwargs)

    class HairAttnProcessor(PlainProcessor):
        """Self-attention plus hair attention: out = to_out(attention(x) + scale *
        attention(to_q(x), to_k_SSR(ref), to_v_SSR(ref))), `ref` being the Hair
        Extractor's input to the same layer at this step."""

        def __init__(self, hidden_size: int):
            super().__init__()
            self.to_k_SSR = torch.nn.Linear(hidden_size, hidden_size, bias=False)
            self.to_v_SSR = torch.nn.Linear(hidden_size, hidden_size, bias=False)
            self.name = ""
            self.bank: dict[str, Any] | None = None
            self.scale = 0.0

        def __call__(self, attn, hidden_states, encoder_hidden_states=None,
                     attention_mask=None, temb=None, *args: Any, **kwargs: Any):
            ref = self.bank.get(self.name) if self.bank is not None else None
            if ref is None or self.scale == 0 or encoder_hidden_states is not None:
                return super().__call__(attn, hidden_states, encoder_hidden_states,
                                        attention_mask, temb, *args, **kwargs)
            residual = hidden_states
            shape = hidden_states.shape
            if hidden_states.ndim == 4:
                b, c, h, w = shape
                hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
            batch = hidden_states.shape[0]
            if attn.group_norm is not None:
                hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
            q = attn.to_q(hidden_states)
            out = attention(attn, q, attn.to_k(hidden_states), attn.to_v(hidden_states),
                            batch)
            ref = ref.to(hidden_states.dtype)
            if ref.shape[0] != batch:
                ref = ref.repeat(batch // ref.shape[0], 1, 1)
            out = out + self.scale * attention(attn, q, self.to_k_SSR(ref),
                                               self.to_v_SSR(ref), batch)
            out = attn.to_out[1](attn.to_out[0](out.to(q.dtype)))
            if len(shape) == 4:
                out = out.transpose(-1, -2).reshape(*shape)
            if attn.residual_connection:
                out = out + residual
            return out / attn.rescale_output_factor

    class CaptureProcessor(PlainProcessor):
        """The Hair Extractor's self-attention: records its input under the layer's name."""

        def __init__(self, name: str, bank: dict[str, Any]):
            super().__init__()
            self.name, self.bank = name, bank

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args: Any,
                     **kwargs: Any):
            if encoder_hidden_states is None:
                self.bank[self.name] = hidden_states
            return super().__call__(attn, hidden_states, encoder_hidden_states, *args,
                                    **kwargs)

    return LatentControlNet, HairAttnProcessor, PlainProcessor, CaptureProcessor


def controlnet_config(unet_config: dict[str, Any]) -> dict[str, Any]:
    """A ControlNet config from the UNet's: the keys ControlNetModel takes."""
    from diffusers import ControlNetModel

    params = inspect.signature(ControlNetModel.__init__).parameters
    return {k: v for k, v in unet_config.items() if k in params and not k.startswith("_")}


def hair_processors(unet: Any) -> Any:
    """The main UNet's processors in `attn_processors` order, as one ModuleList (the
    released stage2/pytorch_model_1 layout): hair attention on every self-attention,
    plain on the others."""
    import torch

    _, HairAttn, Plain, _ = classes()
    procs = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            attn = unet.get_submodule(name[: -len(".processor")])
            p = HairAttn(attn.to_q.in_features)
            p.name = name
            procs.append(p)
        else:
            procs.append(Plain())
    return torch.nn.ModuleList(procs)


class HairModels(dict):
    """The four parts, by name; `report` holds what loading found missing or unexpected."""

    report: dict[str, dict[str, list[str]]]


def find_parts(folder: Path) -> tuple[dict[str, Path], list[str]]:
    found, missing = {}, []
    for part, stem in PARTS.items():
        for suffix in (".safetensors", ".bin"):
            p = folder / (stem + suffix)
            if p.is_file():
                found[part] = p
                break
        else:
            missing.append(f"{stem}.safetensors (or .bin): {WHAT[part]}")
    return found, missing


def load_hair_models(folder: Path, torch_dtype: Any = None) -> HairModels:
    """Read a Stable-Hair folder in the released layout. The UNet architecture is SD 1.5's
    unless the folder has a `config.json` (a UNet config) saying otherwise."""
    import torch
    from diffusers import UNet2DConditionModel

    from ..diffusion.loading import open_checkpoint, quiet
    from ..diffusion.weights import assign, build

    quiet()
    found, missing = find_parts(folder)
    if missing:
        raise InputError("hair_model", "a Stable-Hair folder in the released layout",
                         folder.name, hint=f"missing in {folder}: " + "; ".join(missing))
    cfg_file = folder / "config.json"
    unet_config = json.loads((cfg_file if cfg_file.is_file() else SD15_UNET_CONFIG).read_text())
    LatentControlNet, _, _, _ = classes()
    dtype = torch_dtype or torch.float32

    def parts_on_meta() -> dict[str, Any]:
        extractor = UNet2DConditionModel.from_config(unet_config)
        return {"bald_converter": LatentControlNet.build(controlnet_config(unet_config)),
                "hair_extractor": extractor,
                "hair_attention": hair_processors(extractor),  # the main UNet's layer names
                "identity_net": LatentControlNet.build(controlnet_config(unet_config))}

    out = HairModels()
    out.report = {}
    for part, module in build(parts_on_meta).items():
        f = found[part]
        unexpected = assign(module, open_checkpoint(f, "hair_model"), dtype, "hair_model",
                            f"complete weights for {WHAT[part]} (is {folder.name} a "
                            "Stable-Hair folder?)", f.name)
        out.report[part] = {"missing": [], "unexpected": unexpected}
        out[part] = module
    return out
