"""Cutting and repeating latent batches while keeping each image's place in its batch
(`Latent.batch_index`), so the Sampler gives image k of a batch the noise it had in the
whole batch: one image of a batch of eight comes out the same on its own (ComfyUI's
Latent From Batch and Repeat Latent Batch)."""

from __future__ import annotations

import dataclasses
import math

from engine.spec import In, Int, Node, Output
from engine.types import T
from engine.values import Latent


def _per_image_masks(latent: Latent):
    """The noise mask with one entry per image (a shorter batch of masks cycles), or the
    single mask all images share."""
    mask, n = latent.noise_mask, latent.samples.shape[0]
    if mask is not None and 1 < mask.shape[0] < n:
        mask = mask.repeat(math.ceil(n / mask.shape[0]), 1, 1, 1)[:n]
    return mask


class LatentFromBatch(Node):
    type = "latent_from_batch"
    title = "Latent From Batch"
    category = "latent/batch"
    description = ("Images batch_index .. batch_index + length - 1 of a latent batch; "
                   "sampled, each gets the noise it would have in the whole batch.")
    inputs = (In("latent", T.latent), Int("batch_index", 0, min=0, max=63),
              Int("length", 1, min=1, max=64))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, latent, batch_index=0, length=1):
        s = latent.samples
        start = min(s.shape[0] - 1, batch_index)
        length = min(s.shape[0] - start, length)
        mask = _per_image_masks(latent)
        if mask is not None and mask.shape[0] > 1:
            mask = mask[start:start + length].clone()
        index = tuple(range(start, start + length)) if latent.batch_index is None \
            else latent.batch_index[start:start + length]
        return {"latent": Latent(s[start:start + length].clone(), mask, index)}


class RepeatLatentBatch(Node):
    type = "repeat_latent_batch"
    title = "Repeat Latent Batch"
    category = "latent/batch"
    description = "The latent batch repeated `amount` times (each copy gets its own noise)."
    inputs = (In("latent", T.latent), Int("amount", 1, min=1, max=64))
    outputs = (Output("latent", T.latent),)

    def run(self, ctx, latent, amount=1):
        s = latent.samples
        mask = _per_image_masks(latent)
        if mask is not None and mask.shape[0] > 1:
            mask = mask.repeat(amount, 1, 1, 1)
        index = latent.batch_index
        if index is not None:
            offset = max(index) - min(index) + 1
            index = index + tuple(x + i * offset for i in range(1, amount) for x in index)
        out = dataclasses.replace(latent, samples=s.repeat(amount, 1, 1, 1), noise_mask=mask,
                                  batch_index=index)
        return {"latent": out}


NODES = (LatentFromBatch, RepeatLatentBatch)
