"""PNGs from AUTOMATIC1111's web UI and Forge: the generation settings in a `parameters`
text chunk (the prompt, a "Negative prompt:" line, then one line of "Key: value, ..."),
mapped onto a text-to-image graph.

The settings become a ComfyUI API document of the usual nodes (checkpoint loader, two text
encoders, empty latent, KSampler, VAE decode, save), which the ComfyUI converter then
brings over with its one mapping table, checks and report; what A1111 records that such a
graph cannot hold is added to that report. The whole text is kept in the graph's meta.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..comfyui.convert import convert
from ..comfyui.report import Issue, Report
from ..graph import Graph
from ..protocols import ModelPaths
from ..registry import Registry
from .source import Format, Reader, Source

KEY = "parameters"
# A1111's own pattern for one "Key: value" of the settings line (values may be quoted)
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NETWORK_TAG = re.compile(r"<\w+:[^<>]+>")  # <kind:name:weight>, loaded by A1111 itself

# A1111 sampler names -> ComfyUI's (the converter maps those on to Loom's)
SAMPLERS = {
    "Euler a": "euler_ancestral", "Euler": "euler", "LMS": "lms", "Heun": "heun",
    "DPM2": "dpm_2", "DPM2 a": "dpm_2_ancestral", "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ 2M": "dpmpp_2m", "DPM++ SDE": "dpmpp_sde", "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 3M SDE": "dpmpp_3m_sde", "DPM fast": "dpm_fast", "DPM adaptive": "dpm_adaptive",
    "LCM": "lcm", "DDIM": "ddim", "DDPM": "ddpm", "UniPC": "uni_pc", "DEIS": "deis",
    "IPNDM": "ipndm", "IPNDM_V": "ipndm_v", "Euler CFG++": "euler_cfg_pp",
    "Euler a CFG++": "euler_ancestral_cfg_pp", "DPM++ 2M CFG++": "dpmpp_2m_cfg_pp",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde_heun",
}
# A1111 "Schedule type" names -> ComfyUI scheduler names
SCHEDULES = {"Uniform": "normal", "Normal": "normal", "Karras": "karras",
             "Exponential": "exponential", "SGM Uniform": "sgm_uniform", "Simple": "simple",
             "DDIM": "ddim_uniform", "Beta": "beta", "KL Optimal": "kl_optimal"}
# What "Automatic" (and no schedule type) means for these samplers; the rest use "normal"
SAMPLER_SCHEDULES = {"DPM++ 2M": "karras", "DPM++ SDE": "karras", "DPM++ 2S a": "karras",
                     "DPM2": "karras", "DPM2 a": "karras", "DPM++ 2M SDE": "exponential",
                     "DPM++ 2M SDE Heun": "exponential", "DPM++ 3M SDE": "exponential"}
# Settings the graph takes; hashes and the version only describe the run, kept in the meta
USED = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model",
        "Batch size", "Clip skip", "VAE", "Denoising strength")


@dataclass(frozen=True)
class Parameters:
    prompt: str
    negative: str
    settings: dict[str, str]


def parse(text: str) -> Parameters:
    """A1111's infotext: prompt lines, "Negative prompt:" lines, then the settings line."""
    *lines, last = text.strip().split("\n")
    if len(_SETTING.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    settings = {}
    for key, value in _SETTING.findall(last):
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        settings[key.strip()] = value
    return Parameters("\n".join(prompt), "\n".join(negative), settings)


def claims(source: Source) -> bool:
    return source.chunks is not None and KEY in source.chunks


def read(source: Source, registry: Registry | None, models: ModelPaths | None
         ) -> tuple[Graph, Report | None]:
    assert source.chunks is not None
    text = source.chunks[KEY]
    issues: list[Issue] = []
    doc = comfyui_document(parse(text), issues, models)
    graph, report = convert(doc, registry=registry, models=models, file=source.file)
    report.format = "a1111"
    report.values += issues
    graph.meta.pop("comfyui", None)
    graph.meta["a1111"] = {"file": source.path.name, KEY: text}
    graph.revision = 0
    return graph, report


def comfyui_document(p: Parameters, issues: list[Issue], models: ModelPaths | None
                     ) -> dict[str, Any]:
    s = p.settings
    sampler, scheduler = _sampler(s, issues)
    width, height = _size(s.get("Size"), issues)
    model = s.get("Model")
    if not model:
        issues.append(Issue("checkpoint", "Model", None, "the parameters name no model; "
                            "choose a checkpoint"))
    doc: dict[str, Any] = {
        "checkpoint": _node("CheckpointLoaderSimple", ckpt_name=_model_file(
            models, ("checkpoints", "diffusers"), model or "")),
        "positive": _node("CLIPTextEncode", text=p.prompt, clip=["checkpoint", 1]),
        "negative": _node("CLIPTextEncode", text=p.negative, clip=["checkpoint", 1]),
        "latent": _node("EmptyLatentImage", width=width, height=height,
                        batch_size=_number(s.get("Batch size", "1"))),
        "sampler": _node("KSampler", model=["checkpoint", 0], positive=["positive", 0],
                         negative=["negative", 0], latent_image=["latent", 0],
                         seed=_number(s.get("Seed", "0")), steps=_number(s.get("Steps", "20")),
                         cfg=_number(s.get("CFG scale", "7")), sampler_name=sampler,
                         scheduler=scheduler, denoise=1.0),
        "decode": _node("VAEDecode", samples=["sampler", 0], vae=["checkpoint", 2]),
        "save": _node("SaveImage", filename_prefix="loom", images=["decode", 0]),
    }
    skip = _number(s.get("Clip skip", "1"))
    if skip != 1:
        doc["clip_skip"] = _node("CLIPSetLastLayer", clip=["checkpoint", 1],
                                 stop_at_clip_layer=-skip if isinstance(skip, int) else skip)
        for enc in ("positive", "negative"):
            doc[enc]["inputs"]["clip"] = ["clip_skip", 0]
    if s.get("VAE"):
        doc["vae"] = _node("VAELoader", vae_name=_model_file(models, ("vae",), s["VAE"]))
        doc["decode"]["inputs"]["vae"] = ["vae", 0]
    _not_carried(p, issues)
    return doc


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def _number(text: str) -> Any:
    """An int or (finite) float from the text; the text itself otherwise, for the
    converter's checks to report against the input it was meant for."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _size(text: str | None, issues: list[Issue]) -> tuple[Any, Any]:
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", text or "")
    if m is None:
        if text is not None:
            issues.append(Issue("latent", "Size", text, "expected WIDTHxHEIGHT; 512x512 used"))
        return 512, 512
    return int(m.group(1)), int(m.group(2))


def _sampler(s: dict[str, str], issues: list[Issue]) -> tuple[str, str]:
    """ComfyUI's sampler and scheduler names for A1111's Sampler and Schedule type, which
    older versions wrote as one ("DPM++ 2M Karras")."""
    name = s.get("Sampler", "Euler a")
    schedule = s.get("Schedule type")
    for label in ("Karras", "Exponential", "SGM Uniform"):
        if name.endswith(" " + label) and name not in SAMPLERS:
            name, schedule = name[: -len(label) - 1], schedule or label
    sampler = SAMPLERS.get(name)
    if sampler is None:
        issues.append(Issue("sampler", "Sampler", s.get("Sampler"), "not a sampler Loom "
                            "knows; 'euler' is used"))
        sampler = "euler"
    if schedule in (None, "Automatic"):
        return sampler, SAMPLER_SCHEDULES.get(name, "normal")
    scheduler = SCHEDULES.get(schedule)
    if scheduler is None:
        issues.append(Issue("sampler", "Schedule type", schedule, "not a schedule Loom knows; "
                            "'normal' is used"))
        scheduler = "normal"
    return sampler, scheduler


def _not_carried(p: Parameters, issues: list[Issue]) -> None:
    s = p.settings
    strength = _number(s.get("Denoising strength", "1"))
    if strength != 1:
        hires = any(k.startswith("Hires") for k in s)
        issues.append(Issue("sampler", "Denoising strength", s["Denoising strength"],
                            "the strength of a second, high-resolution pass; not carried"
                            if hires else "made from a source image (image to image); the "
                            "graph starts from an empty latent, at denoise 1"))
    for key, value in s.items():
        if key not in USED and not _describes_the_run(key):
            issues.append(Issue("parameters", key, value, "not carried: the text-to-image "
                                "graph has no such setting"))
    for enc, text in (("positive", p.prompt), ("negative", p.negative)):
        for tag in _NETWORK_TAG.findall(text):
            issues.append(Issue(enc, "text", tag, "an A1111 extra-network tag; Loom's text "
                                "encoder reads it as plain text (add the network's own "
                                "loader node)"))


def _describes_the_run(key: str) -> bool:
    return key.lower().endswith(("hash", "hashes")) or key == "Version"


def _model_file(models: ModelPaths | None, kinds: tuple[str, ...], name: str) -> str:
    """A1111 names a checkpoint without its extension: the file of that name in the model
    folders, else the name as a .safetensors file (which the converter reports missing)."""
    if not name:
        return name
    for kind in kinds if models is not None else ():
        assert models is not None
        for entry in models.list(kind):
            if name in (entry.name, Path(entry.name).stem, Path(entry.name).name):
                return entry.name
    return name if Path(name).suffix in (".safetensors", ".ckpt", ".pt") else \
        name + ".safetensors"


READER = Reader(Format.A1111_PNG, "A1111 generation parameters", claims, read)
