"""LoRA: low-rank weight patches in kohya and diffusers/PEFT layouts, applied to the
model manager's modules and removed again bit for bit.

A MODEL or CLIP ref carries its patches; when a node asks for the modules behind a ref,
the patches that ref wants are put in place (originals backed up on first touch), and
a ref without patches gets the untouched weights back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import InputError

from .files import model_key
from .ldm import unet_to_ldm

_SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
)
GROUPS = {"MODEL": ("unet",), "CLIP": ("text_encoder", "text_encoder_2")}


def split_lora(sd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{module name as written in the file: {"down", "up", "alpha"?}}"""
    out: dict[str, dict[str, Any]] = {}
    for key, value in sd.items():
        for suffix, part in _SUFFIXES:
            if key.endswith(suffix):
                out.setdefault(key[: -len(suffix)], {})[part] = value
                break
    return {k: v for k, v in out.items() if "down" in v and "up" in v}


def module_table(comps: Any) -> dict[str, tuple[str, str]]:
    """Every name a LoRA file may use for a module -> (component, module path)."""
    table = getattr(comps, "_lora_table", None)
    if table is not None:
        return table
    table = {}
    unet = comps.unet
    ldm = unet_to_ldm({k: None for k in unet.state_dict()}, dict(unet.config))
    ldm_of = dict(zip(unet.state_dict(), ldm))
    for name, mod in unet.named_modules():
        if not _patchable(mod):
            continue
        for form in (f"lora_unet_{name.replace('.', '_')}", f"unet.{name}", name):
            table[form] = ("unet", name)
        ldm_name = ldm_of.get(name + ".weight", "")[len("model.diffusion_model."):-len(".weight")]
        if ldm_name:
            table[f"lora_unet_{ldm_name.replace('.', '_')}"] = ("unet", name)
    encoders = (("text_encoder", ("lora_te", "lora_te1")), ("text_encoder_2", ("lora_te2",)))
    for comp, kohya in encoders:
        model = getattr(comps, comp, None)
        if model is None:
            continue
        for name, mod in model.named_modules():
            if not _patchable(mod):
                continue
            full = name if name.startswith("text_model.") else f"text_model.{name}"
            for prefix in kohya:
                table[f"{prefix}_{full.replace('.', '_')}"] = (comp, name)
            table[f"{comp}.{full}"] = (comp, name)
            table[f"{comp}.{name}"] = (comp, name)
    comps._lora_table = table
    return table


def _patchable(mod: Any) -> bool:
    import torch

    return isinstance(mod, torch.nn.Linear | torch.nn.Conv2d)


def fits(mod: Any, parts: dict[str, Any]) -> bool:
    """Whether a LoRA layer's shapes fit the module (same names, other family: no fit)."""
    w = mod.weight
    down, up = parts["down"], parts["up"]
    if up.shape[0] != w.shape[0] or down.shape[1] != w.shape[1] or up.shape[1] != down.shape[0]:
        return False
    return w.ndim == 2 or down.flatten(1).shape[1] == w[0].numel()


def delta(mod: Any, down: Any, up: Any, alpha: Any, strength: float) -> Any:
    rank = down.shape[0]
    scale = (float(alpha) / rank if alpha is not None else 1.0) * strength
    w = mod.weight
    d = (up.flatten(1).float() @ down.flatten(1).float()) * scale
    return d.reshape(w.shape).to(w.dtype, copy=False)


def malformed(parts: dict[str, Any]) -> str | None:
    """Why a layer's tensors cannot be a LoRA (NaN weights would give black images), or None."""
    import torch

    down, up, alpha = parts["down"], parts["up"], parts.get("alpha")
    for name, t in (("down", down), ("up", up)):
        if not isinstance(t, torch.Tensor) or t.ndim not in (2, 4) or not t.is_floating_point():
            return (f"the {name} weight should be a 2-D or 4-D float tensor, not "
                    f"{_shape(t)}")
    if up.shape[1] != down.shape[0]:
        return (f"the up weight {_shape(up)} does not match the down weight {_shape(down)} "
                "(their rank differs)")
    if alpha is not None and not (isinstance(alpha, torch.Tensor) and alpha.numel() == 1
                                  and torch.isfinite(alpha.float()).all()):
        return f"alpha should be one finite number, not {_shape(alpha)}"
    for name, t in (("down", down), ("up", up)):
        if not torch.isfinite(t).all():
            return f"the {name} weight holds NaN or infinite values"
    return None


def _shape(t: Any) -> str:
    import torch

    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    if t.numel() == 1:
        return f"{t.item()!r}"
    return f"a {t.ndim}-D {str(t.dtype).removeprefix('torch.')} tensor {tuple(t.shape)}"


def read_lora(ctx, path: Path) -> dict[str, dict[str, Any]]:
    def load():
        from .loading import check_model_file, read_state_dict

        check_model_file(path, "lora_name")
        sd = read_state_dict(path)
        parts = split_lora(sd)
        if not parts:
            raise InputError("lora_name", "a LoRA file (lora_down/lora_up or lora_A/lora_B "
                             "weights)", path.name)
        for key, layer in parts.items():
            why = malformed(layer)
            if why:
                raise InputError("lora_name", "a LoRA with well-formed, finite weights",
                                 path.name, message=f"{path.name}: layer {key!r}: {why}")
        return parts

    return ctx.models.get(model_key("lora", path), load)


def patched(ctx, ref: Any, base: Any) -> Any:
    """Put the ref's patches on `base` (and only those), for the components its kind owns."""
    import torch

    wanted = tuple(p for p in ref.patches if p[0] == "lora")
    applied = base.__dict__.setdefault("_lora_applied", {})
    backup = base.__dict__.setdefault("_lora_backup", {})
    groups = GROUPS.get(ref.kind, ())
    for comp in groups:
        if applied.get(comp, ()) == wanted:
            continue
        model = getattr(base, comp, None)
        if model is None:
            continue
        mods = dict(model.named_modules())
        with torch.no_grad():
            for (c, name), original in backup.items():  # back to the plain weights
                if c == comp:
                    mods[name].weight.copy_(original)
            table = module_table(base)
            for _, path, _stamp, strength in wanted:
                if strength == 0:
                    continue
                for key, parts in read_lora(ctx, Path(path)).items():
                    target = table.get(key)
                    if target is None or target[0] != comp:
                        continue
                    mod = mods[target[1]]
                    if not fits(mod, parts):
                        continue
                    if target not in backup:
                        backup[target] = mod.weight.detach().clone()
                    mod.weight.add_(delta(mod, parts["down"], parts["up"], parts.get("alpha"),
                                          strength))
        applied[comp] = wanted
    return base


def matched(ctx, base: Any, parts: dict[str, Any]) -> tuple[int, int, bool]:
    """(layers that fit this model, layers in the file, whether its UNet part fits). A UNet
    part of which less than half fits means a LoRA for another family, even when its
    text encoder part fits (SD 1.5 and SDXL share CLIP-L, and a few same-named UNet
    layers have equal shapes in both)."""
    table = module_table(base)
    hit = unet_hit = 0
    unet_layers = sum(k.startswith(("lora_unet_", "unet.")) for k in parts)
    for key, p in parts.items():
        target = table.get(key)
        model = getattr(base, target[0], None) if target else None
        if model is not None and fits(model.get_submodule(target[1]), p):
            hit += 1
            unet_hit += target[0] == "unet"
    return hit, len(parts), unet_layers == 0 or 2 * unet_hit >= unet_layers
