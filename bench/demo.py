#!/usr/bin/env python3
"""The bundled demo model's speed on this machine. Prints a table; not a test.
Run: python3 tools/dev.py bench demo.py

- one 64x64 image in 20 steps (cfg 5, euler) through Loom, models already loaded, the seed
  changed each time so the sampler and decoder run (target < 1 s on a CPU)
- the same through diffusers' StableDiffusionPipeline on the same folder (the baseline)
- cold: a fresh executor, loading the model included
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training import evaluate, shapes  # noqa: E402

PROMPT = shapes.caption("red", "circle", "left", "grey")


def main(repeat: int = 10) -> None:
    import torch

    rows = []
    t = time.perf_counter()
    ex = evaluate.executor()
    evaluate.run_images(ex, evaluate.txt2img_graph(PROMPT, 0))
    rows.append(("cold: load model + first image (Loom)", time.perf_counter() - t))
    loom = []
    for seed in range(1, repeat + 1):
        t = time.perf_counter()
        evaluate.run_images(ex, evaluate.txt2img_graph(PROMPT, seed))
        loom.append(time.perf_counter() - t)
    rows.append(("64x64, 20 steps, warm (Loom)", statistics.median(loom)))

    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from engine.resources import RESOURCES
    from training.export import write_diffusers_folder

    folder = write_diffusers_folder(RESOURCES / "models" / "checkpoints" /
                                    "loom-shapes.safetensors",
                                    Path(tempfile.mkdtemp()) / "loom-shapes")
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32,
                                                   safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ref = []
    for seed in range(1, repeat + 1):
        t = time.perf_counter()
        pipe(PROMPT, height=64, width=64, num_inference_steps=20, guidance_scale=evaluate.CFG,
             generator=torch.Generator().manual_seed(seed))
        ref.append(time.perf_counter() - t)
    rows.append(("64x64, 20 steps (diffusers pipeline)", statistics.median(ref)))
    rows.append(("ratio Loom / diffusers", statistics.median(loom) / statistics.median(ref)))
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'measure':44} {'value':>8}")
    for name, v in rows:
        unit = "x" if name.startswith("ratio") else "s"
        print(f"{name:44} {v:8.3f} {unit}")


if __name__ == "__main__":
    main()
