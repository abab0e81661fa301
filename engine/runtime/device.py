"""Which device and dtypes to compute with. CUDA (fp16, or bf16 where supported), then
MPS (fp16), then CPU (bf16 where the CPU has bf16 instructions, else fp32). `LOOM_DEVICE`
and `LOOM_DTYPE` override, as does a run's own setting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cuda:1", "mps", "cpu"
    dtype: str  # compute dtype for the denoiser / text encoders: float32 / float16 / bfloat16
    vae_dtype: str  # VAEs overflow in fp16: kept at bf16 or fp32
    channels_last: bool = False  # denoiser in channels-last layout (faster on some GPUs)
    compile: bool = False  # torch.compile the denoiser (slow first run, faster steps)

    def torch_device(self) -> Any:
        import torch

        return torch.device(self.device)

    def torch_dtype(self, which: str = "model") -> Any:
        import torch

        return getattr(torch, self.vae_dtype if which == "vae" else self.dtype)


def choose(device: str | None = None, dtype: str | None = None, *,
           channels_last: bool | None = None, compile: bool | None = None) -> DeviceChoice:
    import torch

    if channels_last is None:
        channels_last = os.environ.get("LOOM_CHANNELS_LAST", "") == "1"
    if compile is None:
        compile = os.environ.get("LOOM_COMPILE", "") == "1"
    device = device or os.environ.get("LOOM_DEVICE") or ""
    dtype = dtype or os.environ.get("LOOM_DTYPE") or ""
    if not device:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
        dtype = DTYPES[dtype]
    elif device.startswith("cuda"):
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    elif device == "mps":
        dtype = "float16"
    else:
        dtype = "bfloat16" if cpu_has_bf16() else "float32"
        if dtype == "bfloat16":  # the VAE's one pass shows directly in pixels: keep it exact
            return DeviceChoice(device, dtype, "float32", channels_last, compile)
    vae = dtype if dtype != "float16" else ("bfloat16" if device.startswith("cuda") and
                                            torch.cuda.is_bf16_supported() else "float32")
    return DeviceChoice(device, dtype, vae, channels_last, compile)


# bf16 is the CPU default only where it is both faster and close; the bar: a denoiser step
# at least 1.2x faster than fp32 and the decoded 8-bit image within 3 levels on average.
# Measured on an avx512_bf16 CPU (full-size SD 1.5 architecture, random weights, 256^2): a
# denoiser step 1.5x faster (14-22 s against 22-29 s, batch 2, a busy 2-core machine), the
# whole graph 1.37x (bench/loading.py: 106 s against 146 s, 3.2 against 5.4 GiB peak), the
# image 0.01 levels apart on average (max 1), the denoiser's output 1.0% apart (mean relative).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (its flags in /proc/cpuinfo); without the
    instructions bf16 is emulated and slower than fp32."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)
