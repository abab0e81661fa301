"""Loom's built-in nodes, one module per family. Registered through the `loom.nodes`
entry point like any third-party package. Modules import torch only inside `run`, so the
editor can list every node before torch is loaded."""

from __future__ import annotations

from engine.registry import Registry


def register(registry: Registry) -> None:
    from . import diffusion, hair, image, mask, preprocess, primitives, upscale

    for module in (primitives, image, mask, preprocess, diffusion, upscale, hair):
        if hasattr(module, "register"):  # a family with its own link types or model kinds
            module.register(registry)
        else:
            registry.register_all(module.NODES)
