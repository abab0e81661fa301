"""Value types that flow along links, and the one rule for which may connect."""

from __future__ import annotations

from enum import StrEnum


class T(StrEnum):
    image = "IMAGE"
    mask = "MASK"
    latent = "LATENT"
    conditioning = "CONDITIONING"
    model = "MODEL"
    clip = "CLIP"
    vae = "VAE"
    control_net = "CONTROL_NET"
    upscale_model = "UPSCALE_MODEL"
    hair_model = "HAIR_MODEL"
    sampler = "SAMPLER"  # a sampling method, for the custom-sampling nodes
    sigmas = "SIGMAS"  # an explicit noise schedule
    guider = "GUIDER"  # a model with the conditionings that guide it
    noise = "NOISE"  # the starting noise (a seed), or none
    int = "INT"
    float = "FLOAT"
    string = "STRING"
    bool = "BOOL"
    choice = "CHOICE"
    seed = "SEED"


PRIMITIVES = frozenset({T.int, T.float, T.string, T.bool, T.choice, T.seed})

# Widening conversions a link may make besides connecting equal types.
# An INT fits a FLOAT or a SEED input, a SEED is an INT, and a STRING may feed
# a CHOICE (checked against the choices when the value is known).
_WIDENING = frozenset({
    (T.int, T.float),
    (T.int, T.seed),
    (T.seed, T.int),
    (T.string, T.choice),
})


def can_connect(out_type: T | str, in_type: T | str) -> bool:
    """True when an output of `out_type` may feed an input of `in_type`."""
    if out_type is in_type:
        return True
    a, b = T(out_type), T(in_type)
    return a == b or (a, b) in _WIDENING


def type_name(t: T | str) -> str:
    return T(t).value
