"""engine.formats: one door for every workflow format, told apart by content."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import WorkflowError, validate
from engine import workflow as wf
from engine.formats import Format, detect, embedded_workflow, open_file
from engine.formats.a1111_png import parse
from engine.modelpaths import ModelFolders
from engine.pngmeta import WORKFLOW_KEY, png_info, read_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "resources" / "workflows" / "example.json"
DATA = ROOT / "tests" / "data" / "comfyui"

A1111 = """masterpiece, a red square <lora:squares:0.8>
Negative prompt: blurry,
low quality
Steps: 12, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, \
Size: 64x96, Model hash: 9f3b2c1a, Model: loom-shapes, Denoising strength: 0.5, \
Clip skip: 2, ENSD: 31337, Lora hashes: "squares: 0a1b2c", Version: v1.10.1"""


def png(path: Path, **texts: str) -> Path:
    """A PNG with text chunks, written as Loom writes them (Pillow's PngInfo)."""
    Image.new("RGB", (8, 8), "red").save(path, format="PNG", pnginfo=png_info(texts))
    return path


@pytest.fixture
def folders():
    return ModelFolders([], bundled=ROOT / "resources" / "models", use_env=False,
                        use_config=False)


def test_each_format_is_told_by_its_content_not_its_name(tmp_path, builtin_registry):
    # every file under a name that says nothing (or says the wrong thing)
    files = {
        Format.LOOM_JSON: shutil.copy(EXAMPLE, tmp_path / "a.workflow"),
        Format.COMFYUI_API: shutil.copy(DATA / "txt2img_api.json", tmp_path / "b.txt"),
        Format.COMFYUI_UI: shutil.copy(DATA / "txt2img_ui.json", tmp_path / "c"),
        Format.LOOM_PNG: png(tmp_path / "d.json", **{WORKFLOW_KEY: EXAMPLE.read_text()}),
        Format.COMFYUI_PNG: png(tmp_path / "e.dat", prompt=(DATA / "txt2img_api.json")
                                .read_text()),
        Format.A1111_PNG: png(tmp_path / "f.png", parameters=A1111),
    }
    for fmt, path in files.items():
        assert detect(path) == fmt, path
        opened = open_file(path, registry=builtin_registry)
        assert opened.format == fmt
        assert (opened.report is None) == fmt.startswith("loom"), fmt
        assert opened.graph.base_dir == tmp_path.resolve()
        assert opened.graph.nodes
    example = wf.load(EXAMPLE)
    for fmt in (Format.LOOM_JSON, Format.LOOM_PNG):
        got = open_file(files[fmt], registry=builtin_registry).graph
        assert list(got.nodes) == list(example.nodes)
    assert embedded_workflow(files[Format.LOOM_PNG]) == EXAMPLE.read_text()
    with pytest.raises(WorkflowError, match="holds a ComfyUI workflow, not a Loom one"):
        embedded_workflow(files[Format.COMFYUI_PNG])
    with pytest.raises(WorkflowError, match="holds A1111 generation parameters"):
        embedded_workflow(files[Format.A1111_PNG])


def test_loom_writes_png_text_through_pillow_and_reads_it_back(tmp_path):
    path = png(tmp_path / "t.png", **{WORKFLOW_KEY: '{"a": "\u00e9\u4e2d"}'})
    assert Image.open(path).text[WORKFLOW_KEY] == '{"a": "\u00e9\u4e2d"}'  # a real iTXt
    assert read_text(path) == {WORKFLOW_KEY: '{"a": "\u00e9\u4e2d"}'}


def test_the_a1111_infotext_parses_like_a1111():
    p = parse(A1111)
    assert p.prompt == "masterpiece, a red square <lora:squares:0.8>"
    assert p.negative == "blurry,\nlow quality"
    assert p.settings["Size"] == "64x96" and p.settings["CFG scale"] == "6.5"
    assert p.settings["Lora hashes"] == "squares: 0a1b2c"  # quoted, commas inside
    only_prompt = parse("just a prompt\nover two lines")
    assert only_prompt.prompt == "just a prompt\nover two lines" and not only_prompt.settings


def test_an_a1111_png_opens_as_a_runnable_text_to_image_graph(tmp_path, builtin_registry,
                                                               folders):
    opened = open_file(png(tmp_path / "a.png", parameters=A1111), registry=builtin_registry,
                       models=folders)
    g, report = opened.graph, opened.report
    assert opened.format == Format.A1111_PNG
    types = sorted(n.type for n in g.nodes.values())
    assert types == sorted(["load_checkpoint", "clip_set_last_layer", "text_encode",
                            "text_encode", "empty_latent", "sampler", "vae_decode",
                            "save_image"])
    n = g.nodes
    assert n["checkpoint"].params["ckpt_name"] == "loom-shapes.safetensors"  # found by stem
    assert n["clip_skip"].params["stop_at_clip_layer"] == -2
    assert n["positive"].params["text"] == "masterpiece, a red square <lora:squares:0.8>"
    assert n["negative"].params["text"] == "blurry,\nlow quality"
    assert (n["latent"].params["width"], n["latent"].params["height"]) == (64, 96)
    s = n["sampler"].params
    assert (s["seed"], s["steps"], s["cfg"], s["denoise"]) == (1234, 12, 6.5, 1.0)
    assert (s["sampler"], s["scheduler"]) == ("dpmpp_2m", "karras")
    links = {(l.src, l.dst, l.dst_input) for l in g.links.values()}
    assert {("checkpoint", "sampler", "model"), ("positive", "sampler", "positive"),
            ("negative", "sampler", "negative"), ("latent", "sampler", "latent"),
            ("clip_skip", "positive", "clip"), ("sampler", "decode", "latent"),
            ("checkpoint", "decode", "vae"), ("decode", "save", "images")} <= links
    assert not [p for p in validate(g) if p.severity == "error"], validate(g)
    assert g.meta["a1111"]["parameters"] == A1111
    # what a text-to-image graph cannot hold is in the report, never an exception
    issues = {(i.node, i.input): i.why for i in report.values}
    assert "image to image" in issues[("sampler", "Denoising strength")]
    assert "not carried" in issues[("parameters", "ENSD")]
    assert "extra-network tag" in issues[("positive", "text")]
    assert ("parameters", "Model hash") not in issues  # describes the run, kept in the meta
    assert not report.models and not report.placeholders
    assert report.text().startswith(f"{tmp_path / 'a.png'}: A1111/Forge generation parameters")


@pytest.mark.parametrize("sampler, schedule, expected", [
    ("Euler a", None, ("euler_ancestral", "normal")),
    ("Euler", "Automatic", ("euler", "normal")),
    ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),  # the older, one-name spelling
    ("DPM++ 2M", "Automatic", ("dpmpp_2m", "karras")),  # A1111's default for it
    ("DPM++ 2M", "Normal", ("dpmpp_2m", "normal")),
    ("DPM++ 2M SDE Heun", None, ("dpmpp_2m_sde_heun", "exponential")),
])
def test_a1111_samplers_and_schedules_map_onto_loom(sampler, schedule, expected, tmp_path,
                                                    builtin_registry):
    line = f"Steps: 4, Sampler: {sampler}, " + (f"Schedule type: {schedule}, " if schedule
                                                 else "") + "CFG scale: 7, Seed: 1"
    g = open_file(png(tmp_path / "s.png", parameters=f"a cat\n{line}"),
                  registry=builtin_registry).graph
    assert (g.nodes["sampler"].params["sampler"], g.nodes["sampler"].params["scheduler"]) \
        == expected


