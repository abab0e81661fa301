#!/usr/bin/env python3
"""Loading: a table, not a test.
Run: python3 tools/dev.py bench loading.py [--no-sdxl] [--no-graph]

1. full-size SD 1.5 and SDXL architectures with random weights, written here once as fp16
   single files (tensor by tensor, in $LOOM_BENCH_CACHE or ~/.cache/loom-bench): load
   seconds and peak RSS of Loom's loader, of diffusers' from_single_file, and of reading the
   file's bytes (the floor), each in a fresh process, cold (page cache dropped) and warm.
   Targets: Loom within 1.5x of the read, >= 2x faster than diffusers, RSS added by the load
   <= 1.3x the loaded model.
2. the default text-to-image graph (resources/workflows/shapes_txt2img.json) at 256^2, one
   image, 4 euler steps, on the SD 1.5 file through `loom run`: seconds and peak RSS
   (target <= 5 GiB), fp32 and bf16, and how far apart their images are (8-bit levels).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("LOOM_BENCH_CACHE", Path.home() / ".cache" / "loom-bench"))

_PRELUDE = """
import resource, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
"""
_CHILDREN = {
    "read": """
t = time.perf_counter(); base = rss()
with open(sys.argv[1], "rb", buffering=0) as f:
    buf = bytearray(64 << 20)
    while f.readinto(buf):
        pass
s = time.perf_counter() - t
model = 0
""",
    "loom": """
import torch
from pathlib import Path
from nodes.diffusion.loading import load_components
# imports are not the load: the same modules diffusers' child imports before its clock
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
import diffusers.schedulers, nodes.diffusion.loading, nodes.diffusion.weights
t = time.perf_counter(); base = rss()
comps = load_components(Path(sys.argv[1]), getattr(torch, sys.argv[2]))
s = time.perf_counter() - t
model = sum(x.numel() * x.element_size() for m in comps.values() for x in m.state_dict().values())
""",
    "diffusers": """
import torch
from pathlib import Path
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from nodes.diffusion.loading import config_folder_for, detect_family, header_shapes, quiet
from nodes.diffusion.loading import tokenizers_for, _dtype
quiet()
p = Path(sys.argv[1]); fam = detect_family(header_shapes(p)); cfg = config_folder_for(p, fam)
cls = StableDiffusionXLPipeline if fam.is_sdxl_like else StableDiffusionPipeline
kw = {} if fam.is_sdxl_like else {"safety_checker": None, "requires_safety_checker": False}
t = time.perf_counter(); base = rss()
pipe = cls.from_single_file(str(p), config=str(cfg), local_files_only=True,
                            **_dtype(getattr(torch, sys.argv[2])), **kw, **tokenizers_for(cfg))
s = time.perf_counter() - t
model = sum(x.numel() * x.element_size() for m in pipe.components.values()
            if hasattr(m, "state_dict") for x in m.state_dict().values())
