"""The bundled demo models, judged by meaning (training/evaluate.py scores them through
Loom's own nodes): colour and position on held-back prompts, ControlNet placement, inpaint
recolouring, upscaler against bicubic. Fixed seeds, so a pass is repeatable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.resources import RESOURCES
from training import evaluate, shapes

ROOT = Path(__file__).resolve().parent.parent
MODELS = RESOURCES / "models"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ex():
    return evaluate.executor(MODELS)


def test_bundled_models_are_small_and_listed(tmp_path):
    size = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert size <= 25 * 1024 * 1024
    out = subprocess.run([sys.executable, "-m", "app.cli", "models"], cwd=ROOT, text=True,
                         capture_output=True, timeout=120,
                         env={**os.environ, "LOOM_MODELS": "", "HOME": str(tmp_path),
                              "XDG_CONFIG_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    for name in ("loom-shapes", "loom-shapes.safetensors", "loom-shapes-edges.safetensors",
                 "loom-shapes-x2.safetensors"):
        line = next((l for l in out.stdout.splitlines() if name in l), "")
        assert "bundled" in line, out.stdout


def test_text_to_image_colour_and_position_on_held_back_prompts(ex):
    rows = evaluate.text_to_image(ex, shapes.held_out(), seeds=[0])
    colour = np.mean([r["colour"] for r in rows])
    position = np.mean([r["position"] for r in rows])
    assert len(rows) >= 40
    assert colour >= 0.80, f"colour accuracy {colour:.1%}"
    assert position >= 0.60, f"position accuracy {position:.1%}"


def test_single_file_checkpoint_gives_the_folder_s_image(ex, tmp_path):
    """Only the single file is shipped; its diffusers folder layout is derived here."""
    from training.export import write_diffusers_folder

    write_diffusers_folder(MODELS / "checkpoints" / "loom-shapes.safetensors",
                           tmp_path / "diffusers" / "loom-shapes")
    prompt = shapes.caption(*shapes.held_out()[0])
    a = evaluate.run_images(evaluate.executor(tmp_path),
                            evaluate.txt2img_graph(prompt, 5, ckpt="loom-shapes"))
    b = evaluate.run_images(ex, evaluate.txt2img_graph(prompt, 5,
                                                       ckpt="loom-shapes.safetensors"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_controlnet_places_the_shape_where_the_outline_is(ex, tmp_path):
    ious = evaluate.controlnet_iou(ex, 16, 100, tmp_path)
    assert np.mean(ious) >= 0.5, f"mean IoU {np.mean(ious):.3f}"


def test_inpaint_recolours_the_masked_shape_and_nothing_else(ex, tmp_path):
    """The issue's bar, through the noise mask as shapes_inpaint.json does it (the masked
    area filled from its surroundings, then repainted): at least 80% of the shape's pixels
    take the prompt's new colour, over the model card's 32 cases (seed 200), and nothing
    outside the mask changes after Composite."""
    rows = evaluate.inpaint_recolour(ex, evaluate.INPAINT_CASES, evaluate.INPAINT_SEEDS[0],
                                     tmp_path, **evaluate.RECOLOUR)
    assert all(r["outside_unchanged"] for r in rows)
    share = np.mean([r["recoloured"] for r in rows])
    assert share >= 0.80, f"{share:.1%} of the shapes' pixels recoloured"


def test_upscaler_beats_bicubic_by_a_decibel(ex, tmp_path):
    ours, bicubic = evaluate.upscaler_psnr(ex, 24, 300, tmp_path)
    assert ours - bicubic >= 1.0, (ours, bicubic)


@pytest.mark.parametrize("name", ["shapes_txt2img", "shapes_controlnet", "shapes_inpaint",
                                  "shapes_hires_fix"])
def test_example_workflows_run_headless(name, tmp_path):
    out = subprocess.run([sys.executable, "-m", "app.cli", "run",
                          str(ROOT / "resources" / "workflows" / f"{name}.json"),
                          "--out", str(tmp_path), "--no-disk-cache", "--events", "json"],
                         cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    assert events[-1]["event"] == "run_finished" and events[-1]["status"] == "ok"
    pngs = sorted(tmp_path.rglob("*.png"))
    assert pngs
    from PIL import Image

    size = Image.open(pngs[0]).size
    assert size == ((128, 128) if name == "shapes_hires_fix" else (64, 64))
