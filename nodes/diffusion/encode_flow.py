"""Text encoding for the flow families, from the loaders' CLIPs (text_encoders.py).

Flux: T5's last hidden state is the context, CLIP-L's pooled output the vector. SD3.5:
CLIP-L's and CLIP-G's penultimate hidden states side by side, zero-padded to T5's width,
then T5's tokens after them; the vector is both CLIPs' pooled outputs.

Two styles. "comfyui" (the default, so ComfyUI's files give ComfyUI's picture): CLIP in
77-token chunks with ComfyUI's weighting; T5 never truncated and padded to at least 256
tokens (Flux) or 77 (SD3.5), weighted the same way; SD3.5's CLIP-L vector unprojected.
"diffusers": as the pipelines' encode_prompt: CLIP padded and cut to 77 tokens, T5 to
512 (Flux) or 256 (SD3.5), no weighting, SD3.5's CLIP-L vector through its projection."""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.spec import Choice, Float, In, Node, Output, String
from engine.types import T
from engine.values import Conditioning

from .prompt_comfy import apply_weights_comfy, encode_chunks, tokenize_comfy
from .text_encoders import CLIP_G, CLIP_L, FLUX, KEY, SD3, T5, components, tokenizer

STYLES = ("comfyui", "diffusers")
T5_TOKENS = {(FLUX, "comfyui"): 256, (FLUX, "diffusers"): 512,
             (SD3, "comfyui"): 77, (SD3, "diffusers"): 256}
WIDTHS = {CLIP_L: 768, CLIP_G: 1280, T5: 4096}  # the released widths, for a part left out
EMPTY_PADDING = ("none", "empty_prompt")


def is_flow(clip_ref: Any) -> bool:
    return clip_ref.key.startswith(KEY) and clip_ref.family in (FLUX, SD3)


def _check(style: str, **texts: Any) -> None:
    if style not in STYLES:
        raise InputError("style", f"one of {', '.join(STYLES)}", style)
    for name, text in texts.items():
        if not isinstance(text, str):
            raise InputError(name, "text", text)


class _Run:
    """One encoding: the encoders of a CLIP ref on the compute device."""

    def __init__(self, ctx, clip_ref: Any, family: str, node: str):
        if not is_flow(clip_ref) or clip_ref.family != family:
            raise InputError("clip", f"the text encoders of a {family} model (Load Dual / "
                             f"Triple Text Encoders, clip_type {family})",
                             clip_ref.family or "?",
                             hint=f"{node} encodes for {family} only")
        self.ctx = ctx
        self.encoders = components(ctx, clip_ref)
        self.has = set(self.encoders.getters)
        self.device = ctx.models.device.torch_device()

    def ids(self, ids: list[int]) -> Any:
        import torch

        self.ctx.check_cancelled()
        return torch.tensor([ids], device=self.device)

    def clip(self, role: str, text: str, style: str, penultimate: bool
             ) -> tuple[Any, Any, Any]:
        """(hidden states, pooled output, projected pooled output) of one CLIP."""
        model, tok = self.encoders.part(role), tokenizer(role)

        def hidden(chunk: list[int]) -> tuple[Any, Any]:
            out = model.text_model(self.ids(chunk), output_hidden_states=True)
            return (out.hidden_states[-2] if penultimate else out.last_hidden_state,
                    out.pooler_output)

        if style == "diffusers":
            z, pooled = hidden(tok(text, padding="max_length", max_length=tok.model_max_length,
                                   truncation=True).input_ids)
        else:
            z, pooled = encode_chunks(tok, text, hidden, warn=self.ctx.log.warning)
        return z, pooled, model.text_projection(pooled)

    def empty_clip(self, role: str, penultimate: bool) -> Any:
        return self.clip(role, "", "comfyui", penultimate)[0]

    def t5(self, text: str | None, style: str, tokens: int) -> Any:
        """T5's last hidden state; text None: ComfyUI's no-padding empty prompt (one token)."""
        model, tok = self.encoders.part(T5), tokenizer(T5)

        def hidden(ids: list[int]) -> Any:
            return model(input_ids=self.ids(ids)).last_hidden_state

        if text is None:
            return hidden([tok.eos_token_id])
        if style == "diffusers":
            return hidden(tok(text, padding="max_length", max_length=tokens,
                              truncation=True).input_ids)
        pairs = [p for group in tokenize_comfy(tok, text, warn=self.ctx.log.warning)
                 for p in group] + [(tok.eos_token_id, 1.0)]
        pairs += [(tok.pad_token_id, 1.0)] * (tokens - len(pairs))
        weights = [w for _, w in pairs]
        z = hidden([t for t, _ in pairs])
        if all(w == 1.0 for w in weights):
            return z
        empty = hidden([tok.eos_token_id] + [tok.pad_token_id] * (len(pairs) - 1))
        return apply_weights_comfy(z, weights, empty)


def _conditioning(embeds: Any, pooled: Any, extra: dict | None) -> Conditioning:
    return Conditioning(embeds=embeds.float().cpu(), pooled=pooled.float().cpu(),
                        extra=dict(extra or {}))


def encode_flux(ctx, clip_ref: Any, clip_l: str, t5xxl: str, style: str = "comfyui",
                extra: dict | None = None, node: str = "Text Encode Flux") -> Conditioning:
    _check(style, clip_l=clip_l, t5xxl=t5xxl)
    run = _Run(ctx, clip_ref, FLUX, node)
    _, pooled, _ = run.clip(CLIP_L, clip_l, style, penultimate=False)
    return _conditioning(run.t5(t5xxl, style, T5_TOKENS[FLUX, style]), pooled, extra)


