#!/usr/bin/env python3
"""Hair transfer benchmarks on CPU with tiny random-weight models (Stable-Hair layout).
Prints a table; not a test. Run: python3 tools/dev.py bench hair.py

1. Remove Hair + Transfer Hair end to end (64x64, 20 steps each), models loaded
2. stage 2's cost per step against a plain Sampler step in the same run (the Hair Extractor
   runs beside the UNet at every step: target <= 2.2x), and against the same stage-2 step
   with hair scale 0 (UNet + Latent IdentityNet, no extractor), from the difference between
   45 and 5 steps, so fixed costs cancel
3. a second hairstyle on the same face: stage 1 comes from the cache
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(repeat: int = 5) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from engine import Executor
    from engine.modelpaths import ModelFolders
    from engine.runtime.models import ModelManager
    from testing.diffusion import build_sd15
    from testing.hair import build_stable_hair

    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(tempfile.mkdtemp(prefix="loom-hair-bench-"))
    sd = build_sd15(root, "tiny-sd15")
    build_stable_hair(root, sd["diffusers"] / "unet", "tiny-hair")
    rng = np.random.default_rng(0)
    for name in ("face", "hair_a", "hair_b"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / f"{name}.png")
    sys.path.insert(0, str(ROOT / "tests"))
    from test_hair import hair_graph, plain_graph  # the graphs the tests run

    ex = Executor(models=ModelManager(paths=ModelFolders([root], use_env=False,
                                                         use_config=False)))
    g = hair_graph(root)
    for node in ("bald", "hair"):
        g.set_param(node, "steps", 20)
    ex.run(g, ["hair"])  # load everything once
    seed = [100]

    def fresh(graph, node):
        seed[0] += 1
        graph.set_param(node, "seed", seed[0])

    def timed(fn) -> float:
        out = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return statistics.median(out)

    def both():
        fresh(g, "bald")
        fresh(g, "hair")
        r = ex.run(g, ["hair"])
        assert r.ok and "bald" in r.computed

    t_both = timed(both)

    def per_step(cases):
        """Seconds per step for each (graph, node, target): runs of 5 and 45 steps,
        interleaved over the cases so that drift on a busy machine hits all alike."""
        runs: dict[int, dict[int, list[float]]] = {i: {5: [], 45: []} for i in range(len(cases))}
        for _ in range(repeat):
            for steps in (5, 45):
                for i, (graph, node, target) in enumerate(cases):
                    graph.set_param(node, "steps", steps)
                    fresh(graph, node)
                    t = time.perf_counter()
                    assert ex.run(graph, [target]).ok
                    runs[i][steps].append(time.perf_counter() - t)
        return [(statistics.median(r[45]) - statistics.median(r[5])) / 40 for r in runs.values()]

    plain = plain_graph(1)
    ex.run(plain, ["img"])
    g0 = hair_graph(root, hair_scale=0.0)  # stage 2 without extractor and hair attention
    ex.run(g0, ["hair"])
    t_plain, t_stage2, t_identity = per_step([(plain, "s", "img"), (g, "hair", "hair"),
                                              (g0, "hair", "hair")])

    def second_style():
        g.set_param("ref", "path", str(root / ("hair_b.png" if seed[0] % 2 else "hair_a.png")))
        fresh(g, "hair")
        r = ex.run(g, ["hair"])
        assert r.ok and "bald" not in r.computed

    g.set_param("hair", "steps", 20)
    t_second = timed(second_style)
    print("| measure (CPU, tiny models, 64x64) | value |")
    print("|---|---|")
    print(f"| Remove Hair + Transfer Hair, 20 steps each | {t_both:.2f} s |")
    print(f"| plain Sampler step (baseline, same run) | {t_plain * 1000:.1f} ms |")
    print(f"| Transfer Hair step | {t_stage2 * 1000:.1f} ms |")
    print(f"| ratio stage 2 / plain step (target <= 2.2) | {t_stage2 / t_plain:.2f} |")
    print(f"| stage 2 step, hair scale 0 (UNet + IdentityNet) | {t_identity * 1000:.1f} ms |")
    print(f"| ratio stage 2 / that step (what the extractor adds) | {t_stage2 / t_identity:.2f} |")
    print(f"| a second hairstyle (stage 1 cached), 20 steps | {t_second:.2f} s |")


if __name__ == "__main__":
    main()
