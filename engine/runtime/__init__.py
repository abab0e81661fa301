"""Device and model memory. The only part of the engine that touches torch, and only
when called: importing this package imports no torch."""

from __future__ import annotations

import sys
from typing import Any


def torch_loaded() -> bool:
    return "torch" in sys.modules


def generator_for(seed: int, batch_index: int = 0) -> Any:
    """A CPU generator seeded per (seed, batch index), so a seed reproduces on any device."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) + 0x9E3779B97F4A7C15 * int(batch_index)) % (2**64))
    return g