def test_unmapped_a1111_values_are_reported_not_raised(tmp_path, builtin_registry):
    text = ("a cat\nSteps: many, Sampler: Restart, Schedule type: Align Your Steps, "
            "CFG scale: 7, Seed: 1, Size: big")
    opened = open_file(png(tmp_path / "u.png", parameters=text), registry=builtin_registry)
    issues = {(i.node, i.input): i.why for i in opened.report.values}
    assert "not a sampler Loom knows" in issues[("sampler", "Sampler")]
    assert "not a schedule Loom knows" in issues[("sampler", "Schedule type")]
    assert "expected WIDTHxHEIGHT" in issues[("latent", "Size")]
    assert "expected" in issues[("sampler", "steps")]  # the converter's own check
    assert "no model" in issues[("checkpoint", "Model")]
    s = opened.graph.nodes["sampler"].params
    assert (s["sampler"], s["scheduler"]) == ("euler", "normal")
    assert "steps" not in s  # Loom's default is used


def test_damaged_and_unknown_files_give_one_clear_error(tmp_path, builtin_registry):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png(tmp_path / "whole.png", parameters=A1111).read_bytes()[:20])
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"GIF89a not a png")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = {plain: "holds no workflow", fake: "not a PNG file", text: "not valid JSON",
             cut: "holds no workflow"}
    for path, message in cases.items():
        assert detect(path) is None
        with pytest.raises(WorkflowError, match=message) as exc:
            open_file(path, registry=builtin_registry)
        assert str(path) in str(exc.value)


def loom(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=300)


def test_the_cli_opens_an_a1111_png(tmp_path):
    image = png(tmp_path / "a1111.png", parameters=A1111)
    r = loom("validate", image)
    assert r.returncode == 0, r.stderr
    assert "A1111/Forge generation parameters" in r.stderr and "0 error(s)" in r.stderr
    out = tmp_path / "converted.json"
    r = loom("import", image, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "a1111"
    assert wf.load(out).nodes["sampler"].params["sampler"] == "dpmpp_2m"
    r = loom("extract", image)
    assert r.returncode == 2 and "A1111 generation parameters" in r.stderr
    r = loom("import", EXAMPLE)
    assert r.returncode == 2 and "already a Loom workflow" in r.stderr


@pytest.mark.slow
def test_loom_run_makes_the_image_an_a1111_png_describes(tmp_path):
    image = png(tmp_path / "small.png", parameters=(
        "a red square\nNegative prompt: blue\nSteps: 4, Sampler: Euler a, CFG scale: 7, "
        "Seed: 1, Size: 64x64, Model: loom-shapes"))
    r = loom("run", image, "--out", tmp_path / "out", "--no-disk-cache")
    assert r.returncode == 0, r.stderr
    made = Path(r.stdout.split()[-1])
    assert Image.open(made).size == (64, 64)
    assert detect(made) == Format.LOOM_PNG  # and it carries the converted graph


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.lists(
    st.sampled_from(["Steps: ", "Sampler: ", "Size: ", "Seed: ", "CFG scale: ", "Clip skip: ",
                     "Schedule type: ", "Negative prompt:", "\n", ", ", '"', "1e999", "-3",
                     "DPM++ 2M Karras", "512x", "x", "9" * 40, "<a:b>", "Model: m"]),
    max_size=30).map("".join))
def test_any_parameters_text_opens_or_says_why(text, tmp_path, builtin_registry):
    path = png(tmp_path / "fuzz.png", parameters=text)
    try:
        opened = open_file(path, registry=builtin_registry)
    except WorkflowError:
        return
    json.dumps(opened.report.to_dict(), allow_nan=False)
    validate(opened.graph)
