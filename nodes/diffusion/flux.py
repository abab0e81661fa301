"""Flux.1 transformers and their VAE from users' files, offline, with the architecture
read from the tensor shapes: Black Forest Labs' original layout (`double_blocks.*`,
`single_blocks.*`, `img_in`...; with or without ComfyUI's `model.diffusion_model.` prefix),
diffusers' layout as one file, or a diffusers folder (`transformer/` or the model's own).

Shapes tell everything but the rotary axes: the head width is the length of the q/k norm's
scale, the depth the block count, the input channels (64, Fill 384, Canny/Depth 128) and
the guidance embedding (dev, not schnell) the first layers. The rotary axes split the head
width as the released models do (16, 56, 56 of 128): an eighth, then two even halves."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.errors import InputError

from .arch import Arch

PREFIXES = ("model.diffusion_model.", "transformer.")
_BFL_MARK = "double_blocks.0.img_attn.norm.key_norm.scale"
_DIFFUSERS_MARK = "transformer_blocks.0.attn.norm_added_k.weight"
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
_STORAGE = {"fp8_e4m3fn": "float8_e4m3fn", "fp8_e4m3fn_fast": "float8_e4m3fn",
            "fp8_e5m2": "float8_e5m2"}
# the released schedulers (what shapes cannot tell): dev shifts by image size, schnell not
SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
              "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
              "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
SCHNELL_SCHEDULER = {**SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False}

# BFL's names -> diffusers' (block parts below; `.scale` becomes `.weight`). Several names
# split the tensor's rows in that order (fused q, k, v; a single block's q, k, v and MLP).
_TOP = {"time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
        "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
        "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
        "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
        "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
        "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
        "txt_in": "context_embedder", "img_in": "x_embedder",
        "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": "norm_out.linear"}
_DOUBLE = {"img_mod.lin": ("norm1.linear",), "txt_mod.lin": ("norm1_context.linear",),
           "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
           "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
           "img_attn.norm.query_norm": ("attn.norm_q",),
           "img_attn.norm.key_norm": ("attn.norm_k",),
           "txt_attn.norm.query_norm": ("attn.norm_added_q",),
           "txt_attn.norm.key_norm": ("attn.norm_added_k",),
           "img_attn.proj": ("attn.to_out.0",), "txt_attn.proj": ("attn.to_add_out",),
           "img_mlp.0": ("ff.net.0.proj",), "img_mlp.2": ("ff.net.2",),
           "txt_mlp.0": ("ff_context.net.0.proj",), "txt_mlp.2": ("ff_context.net.2",)}
_SINGLE = {"modulation.lin": ("norm.linear",),
           "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
           "norm.query_norm": ("attn.norm_q",), "norm.key_norm": ("attn.norm_k",),
           "linear2": ("proj_out",)}
_EMB = "time_text_embed."
_SWAPPED = "norm_out.linear"  # BFL's final modulation is (shift, scale); diffusers' (scale, shift)


def _prefixed(keys: Any) -> str:
    return next((p for p in PREFIXES if any(k.startswith(p + "img_in") or
                                            k.startswith(p + "x_embedder") for k in keys)), "")


def layout(keys: Any) -> str | None:
    """"bfl", "diffusers" or None: which Flux layout a file's tensor names are in."""
    prefix = _prefixed(keys)
    names = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    if _BFL_MARK in names:
        return "bfl"
    if _DIFFUSERS_MARK in names and "x_embedder.weight" in names and \
            any(k.startswith("single_transformer_blocks.") for k in names):
        return "diffusers"
    return None


class Derived(Mapping[str, Any]):
    """Tensors in diffusers' names, each read from a file's tensor on demand: renamed, or a
    slice of a fused tensor's rows, or with its halves swapped. `shape(k)` from the header."""

    def __init__(self, weights: Any, plan: dict[str, tuple[str, int, int, bool]]):
        self.weights, self.plan = weights, plan
        self._last: tuple[str, Any] = ("", None)

    def __getitem__(self, key: str) -> Any:
        import torch

        source, start, stop, swap = self.plan[key]
        if self._last[0] != source:  # the parts of a fused tensor are asked for in a row
            self._last = (source, self.weights[source])
        t = self._last[1][start:stop]
        if swap:
            shift, scale = t.chunk(2, dim=0)
            t = torch.cat([scale, shift])
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)

    def shape(self, key: str) -> tuple[int, ...]:
        source, start, stop, _ = self.plan[key]
        return (stop - start, *self.weights.shape(source)[1:])

    def dtype(self, key: str) -> str:
        return self.weights.dtype(self.plan[key][0])