""",
}
_EPILOGUE = """
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT", s, peak, peak - base, model)
"""


def write_models(sdxl: bool) -> dict[str, Path]:
    from testing.checkpoints import write_random_checkpoint

    out = {}
    for fam in ("sd15", "sdxl") if sdxl else ("sd15",):
        path = CACHE / "checkpoints" / f"bench-{fam}.safetensors"
        if not path.is_file():
            print(f"writing {path} ...", flush=True)
            tmp = path.with_suffix(".part")
            write_random_checkpoint(tmp, fam)
            tmp.rename(path)
        out[fam] = path
    return out


def drop_cache(path: Path) -> str:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return "drop_caches"
    except OSError:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return "fadvise"


def touch_memory(n: int) -> None:
    """Have a process write `n` bytes and exit. A VM may back guest memory lazily, so the
    first process to touch fresh memory pays the host's faults; touching it first puts
    every measured loader on the same footing (whichever ran just before would otherwise
    win)."""
    with open("/proc/meminfo") as f:
        avail = next(int(x.split()[1]) * 1024 for x in f if x.startswith("MemAvailable"))
    subprocess.run([sys.executable, "-c", f"b'x' * {min(n, avail // 2)}"], check=True)


def child(kind: str, path: Path, dtype: str) -> tuple[float, int, int, int]:
    touch_memory(5 * path.stat().st_size // 2)
    r = subprocess.run([sys.executable, "-c", _PRELUDE + _CHILDREN[kind] + _EPILOGUE,
                        str(path), dtype], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"{kind} failed: {r.stderr[-2000:]}")
    s, peak, added, model = line.split()[1:]
    return float(s), int(peak), int(added), int(model)


def load_table(models: dict[str, Path]) -> None:
    gib = 2 ** 30
    rows = []
    how = ""
    for fam, path in models.items():
        size = path.stat().st_size
        for dtype in (("float32", "bfloat16") if fam == "sd15" else ("bfloat16",)):
            for cache in ("cold", "warm"):
                got = {}
                for kind in ("read", "loom", "diffusers"):
                    if cache == "cold":
                        how = drop_cache(path)
                    else:
                        child("read", path, dtype)  # make sure it is in the page cache
                    got[kind] = child(kind, path, dtype)
                rows.append((fam, dtype, cache, got["read"], got["loom"], got["diffusers"],
                             size))
    print(f"\n1. load: fresh process each; cold = page cache dropped ({how})")
    print(f"{'model':6} {'dtype':9} {'cache':5} {'file GiB':>8} {'read s':>7} {'loom s':>7} "
          f"{'diff. s':>7} {'loom/read':>9} {'diff/loom':>9} {'model GiB':>9} "
          f"{'loom peak':>9} {'+load/model':>11} {'diff peak':>9} {'+load/model':>11}")
    for fam, dtype, cache, read, loom, diff, size in rows:
        print(f"{fam:6} {dtype:9} {cache:5} {size / gib:8.2f} {read[0]:7.2f} {loom[0]:7.2f} "
              f"{diff[0]:7.2f} {loom[0] / read[0]:9.2f} {diff[0] / loom[0]:9.2f} "
              f"{loom[3] / gib:9.2f} {loom[1] / gib:9.2f} {loom[2] / loom[3]:11.2f} "
              f"{diff[1] / gib:9.2f} {diff[2] / diff[3]:11.2f}")


def graph_table(sd15: Path) -> None:
    import numpy as np
    from PIL import Image

    rows = []
    images = {}
    workflow = ROOT / "resources" / "workflows" / "shapes_txt2img.json"
    for dtype in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "run", str(workflow), "--models",
                 str(sd15.parent.parent), "--dtype", dtype, "--no-disk-cache", "--out", out,
                 "--set", f"ckpt.ckpt_name={sd15.name}", "--set", "latent.width=256",
                 "--set", "latent.height=256", "--set", "latent.batch_size=1",
                 "--set", "sampler.steps=4", "--set", "sampler.sampler=euler"],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            s = time.perf_counter() - t
            err = proc.stderr.read()
            if status != 0:
                raise RuntimeError(f"loom run --dtype {dtype} failed: {err[-2000:]}")
            png = next(Path(out).rglob("*.png"))
            images[dtype] = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
            rows.append((dtype, s, usage.ru_maxrss * 1024))
    d = np.abs(images["fp32"] - images["bf16"])
    print("\n2. default text-to-image graph, 256^2, 1 image, 4 euler steps, `loom run` "
          "end to end (a fresh process: imports, load, encode, sample, decode, save)")
    print(f"{'dtype':6} {'seconds':>8} {'peak RSS GiB':>12}")
    for dtype, s, peak in rows:
        print(f"{dtype:6} {s:8.1f} {peak / 2**30:12.2f}")
    print(f"bf16 vs fp32 image: mean |diff| {d.mean():.2f} levels of 255, max {d.max()}")


def main(argv: list[str]) -> None:
    models = write_models("--no-sdxl" not in argv)
    if "--no-load" not in argv:
        load_table(models)
    if "--no-graph" not in argv:
        graph_table(models["sd15"])
    print(json.dumps({"cpu_count": os.cpu_count(),
                      "max_rss_self_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 2**20}))


if __name__ == "__main__":
    main(sys.argv[1:])
