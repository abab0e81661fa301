"""Families are `Arch` members with capabilities, not names tested piecewise: the table
answers what each family is, and no code in nodes/ takes a family name apart."""

from __future__ import annotations

import re
from pathlib import Path

from nodes.diffusion.arch import Arch, Prediction
from nodes.diffusion.loading import FAMILY_BY_CONTEXT, _unet_family
from nodes.diffusion.models import LoadVAE

ROOT = Path(__file__).resolve().parent.parent


def test_the_table_says_what_each_family_is():
    assert [a for a in Arch if a.is_sdxl_like] == [Arch.sdxl, Arch.sdxl_refiner,
                                                   Arch.sdxl_inpaint]
    assert [a for a in Arch if a.is_inpaint] == [Arch.sd15_inpaint, Arch.sd2_inpaint,
                                                 Arch.sdxl_inpaint, Arch.flux_fill]
    assert Arch.bases() == (Arch.sd15, Arch.sd2, Arch.sdxl, Arch.flux)
    assert {a: a.base for a in Arch if a.base is not a} == {
        Arch.sdxl_refiner: Arch.sdxl, Arch.sd15_inpaint: Arch.sd15,
        Arch.sd2_inpaint: Arch.sd2, Arch.sdxl_inpaint: Arch.sdxl,
        Arch.flux_schnell: Arch.flux, Arch.flux_fill: Arch.flux, Arch.flux_control: Arch.flux}
    assert Arch.sdxl.text_encoders == ("clip_l", "clip_g") and Arch.sdxl_refiner.is_refiner
    assert Arch.sd2.prediction is Prediction.v and Arch.sd15.prediction is Prediction.epsilon
    assert {a.latent_channels for a in Arch if not a.is_transformer} == {4}
    assert [a for a in Arch if a.is_transformer] == [a for a in Arch if a.base is Arch.flux]
    assert {a.latent_channels for a in Arch if a.base is Arch.flux} == {16}
    assert [a for a in Arch if a.info.guidance] == [Arch.flux, Arch.flux_fill,
                                                    Arch.flux_control]
    assert {a.prediction for a in Arch if a.is_transformer} == {Prediction.flow}
    assert Arch.variant(Arch.flux, 64, False) is Arch.flux_schnell
    assert Arch.variant(Arch.flux, 128, True) is Arch.flux_control
    assert Arch.variant(Arch.flux, 9, True) is None
    assert (Arch.sd15.native_resolution, Arch.sdxl.native_resolution) == (512, 1024)
    assert Arch.sd2.config_folder(Prediction.epsilon) == "sd2_eps"
    assert Arch.sd2.config_folder() == "sd2"
    assert Arch.sd15.config_folder(Prediction.epsilon) == "sd15"
    assert Arch.sd15 == "sd15" and Arch.of("sd15") is Arch.sd15 and Arch.of("context-32") is None


def test_denoiser_shapes_name_their_family():
    assert FAMILY_BY_CONTEXT == {768: "sd15", 1024: "sd2", 2048: "sdxl", 4096: "flux"}
    for a in Arch:
        assert Arch.from_denoiser(a.context_dim, a.info.in_channels, a.info.guidance) is a
    assert _unet_family(1280, 4) is Arch.sdxl_refiner and _unet_family(768, 9) is \
        Arch.sd15_inpaint
    assert _unet_family(32, 4) is None and _unet_family(32, 9, unknown=Arch.sd15) is \
        Arch.sd15_inpaint
    assert LoadVAE.input_map["family"].choices == ("sd15", "sd2", "sdxl", "flux")


def test_no_family_name_is_taken_apart_in_nodes():
    """`family.startswith("sdxl")`, `"sd15" + "_inpaint"`, `== "sd2"`: ask the Arch."""
    literal = re.compile(r"""["'](sd15|sd2|sdxl)[a-z0-9_]*["']""")
    found = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
             for f in sorted((ROOT / "nodes").rglob("*.py")) if f.name != "arch.py"
             for n, line in enumerate(f.read_text().splitlines(), 1)
             if literal.search(line) or re.search(r"family\w*\.(startswith|split)\(", line)]
    assert not found, "\n".join(found)
