"""The engine names no model family or family-specific part: families, their link types
and model kinds come from node packages (see test_plugin_types.py), so the engine grows
no branch per family. Excluded: engine/comfyui/, whose tables translate ComfyUI's own node
and folder names (a foreign vocabulary that names families by design)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCLUDED = ("comfyui",)
# Families (present and announced) and the parts only some families have. Core words
# (MODEL, CLIP, VAE, LATENT, checkpoints, diffusers folders) are not on the list.
FAMILY_WORDS = ("hair", "sd15", "sd1", "sd2", "sd21", "sdxl", "sd3", "sd35", "flux", "qwen",
                "zimage", "z_image", "refiner", "inpaint", "inpainting", "controlnet",
                "controlnets", "control_net", "t2i_adapter", "upscale", "upscaler",
                "upscale_model", "upscale_models", "lora", "loras", "ipadapter", "unet")
# a family word as a whole identifier part: `sdxl`, `HAIR_MODEL`, `load_lora`, `UNet`
PATTERN = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(FAMILY_WORDS) + r")(?![A-Za-z0-9])",
                     re.IGNORECASE)


def engine_files() -> list[Path]:
    return [f for f in sorted((ROOT / "engine").rglob("*.py"))
            if f.relative_to(ROOT / "engine").parts[0] not in EXCLUDED]


def family_words(text: str) -> list[str]:
    # identifiers split at "_" too, so HAIR_MODEL and load_lora are caught
    parts = (p for word in re.findall(r"[A-Za-z0-9_]+", text)
             for p in dict.fromkeys((word, *word.split("_"))))
    return [m.group(1) for m in map(PATTERN.fullmatch, parts) if m]


def test_the_check_sees_identifiers_and_prose():
    assert family_words("HAIR_MODEL = T.sdxl  # an SDXL UNet") == ["HAIR", "sdxl", "SDXL",
                                                                   "UNet"]
    assert family_words("controlnet_cond x.upscale_models") == ["controlnet", "upscale_models",
                                                                "upscale"]
    assert family_words("hairline clipped loraine") == []


def test_engine_names_no_family():
    found = [f"{f.relative_to(ROOT)}:{n}: {w}" for f in engine_files()
             for n, line in enumerate(f.read_text().splitlines(), 1)
             for w in family_words(line)]
    assert not found, "family names in engine/ (they belong to node packages):\n" + \
        "\n".join(found)
