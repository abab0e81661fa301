"""The model's guided prediction at one step, shared by every sampling loop."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.errors import InputError
from engine.values import Latent

from .arch import Arch


def parts(c: Any) -> list[Any]:
    """A conditioning and those combined with it (Conditioning Combine), each on its own."""
    out = [dataclasses.replace(c, combined=())] if c.combined else [c]
    for other in c.combined:
        out += parts(other)
    return out


class Predictor:
    """The model's guided prediction at one step, shared by every sampling loop:
    classifier-free guidance over the positive and negative conditionings, their ControlNets,
    combined and area conditionings, an inpainting model's extra input channels, and tiles.

    Called with the scheduler-scaled latents (not doubled for guidance) and a timestep; returns
    the model's output (noise or v) with guidance applied."""

    def __init__(self, ctx, model, comps, positive, negative, cfg: float, latent: Latent,
                 tile: tuple[int, int, int] | None = None, hooks: tuple = ()):
        import torch

        from . import flow
        from .controlnet import ControlState

        self.ctx, self.model, self.comps, self.cfg = ctx, model, comps, cfg
        # called as hook(x, t, encoder_hidden_states) before each UNet call (a guided batch
        # is [negative, positive]): e.g. hair transfer runs its reference UNet there
        self.hooks = tuple(hooks)
        self.unet = unet = comps.unet
        manager = ctx.models
        self.device = device = manager.device.torch_device()
        self.dtype = dtype = unet.dtype
        samples = latent.samples
        self.shape = shape = tuple(samples.shape)
        self.batch = batch = shape[0]
        self.guided = negative is not None and cfg > 1.0
        pos_parts = parts(positive)
        neg_parts = parts(negative) if self.guided else []
        self.simple = len(pos_parts) == 1 and len(neg_parts) <= 1 and not any(
            "area" in p.extra or p.extra.get("strength", 1.0) != 1.0
            for p in pos_parts + neg_parts)
        if not self.simple and tile is not None:
            raise InputError("positive", "one conditioning without an area for the Tiled "
                             "Sampler", "combined or area conditionings",
                             hint="use the Sampler, or one prompt per tile")
        size = (shape[-2] * 8, shape[-1] * 8)
        self.transformer = flow.is_transformer(comps)
        if self.transformer and any(p.controls for p in pos_parts + neg_parts):
            raise InputError("positive", "conditionings without ControlNet hints for a Flux "
                             "model", "ControlNet hints",
                             hint="Loom does not run ControlNets for Flux yet")

        def prepare(c, positive_side):
            emb = c.embeds.repeat(batch, 1, 1).to(device, dtype)
            added = self._added(c, c, False)
            ctrl = ControlState(ctx, c.controls, model, unet, size, batch, device, dtype,
                                positive=positive_side)
            return emb, added, ctrl, c

        if self.simple:
            pos = pos_parts[0]
            neg = neg_parts[0] if neg_parts else None
            pe, ne = pos.embeds, (neg.embeds if neg is not None else None)
            if ne is not None:
                pe, ne = _same_length(pe, ne)
                emb = torch.cat([ne.repeat(batch, 1, 1), pe.repeat(batch, 1, 1)])
            else:
                emb = pe.repeat(batch, 1, 1)
            self.emb = emb.to(device, dtype)
            self.added = self._added(pos, neg if neg is not None else pos, neg is not None)
            self.ctrl_pos = ControlState(ctx, pos.controls, model, unet, size, batch, device,
                                         dtype, positive=True)
            self.ctrl_neg = ControlState(ctx, neg.controls if neg is not None else (), model,
                                         unet, size, batch, device, dtype, positive=False)
        else:
            self.pos_parts = [prepare(p, True) for p in pos_parts]
            self.neg_parts = [prepare(p, False) for p in neg_parts]

        # inpainting: a 9-channel UNet takes (mask, masked-image latent) beside the latent; a
        # 4-channel one keeps the unmasked area on the source, re-noised to each next step
        arch = Arch.of(comps.family)
        self.inpaint_unet = unet.config.in_channels == 9 or (
            self.transformer and arch is not None and arch.is_inpaint)
        self.mask = self.source = None
        self.extra_in = None
        concat = positive.extra.get("concat")
        if latent.noise_mask is not None:
            self.mask = latent_mask(latent.noise_mask, shape, batch).to(device, dtype)
            self.source = samples.to(device, dtype)
        if self.transformer and arch is not None and arch.info.control_concat:
            raise InputError("model", "a Flux model Loom samples (dev, schnell, Fill, Kontext)",
                             f"a {comps.family} model (Canny / Depth)",
                             hint="its control-image conditioning is not built yet")
        if self.inpaint_unet and self.transformer:  # Flux Fill: masked image, 8x8 mask
            if concat is None and latent.noise_mask is None:
                raise InputError("latent", "a latent with a mask (from Inpaint Model "
                                 "Conditioning or VAE Encode for Inpaint) for Flux Fill",
                                 "a latent without one")
            self.extra_in = flow.fill_inputs(concat or (latent.noise_mask, samples), shape,
                                             batch, device, dtype)
        elif self.inpaint_unet:
            if concat is not None:  # from Inpaint Model Conditioning
                cmask = latent_mask(concat[0], shape, batch).to(device, dtype)
                csrc = concat[1].to(device, dtype)
                csrc = csrc if csrc.shape[0] == batch else csrc[:1].repeat(batch, 1, 1, 1)
                self.extra_in = torch.cat([cmask, csrc], dim=1)
            elif self.mask is None:
                raise InputError("latent", "a latent with a mask (from VAE Encode for Inpaint "
                                 "or Set Latent Noise Mask) for this inpainting model",
                                 "a latent without one")
            else:
                self.extra_in = torch.cat([self.mask, self.source], dim=1)
        self.regions = tile_regions(shape[-2:], tile, device, dtype)
        self.uncond = None

    def __call__(self, x, t, i: int, total: int):
        """The guided output; `self.uncond` holds the unguided (negative) output of the same
        call when it guides, else None (CFG++ samplers step along it)."""
        import torch

        manager = self.ctx.models
        self.uncond = None
        if len(self.regions) == 1:
            return manager.retry_on_oom(lambda: self._predict(x, t, i, total, None),
                                        "the sampler", module=self.unet)
        pred = torch.zeros_like(x)
        uncond = torch.zeros_like(x) if self.guided else None
        weight = torch.zeros(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        for box, w in self.regions:
            self.ctx.check_cancelled()
            y0, y1, x0, x1 = box
            part = manager.retry_on_oom(lambda b=box: self._predict(x, t, i, total, b),
                                        "the sampler", module=self.unet)
            pred[..., y0:y1, x0:x1] += part * w
            if uncond is not None:
                uncond[..., y0:y1, x0:x1] += self.uncond * w
            weight[..., y0:y1, x0:x1] += w
        self.uncond = None if uncond is None else uncond / weight
        return pred / weight

    def _added(self, pos, neg, guided):
        """What the denoiser reads beside the text: SDXL's pooled embedding and size ids, or
        a flow transformer's pooled embedding and distilled guidance; None for SD 1.x / 2.x."""
        from . import flow

        comps, shape, batch = self.comps, self.shape, self.batch
        if self.transformer:
            return flow.added(comps, pos, neg, batch, guided, self.device, self.dtype)
        if comps.text_encoder_2 is not None or pos.pooled is not None:
            return _sdxl_added(comps, pos, neg, shape, batch, guided, self.device, self.dtype)
        return None

    def _unet(self, x, t, emb, added, down, mid):
        for hook in self.hooks:
            hook(x, t, emb)
        if self.transformer:
            from . import flow

            return flow.call(self.unet, x, t, emb, added)
        return self.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added,
                         down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]

    def _predict(self, x, t, i, total, box):
        import torch

        from .controlnet import guided_residuals

        extra = self.extra_in
        if box is not None:
            x = x[..., box[0]:box[1], box[2]:box[3]]
            if extra is not None:
                extra = extra[..., box[0]:box[1], box[2]:box[3]]
        if not self.simple:
            cond = self._side(self.pos_parts, x, t, i, total, extra)
            if not self.guided:
                return cond
            uncond = self.uncond = self._side(self.neg_parts, x, t, i, total, extra)
            return uncond + self.cfg * (cond - uncond)
        guided = self.guided
        xx = torch.cat([x] * 2) if guided else x
        unet_x = xx
        if extra is not None:
            unet_x = torch.cat([xx, torch.cat([extra] * 2) if guided else extra], dim=1)
        down = mid = None
        if self.ctrl_pos or self.ctrl_neg:
            if guided:
                down, mid = guided_residuals(self.ctrl_neg, self.ctrl_pos, xx, t, self.emb,
                                             self.added, i, total, box)
            else:
                down, mid = self.ctrl_pos.residuals(xx, t, self.emb, self.added, i, total, box)
        pred = self._unet(unet_x, t, self.emb, self.added, down, mid)
        if guided:
            uncond, cond = pred.chunk(2)
            self.uncond = uncond
            pred = uncond + self.cfg * (cond - uncond)
        return pred

    def _side(self, prepared, x, t, i, total, extra):
        """Area-weighted mean of the predictions of one side's conditionings (ComfyUI's
        Conditioning Combine / Set Area): each counts with its strength where it applies."""
        import torch

        out = torch.zeros_like(x)
        count = torch.zeros(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        h, w = x.shape[-2:]
        for emb, added, ctrl, c in prepared:
            y0, y1, x0, x1 = 0, h, 0, w
            if "area" in c.extra:  # (height, width, y, x) in pixels
                ah, aw, ay, ax = (v // 8 for v in c.extra["area"])
                y0, x0 = min(ay, h - 1), min(ax, w - 1)
                y1, x1 = min(y0 + max(ah, 1), h), min(x0 + max(aw, 1), w)
            box = (y0, y1, x0, x1)
            xc = x[..., y0:y1, x0:x1]
            unet_x = xc if extra is None else torch.cat([xc, extra[..., y0:y1, x0:x1]], dim=1)
            down = mid = None
            if ctrl:
                down, mid = ctrl.residuals(xc, t, emb, added, i, total,
                                           None if box == (0, h, 0, w) else box)
            strength = float(c.extra.get("strength", 1.0))
            out[..., y0:y1, x0:x1] += self._unet(unet_x, t, emb, added, down, mid) * strength
            count[..., y0:y1, x0:x1] += strength
        return out / count.clamp(min=1e-8)


def tile_regions(size, tile, device, dtype) -> list[tuple[tuple[int, int, int, int], Any]]:
    """(y0, y1, x0, x1) boxes and their blending weights; one box when a tile covers all."""
    from ..upscale import ramp, tile_starts

    h, w = size
    if tile is None or (tile[0] >= h and tile[1] >= w):
        return [((0, h, 0, w), None)]
    th, tw, overlap = min(tile[0], h), min(tile[1], w), tile[2]
    out = []
    for y in tile_starts(h, th, overlap):
        for x in tile_starts(w, tw, overlap):
            wy = ramp(th, overlap, y == 0, y + th >= h)
            wx = ramp(tw, overlap, x == 0, x + tw >= w)
            out.append(((y, y + th, x, x + tw),
                        (wy[:, None] * wx[None, :]).to(device, dtype)[None, None]))
    return out


def latent_mask(mask: Any, shape: tuple[int, ...], batch: int) -> Any:
    """A MASK at pixel (or latent) size -> [batch, 1, h, w] at the latent's size: the share
    of each 8x8 block that is masked."""
    import torch.nn.functional as F

    h, w = shape[-2], shape[-1]
    if tuple(mask.shape[-2:]) not in ((h, w), (h * 8, w * 8)):
        raise InputError("latent", f"a mask of {w * 8}x{h * 8} pixels (the image's size)",
                         f"a mask of {mask.shape[-1]}x{mask.shape[-2]}")
    if tuple(mask.shape[-2:]) != (h, w):
        mask = F.interpolate(mask.float(), size=(h, w), mode="area")
    if mask.shape[0] != batch:
        mask = mask[:1].repeat(batch, 1, 1, 1)
    return mask


def _same_length(a: Any, b: Any) -> tuple[Any, Any]:
    """Conditionings from prompts of different chunk counts: repeat the shorter's chunks."""
    import torch

    if a.shape[1] == b.shape[1]:
        return a, b
    n = max(a.shape[1], b.shape[1])

    def grow(x):
        reps = -(-n // x.shape[1])
        return torch.cat([x] * reps, dim=1)[:, :n]

    return grow(a), grow(b)


def _sdxl_added(comps, positive, negative, shape, batch, guided, device, dtype) -> dict:
    import torch

    h, w = shape[-2] * 8, shape[-1] * 8
    arch = Arch.of(comps.family)
    if arch is not None and arch.is_refiner:
        pos_ids = [h, w, 0, 0, positive.extra.get("aesthetic_score", 6.0)]
        neg_ids = [h, w, 0, 0, negative.extra.get("aesthetic_score", 2.5)]
    else:
        def ids(c):
            e = c.extra
            return [e.get("height", h), e.get("width", w), e.get("crop_h", 0),
                    e.get("crop_w", 0), e.get("target_height", h), e.get("target_width", w)]
        pos_ids, neg_ids = ids(positive), ids(negative)
    pooled_p = positive.pooled.repeat(batch, 1)
    time_p = torch.tensor([pos_ids], dtype=dtype).repeat(batch, 1)
    if guided:
        pooled = torch.cat([negative.pooled.repeat(batch, 1), pooled_p])
        time_ids = torch.cat([torch.tensor([neg_ids], dtype=dtype).repeat(batch, 1), time_p])
    else:
        pooled, time_ids = pooled_p, time_p
    return {"text_embeds": pooled.to(device, dtype), "time_ids": time_ids.to(device, dtype)}
