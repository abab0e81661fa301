"""ControlNet: load one, attach it to a conditioning, and the residuals the sampler adds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.modelpaths import ModelKind
from engine.runtime.models import ModelRef
from engine.spec import Bool, Float, In, Node, Output, String
from engine.types import LinkType, T
from engine.values import SERIALIZABLE

from .arch import Arch
from .files import find, model_key
from .loading import CONFIGS, FAMILY_BY_CONTEXT, header_shapes, quiet, require_weights


@dataclasses.dataclass(frozen=True)
class ControlHint:
    control_net: Any  # a ModelRef
    image: Any  # IMAGE tensor [B, 3, H, W], 0..1
    strength: float = 1.0
    start: float = 0.0  # fraction of the schedule where control begins
    end: float = 1.0  # ... and ends
    guess_mode: bool = False


SERIALIZABLE["ControlHint"] = ControlHint  # conditionings carrying hints cache to disk
CONTROL_NET = LinkType("CONTROL_NET", colour="#4db6ac")
CONTROLNETS = ModelKind("controlnet", comfyui_keys=("controlnet", "t2i_adapter"))


def family_of_controlnet(path: Path) -> str | None:
    if path.is_dir():
        dim = json.loads((path / "config.json").read_text()).get("cross_attention_dim")
    else:
        shapes = header_shapes(path)
        dims = [v.shape[-1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")]
        dim = dims[0] if dims else None
    if dim is None:
        return None
    return FAMILY_BY_CONTEXT.get(dim, f"context-{dim}")  # a custom or test architecture


def load_controlnet(path: Path, dtype: Any) -> Any:
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from .loading import open_checkpoint, read_config
    from .weights import Part, build, load

    quiet()
    if path.is_dir():
        cn = ControlNetModel.from_pretrained(path, local_files_only=True)
    else:
        sidecar = path.with_suffix(".config")
        family = family_of_controlnet(path)
        config = sidecar if sidecar.is_dir() else CONFIGS / f"controlnet_{family}"
        if not (config / "config.json").is_file():
            raise InputError("control_net_name", "an SD 1.5, SD 2.x or SDXL ControlNet",
                             f"{path.name} ({family})")
        cfg = read_config(config)
        state = open_checkpoint(path, "control_net_name")
        cn = build(lambda: ControlNetModel.from_config(cfg))
        try:
            load(state, [Part(cn, dtype, lambda sd: convert_controlnet_checkpoint(sd, cfg))],
                 "control_net_name", "a ControlNet with all its weights", path.name)
        except (NotImplementedError, ValueError, KeyError, RuntimeError) as exc:
            raise InputError("control_net_name", f"a ControlNet matching {config.name}",
                             path.name, hint=f"it could not be converted: {exc}") from None
        return cn
    require_weights(cn, "control_net_name", "a ControlNet with all its weights", path.name)
    return cn.requires_grad_(False).eval().to(dtype)


class LoadControlNet(Node):
    type = "load_controlnet"
    title = "Load ControlNet"
    category = "loaders"
    description = "A ControlNet (diffusers folder or single file in controlnet/)."
    inputs = (String("control_net_name", "", file=CONTROLNETS),)
    outputs = (Output("control_net", CONTROL_NET),)

    def run(self, ctx, control_net_name):
        path = find(ctx, CONTROLNETS, control_net_name, "control_net_name")
        family = family_of_controlnet(path)
        if family is None:
            raise InputError("control_net_name", "a ControlNet (with cross-attention layers)",
                             path.name)
        ref = ModelRef("CONTROL_NET", family, str(path),
                       model_key("controlnet", path, ctx.models.device.dtype))
        controlnet(ctx, ref)  # load now: a broken file fails this node
        return {"control_net": ref}


# Control models that are not ControlNet files (e.g. a hair model's Latent ControlNets),
# by ref kind: filled by the package that makes such refs, so this module imports none.
CONTROL_RESOLVERS: dict[str, Callable[[Any, ModelRef], Any]] = {}


def controlnet(ctx, ref: ModelRef) -> Any:
    import torch

    resolve = CONTROL_RESOLVERS.get(ref.kind)
    if resolve is not None:
        return resolve(ctx, ref)
    dtype = getattr(torch, ctx.models.device.dtype)
    return ctx.models.get(ref.key, lambda: load_controlnet(Path(ref.source), dtype))


class ApplyControlNet(Node):
    type = "apply_controlnet"
    title = "Apply ControlNet"
    category = "conditioning"
    description = ("Attach a ControlNet and its control image to a conditioning. Chain to "
                   "use several; apply to the negative too for the usual behaviour.")
    inputs = (In("conditioning", T.conditioning), In("control_net", CONTROL_NET),
              In("image", T.image),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
              Bool("guess_mode", False, description="the ControlNet recognises content "
                   "without a prompt; applies to the positive side only"))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, conditioning, control_net, image, strength=1.0, start_percent=0.0,
            end_percent=1.0, guess_mode=False):
        if end_percent < start_percent:
            raise InputError("end_percent", f"at least start_percent ({start_percent})",
                             end_percent)
        hint = ControlHint(control_net, image[:, :3], strength, start_percent, end_percent,
                           guess_mode)
        return {"conditioning": with_hint(conditioning, hint)}


def with_hint(conditioning: Any, hint: ControlHint) -> Any:
    """The conditioning (and every one combined with it) with one more ControlNet hint."""
    from .conditioning import map_parts

    return map_parts(conditioning,
                     lambda c: dataclasses.replace(c, controls=c.controls + (hint,)))


class ApplyControlNetPair(Node):
    type = "apply_controlnet_pair"
    title = "Apply ControlNet (Positive + Negative)"
    category = "conditioning"
    description = ("Attach a ControlNet and its control image to both the positive and the "
                   "negative conditioning (ComfyUI's Apply ControlNet Advanced).")
    inputs = (In("positive", T.conditioning), In("negative", T.conditioning),
              In("control_net", CONTROL_NET), In("image", T.image),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001))
    outputs = (Output("positive", T.conditioning), Output("negative", T.conditioning))

    def run(self, ctx, positive, negative, control_net, image, strength=1.0,
            start_percent=0.0, end_percent=1.0):
        if end_percent < start_percent:
            raise InputError("end_percent", f"at least start_percent ({start_percent})",
                             end_percent)
        hint = ControlHint(control_net, image[:, :3], strength, start_percent, end_percent)
        return {"positive": with_hint(positive, hint), "negative": with_hint(negative, hint)}


def base_family(family: str) -> str:
    """sd15_inpaint -> sd15, sdxl_refiner -> sdxl: what a ControlNet must match."""
    arch = Arch.of(family)
    return arch.base if arch is not None else family


class ControlState:
    """The sampler's view of the hints on one side (negative or positive)."""

    def __init__(self, ctx, hints: tuple[ControlHint, ...], model: Any, unet: Any,
                 size: tuple[int, int], batch: int, device: Any, dtype: Any, positive: bool):
        import torch.nn.functional as F

        self.items = []
        for h in hints:
            if h.strength == 0 or h.start >= h.end or (h.guess_mode and not positive):
                continue
            cn = controlnet(ctx, h.control_net)
            if cn.config.cross_attention_dim != unet.config.cross_attention_dim:
                fam, family = h.control_net.family, base_family(model.family)
                raise InputError("positive" if positive else "negative",
                                 f"ControlNets for {family} models", f"one for {fam}",
                                 hint=f"{Path(h.control_net.source).name} was made for {fam}")
            img = h.image
            if getattr(cn, "latent_input", False):  # the condition is a latent already
                if tuple(img.shape[-2:]) != (size[0] // 8, size[1] // 8):
                    raise InputError("image", f"an image of {size[1]}x{size[0]} (the latent's "
                                     "size)", f"{img.shape[-1] * 8}x{img.shape[-2] * 8}")
            elif tuple(img.shape[-2:]) != size:
                img = F.interpolate(img, size=size, mode="bilinear", align_corners=False,
                                    antialias=True)
            if img.shape[0] != batch:
                img = img[:1].repeat(batch, 1, 1, 1)
            self.items.append((h, cn, img.to(device, dtype)))

    def __bool__(self) -> bool:
        return bool(self.items)

    def same_as(self, other: ControlState) -> bool:
        """Equal hints on both sides: one batched call serves both (as diffusers does)."""
        import torch

        if len(self.items) != len(other.items):
            return False
        for (a, _, ia), (b, _, ib) in zip(self.items, other.items):
            if (a.control_net, a.strength, a.start, a.end, a.guess_mode) != \
                    (b.control_net, b.strength, b.start, b.end, b.guess_mode) or \
                    not torch.equal(ia, ib) or a.guess_mode:
                return False
        return True

    def residuals(self, x, t, emb, added, step: int, total: int, box=None):
        """Summed residuals; `box` (y0, y1, x0, x1 in latent units) crops the control
        images to the tile being denoised."""
        down = mid = None
        for h, cn, img in self.items:
            if box is not None:
                img = img[..., box[0] * 8: box[1] * 8, box[2] * 8: box[3] * 8]
            if step / total < h.start or (step + 1) / total > h.end:
                continue
            if img.shape[0] != x.shape[0]:  # one call for both halves of a guided batch
                img = img.repeat(x.shape[0] // img.shape[0], 1, 1, 1)
            d, m = cn(x, t, encoder_hidden_states=emb, controlnet_cond=img,
                      conditioning_scale=h.strength, guess_mode=h.guess_mode,
                      added_cond_kwargs=added, return_dict=False)
            if down is None:
                down, mid = list(d), m
            else:
                down = [a + b for a, b in zip(down, d)]
                mid = mid + m
        return down, mid


def guided_residuals(neg: ControlState, pos: ControlState, x, t, emb, added, step, total,
                     box=None):
    """Residuals for a [negative, positive] batch: each half gets its own hints, and a half
    without any gets zeros."""
    import torch

    if neg.same_as(pos):
        return pos.residuals(x, t, emb, added, step, total, box)
    xn, xp = x.chunk(2)
    en, ep = emb.chunk(2)
    an = ap = None
    if added is not None:
        an = {k: v.chunk(2)[0] for k, v in added.items()}
        ap = {k: v.chunk(2)[1] for k, v in added.items()}
    dn, mn = neg.residuals(xn, t, en, an, step, total, box) if neg else (None, None)
    dp, mp = pos.residuals(xp, t, ep, ap, step, total, box) if pos else (None, None)
    if dn is None and dp is None:
        return None, None
    if dn is None:
        dn, mn = [torch.zeros_like(d) for d in dp], torch.zeros_like(mp)
    if dp is None:
        dp, mp = [torch.zeros_like(d) for d in dn], torch.zeros_like(mn)
    return [torch.cat([a, b]) for a, b in zip(dn, dp)], torch.cat([mn, mp])


class InpaintControlImage(Node):
    type = "controlnet_inpaint_image"
    title = "Inpaint ControlNet Image"
    category = "controlnet/preprocessors"
    description = ("The control image an inpaint ControlNet expects: the picture, with the "
                   "masked pixels set to -1 (which no real pixel has).")
    inputs = (In("image", T.image), In("mask", T.mask))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, mask):
        import torch

        from .._tensors import same_size

        same_size(image, mask, "mask")
        return {"image": torch.where(mask > 0.5, torch.tensor(-1.0), image[:, :3])}


NODES = (LoadControlNet, ApplyControlNet, ApplyControlNetPair, InpaintControlImage)