def bfl_plan(weights: Any) -> tuple[dict[str, tuple[str, int, int, bool]], list[str]]:
    """Each diffusers tensor's (BFL source, first row, end row, swap halves), and the BFL
    tensors nothing maps (a layout Loom does not know)."""
    prefix = _prefixed(weights)
    inner = weights.shape(prefix + "img_in.weight")[0]
    plan: dict[str, tuple[str, int, int, bool]] = {}
    unknown = []
    for key in weights:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        part, _, suffix = name.rpartition(".")
        rows = weights.shape(key)[0]
        if part in _TOP:
            new = _TOP[part]
            plan[f"{new}.{suffix}"] = (key, 0, rows, new == _SWAPPED)
            continue
        kind, _, rest = part.partition(".")
        index, _, inside = rest.partition(".")
        table = {"double_blocks": _DOUBLE, "single_blocks": _SINGLE}.get(kind, {})
        names = table.get(inside)
        if names is None or not index.isdigit():
            unknown.append(key)
            continue
        block = ("transformer_blocks" if kind == "double_blocks" else
                 "single_transformer_blocks") + f".{index}."
        sizes = [rows] if len(names) == 1 else [rows // 3] * 3 if len(names) == 3 else \
            [inner, inner, inner, rows - 3 * inner]
        start = 0
        for new, size in zip(names, sizes):
            new_suffix = "weight" if suffix == "scale" else suffix
            plan[f"{block}{new}.{new_suffix}"] = (key, start, start + size, False)
            start += size
    return plan, unknown


def _count(keys: Any, prefix: str) -> int:
    found = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    return max((int(i) + 1 for i in found if i.isdigit()), default=0)


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """The rotary axes (index, height, width) for a head width: 128 -> (16, 56, 56)."""
    first = max(2, head_dim // 8 // 2 * 2)
    second = (head_dim - first) // 2 // 2 * 2
    return first, second, head_dim - first - second


def config_from(state: Any) -> dict[str, Any]:
    """FluxTransformer2DModel's config from diffusers-named tensor shapes."""
    inner, in_channels = state.shape("x_embedder.weight")
    head_dim = state.shape("transformer_blocks.0.attn.norm_q.weight")[0]
    if inner % head_dim:
        raise ValueError(f"the width {inner} is no multiple of the head width {head_dim}")
    return {"patch_size": 1, "in_channels": in_channels,
            "out_channels": state.shape("proj_out.weight")[0],
            "num_layers": _count(state, "transformer_blocks."),
            "num_single_layers": _count(state, "single_transformer_blocks."),
            "attention_head_dim": head_dim, "num_attention_heads": inner // head_dim,
            "joint_attention_dim": state.shape("context_embedder.weight")[1],
            "pooled_projection_dim": state.shape(f"{_EMB}text_embedder.linear_1.weight")[1],
            "guidance_embeds": f"{_EMB}guidance_embedder.linear_1.weight" in state,
            "axes_dims_rope": rope_axes(head_dim)}


def family_of(config: Mapping[str, Any]) -> Arch | None:
    return Arch.variant(Arch.flux, int(config["in_channels"]), bool(config["guidance_embeds"]))


def diffusers_state(weights: Any, filename: str, input_name: str = "unet_name") -> Any:
    """A Flux file's tensors in diffusers' names (lazily), whichever layout it is in."""
    if layout(weights) == "diffusers":
        prefix = _prefixed(weights)
        return Derived(weights, {k[len(prefix):]: (k, 0, weights.shape(k)[0], False)
                                 for k in weights if k.startswith(prefix)})
    plan, unknown = bfl_plan(weights)
    if unknown:
        raise InputError(input_name, "a Flux transformer in Black Forest Labs' layout",
                         filename, hint=f"{len(unknown)} tensors Loom cannot place, e.g. "
                         f"{unknown[0]}")
    return Derived(weights, plan)


def is_flux(path: Path) -> bool:
    """Whether a file or folder holds a Flux transformer (from its header or config)."""
    return detect(path) is not None


def detect(path: Path) -> Arch | None:
    """The Flux variant of a transformer file or diffusers folder, from header shapes."""
    from .weights import SAFETENSORS, open_weights

    try:
        if path.is_dir():
            config = _folder_config(path)
            return family_of(config) if config is not None else None
        if path.suffix.lower() not in SAFETENSORS:
            return None
        weights = open_weights(path)
        if layout(weights) is None:
            return None
        return family_of(config_from(diffusers_state(weights, path.name)))
    except (InputError, OSError, ValueError, KeyError):
        return None


def _folder_config(path: Path) -> dict[str, Any] | None:
    for folder in (path / "transformer", path):
        f = folder / "config.json"
        if f.is_file():
            config = json.loads(f.read_text())
            if config.get("_class_name") == "FluxTransformer2DModel":
                return config
    return None


def _storage(weight_dtype: str) -> Any:
    import torch

    if weight_dtype not in WEIGHT_DTYPES:
        raise InputError("weight_dtype", f"one of {', '.join(WEIGHT_DTYPES)}", weight_dtype)
    name = _STORAGE.get(weight_dtype)
    return getattr(torch, name) if name else None


class _Cast(Mapping[str, Any]):
    """Tensors of `state`, those named in `names` cast to `dtype` as they are read."""

    def __init__(self, state: Any, dtype: Any, names: set[str]):
        self.state, self.dtype, self.names = state, dtype, names

    def __getitem__(self, key: str) -> Any:
        t = self.state[key]
        return t.to(self.dtype) if key in self.names else t

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


def load_transformer(path: Path, dtype: Any, weight_dtype: str = "default") -> Any:
    """The Components of a Flux transformer (no text encoders, no VAE). fp8 weight dtypes
    keep the layers' weights in fp8 and compute in `dtype`, layer by layer."""
    from diffusers import FluxTransformer2DModel

    from .loading import Components, _dtype, quiet
    from .weights import assign, build, open_weights

    quiet()
    storage = _storage(weight_dtype)
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        model = FluxTransformer2DModel.from_pretrained(folder, local_files_only=True,
                                                       **_dtype(dtype))
        model.requires_grad_(False).eval()
        if storage is not None:
            model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
        scheduler = path / "scheduler" / "scheduler_config.json"
        config = dict(model.config)
    else:
        weights = open_weights(path, "unet_name")
        state = diffusers_state(weights, path.name)
        try:
            config = config_from(state)
        except (KeyError, ValueError) as exc:
            raise InputError("unet_name", "a complete Flux transformer", path.name,
                             hint=f"its shapes do not make one ({exc})") from None
        model = build(lambda: FluxTransformer2DModel(**config))
        stored: set[str] = set()
        if storage is not None:  # on meta: which weights the casting keeps in fp8
            model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
            stored = {k for k, p in model.named_parameters() if p.dtype == storage}
            state = _Cast(state, storage, stored)
        what = "a complete Flux transformer"
        unexpected = assign(model, state, dtype, "unet_name", what, path.name,
                            keep=stored.__contains__)
        weights.close()
        if unexpected:
            raise InputError("unet_name", what, path.name,
                             hint=f"{len(unexpected)} tensors it has no place for, e.g. "
                             f"{unexpected[0]}")
        scheduler = path.with_suffix(".config") / "scheduler" / "scheduler_config.json"
    family = family_of(config)
    if family is None:
        raise InputError("unet_name", "a Flux transformer with 64, 128 or 384 input channels",
                         path.name, hint=f"it has {config['in_channels']}")
    sched = json.loads(scheduler.read_text()) if scheduler.is_file() else dict(
        SCHEDULER if family.info.guidance else SCHNELL_SCHEDULER)
    return Components(family.value, model, None, None, None, sched)


def load_denoiser(path: Path, dtype: Any, weight_dtype: str = "default") -> Any:
    """Load Diffusion Model's file: a Flux transformer, or a UNet (loading.load_unet_only)."""
    if is_flux(path):
        return load_transformer(path, dtype, weight_dtype)
    from .loading import load_unet_only

    comps = load_unet_only(path, dtype)
    storage = _storage(weight_dtype)
    if storage is not None:
        comps.unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
    return comps


def vae_config(shapes: Mapping[str, tuple[int, ...]], family: str) -> dict[str, Any] | None:
    """An AutoencoderKL config from a 16-channel VAE's shapes (original or diffusers
    layout), with its family's latent scaling (the chosen family's, or the one family of
    that latent width: ComfyUI's VAE Loader names none); None for a 4-channel VAE, whose
    shipped config stays."""
    out = shapes.get("encoder.conv_out.weight")
    latent = out[0] // 2 if out else 4
    arch = Arch.of(family)
    if arch is None or arch.latent_channels != latent:
        arch = next((a for a in Arch.bases() if a.latent_channels == latent), None)
    if arch is None or latent == 4:
        return None
    ldm = not any(k.startswith("encoder.down_blocks.") for k in shapes)
    down = "encoder.down." if ldm else "encoder.down_blocks."
    block = ".block." if ldm else ".resnets."
    levels = _count(shapes, down)
    channels = [shapes[f"{down}{i}{block}0.conv2.weight"][0] for i in range(levels)]
    per_level = _count(shapes, f"{down}0{block}")
    scaling, shift = arch.info.vae_factors
    quant = "quant_conv.weight" in shapes
    return {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": channels, "layers_per_block": per_level,
            "latent_channels": latent, "norm_num_groups": 32, "scaling_factor": scaling,
            "shift_factor": shift, "use_quant_conv": quant, "use_post_quant_conv": quant,
            "sample_size": 1024}