def encode_sd3(ctx, clip_ref: Any, clip_l: str, clip_g: str, t5xxl: str,
               empty_padding: bool = True, style: str = "comfyui",
               node: str = "Text Encode SD3") -> Conditioning:
    """`empty_padding` False: ComfyUI's "none": an empty prompt leaves its encoders out."""
    import torch
    import torch.nn.functional as F

    _check(style, clip_l=clip_l, clip_g=clip_g, t5xxl=t5xxl)
    run = _Run(ctx, clip_ref, SD3, node)
    comfy = style == "comfyui"
    out, pooled_parts = [], []
    if empty_padding or clip_l or clip_g or not comfy:
        hidden = {}
        for role, text in ((CLIP_L, clip_l), (CLIP_G, clip_g)):
            if role not in run.has:
                pooled_parts.append(torch.zeros(1, WIDTHS[role], device=run.device))
                continue
            z, pooled, projected = run.clip(role, text, style, penultimate=True)
            hidden[role] = z
            pooled_parts.append(projected if role == CLIP_G or not comfy else pooled)
        if len(hidden) == 2:  # ComfyUI pads the one with fewer chunks with empty ones
            while hidden[CLIP_L].shape[1] != hidden[CLIP_G].shape[1]:
                short = min(hidden, key=lambda r: hidden[r].shape[1])
                hidden[short] = torch.cat([hidden[short],
                                           run.empty_clip(short, penultimate=True)], dim=1)
        if hidden:
            seq = next(iter(hidden.values())).shape[1]
            lg = hidden.get(CLIP_L, torch.zeros(1, seq, WIDTHS[CLIP_L], device=run.device))
            if CLIP_G in hidden:
                lg = torch.cat([lg, hidden[CLIP_G]], dim=-1)
            width = run.encoders.part(T5).config.d_model if T5 in run.has else WIDTHS[T5]
            out.append(F.pad(lg, (0, width - lg.shape[-1])))
    if T5 in run.has:
        no_t5 = comfy and not empty_padding and not t5xxl
        out.append(run.t5(None if no_t5 else t5xxl, style, T5_TOKENS[SD3, style]))
    elif not comfy:  # diffusers' pipeline without T5: zeros in its place
        out.append(torch.zeros(1, 77, out[0].shape[-1], device=run.device))
    embeds = torch.cat(out, dim=1) if out else torch.zeros(1, 77, WIDTHS[T5])
    pooled = torch.cat(pooled_parts, dim=-1) if pooled_parts else \
        torch.zeros(1, WIDTHS[CLIP_L] + WIDTHS[CLIP_G])
    return _conditioning(embeds, pooled, None)


def encode_text(ctx, clip_ref: Any, text: str, weighting: str, extra: dict | None
                ) -> Conditioning:
    """Text Encode's path for a flow family's CLIP: the same text to every encoder."""
    if weighting != "comfyui":
        raise InputError("weighting", f"comfyui for {clip_ref.family} (A1111's weighting is "
                         "for the SD families)", weighting)
    if clip_ref.family == FLUX:
        return encode_flux(ctx, clip_ref, text, text, extra=extra, node="Text Encode")
    cond = encode_sd3(ctx, clip_ref, text, text, text, node="Text Encode")
    return Conditioning(embeds=cond.embeds, pooled=cond.pooled, extra=dict(extra or {}))


def _style() -> Any:
    return Choice("style", STYLES, "comfyui",
                  description="ComfyUI's token lengths and weighting, or diffusers' "
                  "pipelines' (fixed lengths, no weighting)")


class TextEncodeFlux(Node):
    type = "text_encode_flux"
    title = "Text Encode Flux"
    category = "conditioning"
    description = ("Flux prompts: clip_l gives the pooled vector, t5xxl the context; guidance "
                   "is the distilled guidance value Flux dev reads (3.5 is usual).")
    inputs = (In("clip", T.clip), String("clip_l", "", multiline=True),
              String("t5xxl", "", multiline=True),
              Float("guidance", 3.5, min=0.0, max=100.0, step=0.1), _style())
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, clip_l="", t5xxl="", guidance=3.5, style="comfyui"):
        return {"conditioning": encode_flux(ctx, clip, clip_l, t5xxl, style,
                                            extra={"guidance": float(guidance)})}


class TextEncodeSD3(Node):
    type = "text_encode_sd3"
    title = "Text Encode SD3"
    category = "conditioning"
    description = ("SD3.5 prompts, one per encoder. empty_padding none: an empty prompt "
                   "leaves its encoder out (ComfyUI's default); empty_prompt encodes it.")
    inputs = (In("clip", T.clip), String("clip_l", "", multiline=True),
              String("clip_g", "", multiline=True), String("t5xxl", "", multiline=True),
              Choice("empty_padding", EMPTY_PADDING, "none"), _style())
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, clip_l="", clip_g="", t5xxl="", empty_padding="none",
            style="comfyui"):
        return {"conditioning": encode_sd3(ctx, clip, clip_l, clip_g, t5xxl,
                                           empty_padding == "empty_prompt", style)}


NODES = (TextEncodeFlux, TextEncodeSD3)
