"""Text Encode: a prompt into CONDITIONING, with weights and long prompts."""

from __future__ import annotations

from engine.errors import InputError
from engine.spec import In, Int, Node, Output, String
from engine.types import T
from engine.values import Conditioning

from .models import components
from .prompt import apply_weights, chunks, tokenize_weighted


def encode(ctx, clip_ref, text: str, clip_skip: int = 0) -> Conditioning:
    import torch

    comps = components(ctx, clip_ref)
    device = ctx.models.device.torch_device()
    encoders = [(comps.tokenizer, comps.text_encoder)]
    if comps.text_encoder_2 is not None:
        encoders.append((comps.tokenizer_2, comps.text_encoder_2))
    encoders = [(t, e) for t, e in encoders if e is not None]
    sdxl = comps.text_encoder_2 is not None
    per_encoder, pooled = [], None
    for tokenizer, encoder in encoders:
        ids, weights = tokenize_weighted(tokenizer, text)
        parts = []
        for n, (chunk_ids, chunk_w) in enumerate(chunks(tokenizer, ids, weights)):
            ctx.check_cancelled()
            input_ids = torch.tensor([chunk_ids], device=device)
            out = encoder(input_ids, output_hidden_states=True)
            if sdxl:  # SDXL uses the penultimate layer, without the final norm
                z = out.hidden_states[-(2 + clip_skip)]
                if n == 0 and encoder is comps.text_encoder_2:
                    pooled = out[0]  # text_embeds of the projection model
            elif clip_skip:
                z = encoder.text_model.final_layer_norm(out.hidden_states[-(1 + clip_skip)]) \
                    if hasattr(encoder, "text_model") else \
                    encoder.final_layer_norm(out.hidden_states[-(1 + clip_skip)])
            else:
                z = out[0]
            parts.append(apply_weights(z, chunk_w))
        per_encoder.append(torch.cat(parts, dim=1))
    embeds = torch.cat(per_encoder, dim=-1) if len(per_encoder) > 1 else per_encoder[0]
    return Conditioning(embeds=embeds.float().cpu(),
                        pooled=pooled.float().cpu() if pooled is not None else None)


class TextEncode(Node):
    type = "text_encode"
    title = "Text Encode"
    category = "conditioning"
    description = ("Encode a prompt. (word:1.3) weighs a word up, [word] down; prompts longer "
                   "than 75 tokens are encoded in chunks.")
    inputs = (In("clip", T.clip), String("text", "", multiline=True),
              Int("clip_skip", 0, min=0, max=12, description="skip this many last layers"))
    outputs = (Output("conditioning", T.conditioning),)

    def run(self, ctx, clip, text="", clip_skip=0):
        if not isinstance(text, str):
            raise InputError("text", "text", text)
        return {"conditioning": encode(ctx, clip, text, clip_skip)}


NODES = (TextEncode,)
