"""What every demo-model training script shares: the architectures (diffusers/transformers
config classes, the same ones a user's SD 1.5 model loads into), resumable checkpoints, a
loss log, and the thread setting."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RUNS = ROOT / "runs"
# the run whose UNet and text encoder ship (and that the ControlNet is trained against)
SHIPPED_UNET = RUNS / "unet-inpaint"
MAX_TOKENS = 16

VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
           block_out_channels=(16, 32, 64, 64), norm_num_groups=4, sample_size=64,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(64, 96, 96), norm_num_groups=16,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=64, attention_head_dim=8)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS, projection_dim=64)
# v-prediction on a zero-terminal-SNR schedule: the last step starts from pure noise, so
# backgrounds come out their true colour instead of the noise's mean tint
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, prediction_type="v_prediction",
                 rescale_betas_zero_snr=True, timestep_spacing="trailing", steps_offset=1)
UPSCALER = dict(num_in_ch=3, num_out_ch=3, num_feat=32, num_conv=8, upscale=2, act_type="prelu")


def args_parser(description: str, steps: int, batch: int, lr: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=None, help="run folder (resumes if it exists)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("LOOM_TRAIN_THREADS", 1)))
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    return p


def setup(args: argparse.Namespace, name: str) -> Path:
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or RUNS / name
    out.mkdir(parents=True, exist_ok=True)
    return out


class Run:
    """A resumable training run: `state.pt` holds modules, optimizer, step and RNG; every
    save is atomic (write then rename), so a killed job resumes from its last save."""

    def __init__(self, folder: Path, modules: dict[str, Any], optimizer: Any, seed: int):
        import torch

        self.folder, self.modules, self.optimizer = folder, modules, optimizer
        self.step = 0
        self.elapsed = 0.0
        self.log = folder / "log.jsonl"
        state = folder / "state.pt"
        torch.manual_seed(seed)
        if state.exists():
            data = torch.load(state, map_location="cpu", weights_only=True)
            for k, m in modules.items():
                m.load_state_dict(data["modules"][k])
            optimizer.load_state_dict(data["optimizer"])
            self.step, self.elapsed = data["step"], data["elapsed"]
            torch.set_rng_state(data["rng"])
            print(f"resumed {folder.name} at step {self.step}", flush=True)
        self._t = time.perf_counter()

    def save(self) -> None:
        import torch

        now = time.perf_counter()
        self.elapsed += now - self._t
        self._t = now
        tmp = self.folder / "state.pt.tmp"
        torch.save({"modules": {k: m.state_dict() for k, m in self.modules.items()},
                    "optimizer": self.optimizer.state_dict(), "step": self.step,
                    "elapsed": self.elapsed, "rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, self.folder / "state.pt")

    def record(self, **values: float) -> None:
        wall = self.elapsed + time.perf_counter() - self._t
        with open(self.log, "a") as f:
            f.write(json.dumps({"step": self.step, "wall_s": round(wall, 1), **values}) + "\n")
        print(f"{self.folder.name} step {self.step} " + " ".join(
            f"{k}={v:.4g}" for k, v in values.items()) + f" ({wall:.0f}s)", flush=True)

    def finish(self) -> None:
        self.save()
        (self.folder / "done.json").write_text(json.dumps(
            {"step": self.step, "wall_s": round(self.elapsed, 1)}))


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class EMA:
    """An exponential moving average of a module's weights (what gets exported)."""

    def __init__(self, module: Any, decay: float):
        import copy

        self.decay = decay
        self.shadow = copy.deepcopy(module).requires_grad_(False)

    def update(self, module: Any, step: int) -> None:
        import torch

        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for s, p in zip(self.shadow.parameters(), module.parameters()):
                s.lerp_(p, 1 - d)
