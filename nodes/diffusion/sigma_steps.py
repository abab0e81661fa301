"""One step of each sigma-space sampler, after k-diffusion's reference algorithms
(Katherine Crowson, MIT licence; ComfyUI uses the same): x = x0 + sigma * noise, d the
derivative (x - denoised) / sigma. A step takes the walk so far and returns the next x."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Walk:
    """What a step may use: the schedule, the model (x, sigma, step) -> denoised, fresh
    noise, and the previous step's denoised estimate (for multistep methods)."""

    sigmas: list[float]
    denoise: Callable[[Any, float, int], Any]
    noise: Callable[[], Any]
    old: Any = None


def euler(w: Walk, x: Any, den: Any, i: int) -> Any:
    s, s_next = w.sigmas[i], w.sigmas[i + 1]
    return x + (x - den) / s * (s_next - s)


def euler_ancestral(w: Walk, x: Any, den: Any, i: int) -> Any:
    s, s_next = w.sigmas[i], w.sigmas[i + 1]
    up = min(s_next, math.sqrt(max(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2, 0)))
    down = math.sqrt(max(s_next ** 2 - up ** 2, 0))
    x = x + (x - den) / s * (down - s)
    return x + w.noise() * up if s_next > 0 else x


def heun(w: Walk, x: Any, den: Any, i: int) -> Any:
    s, s_next = w.sigmas[i], w.sigmas[i + 1]
    d = (x - den) / s
    if s_next == 0:
        return x + d * (s_next - s)
    x2 = x + d * (s_next - s)
    d2 = (x2 - w.denoise(x2, s_next, i)) / s_next
    return x + (d + d2) / 2 * (s_next - s)


def dpmpp_2m(w: Walk, x: Any, den: Any, i: int) -> Any:
    s, s_next = w.sigmas[i], w.sigmas[i + 1]
    if s_next == 0:
        return den
    t, t_next = -math.log(s), -math.log(s_next)
    h = t_next - t
    use = den
    if w.old is not None and i > 0 and w.sigmas[i - 1] > 0:
        r = (t - -math.log(w.sigmas[i - 1])) / h
        use = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * w.old
    return (s_next / s) * x - math.expm1(-h) * use


def lcm(w: Walk, x: Any, den: Any, i: int) -> Any:
    s_next = w.sigmas[i + 1]
    return den + (w.noise() * s_next if s_next > 0 else 0)


# name -> step, in the order the Sampler Select node offers them (ddim is Euler's update
# in this space, as in ComfyUI)
STEPS: dict[str, Callable[[Walk, Any, Any, int], Any]] = {
    "euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "dpmpp_2m": dpmpp_2m,
    "lcm": lcm, "ddim": euler}
