"""Limits on what one run may ask of the machine, each raised by an environment variable.

A value inside every widget's bounds can still ask for more memory than the machine has
(a batch of 16384-square images); these catch that before any work starts, with a message
that says how to raise the limit.
"""

from __future__ import annotations

import math
import os

PIXELS_ENV = "LOOM_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 1 << 28  # 268 million: one 16384 x 16384 image, or 16 of 4096 x 4096


def max_pixels() -> int:
    """The most pixels (batch x width x height) one image value may have."""
    raw = os.environ.get(PIXELS_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 1:
            return int(value)
    return DEFAULT_MAX_PIXELS


def pixels_problem(batch: int, width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None when it is within the limit."""
    total = int(batch) * int(width) * int(height)
    limit = max_pixels()
    if total <= limit:
        return None
    return (f"{batch} x {width} x {height} = {total:,} pixels is over the limit of {limit:,}; "
            f"set {PIXELS_ENV} to raise it if this machine has the memory")
