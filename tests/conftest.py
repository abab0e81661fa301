from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# parity tests compare with diffusers and ComfyUI in fp32; the CPU default (bf16 on CPUs with
# bf16 instructions) has its own tests in test_loading.py
os.environ.setdefault("LOOM_DTYPE", "fp32")
sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def builtin_registry():
    from engine import default_registry

    return default_registry()


@pytest.fixture
def test_registry():
    import testnodes

    return testnodes.registry()


@pytest.fixture
def events():
    """A list that collects events from an executor: use `events.attach(executor)`."""

    class Recorder(list):
        def attach(self, executor):
            executor.events.subscribe(self.append)
            return executor

        def named(self, name):
            return [e for e in self if e.event == name]

        def computed(self):
            return {e.node for e in self.named("node_finished") if not e.cached}

    return Recorder()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight SD models in a model folder (diffusers + single file)."""
    from testing.diffusion import (
        build_controlnet,
        build_lora,
        build_sd15,
        build_sdxl,
        build_upscalers,
    )

    root = tmp_path_factory.mktemp("models")
    sd15 = build_sd15(root, "tiny-sd15", seed=0)
    build_sdxl(root, "tiny-sdxl", seed=0)
    build_lora(root, sd15["diffusers"], "tiny-lora", seed=1)
    build_lora(root, sd15["diffusers"], "tiny-lora-b", seed=2)
    build_controlnet(root, sd15["diffusers"], "tiny-controlnet", seed=3)
    build_controlnet(root, sd15["diffusers"], "tiny-controlnet-b", seed=4)
    build_sd15(root, "tiny-sd15-inpaint", seed=5, in_channels=9)
    build_upscalers(root)
    return root


@pytest.fixture
def model_executor(tiny_models):
    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager

    manager = ModelManager(paths=ModelFolders([tiny_models], use_env=False, use_config=False))
    return Executor(models=manager)
