"""The `loom` command as a user runs it: a real process, real files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "resources" / "workflows" / "example.json"
LOOM = [sys.executable, "-m", "app.cli"]


def loom(*args, cwd=None, **kw):
    return subprocess.run([*LOOM, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120, **kw)


def events_of(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def work(tmp_path):
    return {"out": tmp_path / "out", "cache": tmp_path / "cache", "tmp": tmp_path}


def test_run_example_then_rerun_in_a_new_process_computes_nothing(work):
    first = loom("run", EXAMPLE, "--out", work["out"], "--cache-dir", work["cache"],
                 "--events", "json")
    assert first.returncode == 0, first.stderr
    evs = events_of(first.stdout)
    assert evs[0]["event"] == "run_started" and len(evs[0]["plan"]["run"]) == 10
    finished = [e for e in evs if e["event"] == "node_finished"]
    assert all(e["cached"] is False and e["seconds"] >= 0 for e in finished)
    [png] = evs[-1]["files"]
    assert evs[-1] == {**evs[-1], "event": "run_finished", "status": "ok"}
    assert Path(png).is_file()

    second = loom("run", EXAMPLE, "--out", work["out"], "--cache-dir", work["cache"],
                  "--events", "json")
    evs2 = events_of(second.stdout)
    assert second.returncode == 0
    assert evs2[0]["plan"] == {"run": [], "cached": ["save"]}
    assert [e["cached"] for e in evs2 if e["event"] == "node_finished"] == [True]
    assert evs2[-1]["files"] == [png]


def test_set_changes_an_input_and_reruns_only_what_follows(work):
    args = ["--out", work["out"], "--cache-dir", work["cache"], "--events", "json"]
    assert loom("run", EXAMPLE, *args).returncode == 0
    r = loom("run", EXAMPLE, "--set", "Frame.color=#ffffff", "--set", "frame.left=40", *args)
    assert r.returncode == 0, r.stderr
    plan = events_of(r.stdout)[0]["plan"]
    assert plan["run"] == ["frame", "save"] and plan["cached"] == ["sky_only"]
    bad = loom("run", EXAMPLE, "--set", "frame.left=-5", *args)
    assert bad.returncode == 2 and "expected an integer from 0 to 16384" in bad.stderr
    assert loom("run", EXAMPLE, "--set", "nope.left=1", *args).returncode == 2


def test_failed_node_exits_1_with_a_clear_message(work):
    wf = json.loads(EXAMPLE.read_text())
    wf["nodes"][0]["params"]["path"] = "no/such/file.png"
    path = work["tmp"] / "wf.json"
    path.write_text(json.dumps(wf))
    r = loom("run", path, "--out", work["out"], "--no-disk-cache")
    assert r.returncode == 1
    assert "Photo (load) failed: input 'path': expected an existing image file" in r.stderr
    j = loom("run", path, "--out", work["out"], "--no-disk-cache", "--events", "json")
    [failed] = [e for e in events_of(j.stdout) if e["event"] == "node_failed"
                and e["node"] == "load"]
    assert failed["node"] == "load" and failed["error"]["input"] == "path"
    assert events_of(j.stdout)[-1]["status"] == "failed"


def test_invalid_and_unreadable_workflows_exit_2(work):
    bad = work["tmp"] / "bad.json"
    bad.write_text('{"format": "loom.workflow", "version": 1, "nodes": [')
    r = loom("run", bad, "--no-disk-cache")
    assert r.returncode == 2 and "line 1, column" in r.stderr and "Traceback" not in r.stderr
    wf = json.loads(EXAMPLE.read_text())
    wf["nodes"][1]["params"]["method"] = "sharpest"
    wf["nodes"].append({"id": "alien", "type": "vendor.thing", "params": {}, "pos": [0, 0]})
    inv = work["tmp"] / "inv.json"
    inv.write_text(json.dumps(wf))
    v = loom("validate", inv)
    assert v.returncode == 2
    assert "upscale.method: expected one of 'nearest'" in v.stdout
    assert "alien: unknown node type 'vendor.thing'" in v.stdout
    vj = json.loads(loom("validate", inv, "--json").stdout)
    assert {p["code"] for p in vj} == {"bad_value", "unknown_type"}
    assert loom("validate", EXAMPLE).returncode == 0
    assert loom("run", inv, "--no-disk-cache").returncode == 2
    cyc = json.loads(EXAMPLE.read_text())
    cyc["links"].append({"from": ["frame", "image"], "to": ["upscale", "image"]})
    cyc["links"] = [l for l in cyc["links"] if l["to"] != ["upscale", "image"] or
                    l["from"][0] == "frame"]
    path = work["tmp"] / "cycle.json"
    path.write_text(json.dumps(cyc))
    c = loom("validate", path)
    assert c.returncode == 2 and "the graph has a cycle:" in c.stdout
    assert "frame" in c.stdout and "upscale" in c.stdout


def test_ctrl_c_cancels_cleanly_with_exit_130(work):
    wf = {"format": "loom.workflow", "version": 1,
          "nodes": [{"id": "m", "type": "solid_mask", "params": {"width": 4, "height": 4},
                     "pos": [0, 0]},
                    {"id": "g", "type": "grow_mask", "params": {"pixels": 512}, "pos": [0, 0]},
                    {"id": "i", "type": "mask_to_image", "params": {}, "pos": [0, 0]},
                    {"id": "s", "type": "save_image", "params": {}, "pos": [0, 0]}],
          "links": [{"from": ["m", "mask"], "to": ["g", "mask"]},
                    {"from": ["g", "mask"], "to": ["i", "mask"]},
                    {"from": ["i", "image"], "to": ["s", "images"]}]}
    # a slow node: growing a large mask 512 pixels, many times over, via a big solid mask
    wf["nodes"][0]["params"].update(width=4096, height=4096)
    path = work["tmp"] / "slow.json"
    path.write_text(json.dumps(wf))
    proc = subprocess.Popen([*LOOM, "run", str(path), "--out", str(work["out"]), "--cache-dir",
                             str(work["cache"]), "--events", "json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # wait until the slow node has started
        lines.append(json.loads(line))
        if lines[-1]["event"] == "node_started" and lines[-1]["node"] == "g":
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    lines += events_of(rest)
    assert proc.returncode == 130, err
    assert lines[-1]["event"] == "run_finished" and lines[-1]["status"] == "cancelled"
    assert not list(work["out"].glob("*.png")) if work["out"].exists() else True
    # the solid mask computed before Ctrl-C is served from the cache next time
    again = loom("run", path, "--out", work["out"], "--cache-dir", work["cache"], "--events",
                 "json", "--set", "g.pixels=1")
    assert again.returncode == 0 and events_of(again.stdout)[0]["plan"]["cached"] == ["m"]


def test_nodes_lists_every_spec(work):
    text = loom("nodes").stdout
    assert "load_image" in text and "save_image" in text
    specs = json.loads(loom("nodes", "--json").stdout)
    by_type = {s["type"]: s for s in specs}
    assert {"load_image", "save_image", "preview_image", "resize_image", "crop_image",
            "pad_image", "blend_images", "composite_images", "mask_from_color",
            "invert_mask", "grow_mask", "blur_mask", "int", "float", "string",
            "seed"} <= set(by_type)
    width = next(i for i in by_type["resize_image"]["inputs"] if i["name"] == "width")
    assert width == {"name": "width", "type": "INT", "default": 512, "min": 0, "max": 16384}
    assert by_type["save_image"]["output"] is True


def test_extract_gives_back_the_workflow_and_a_png_runs_directly(work):
    r = loom("run", EXAMPLE, "--out", work["out"], "--no-disk-cache")
    png = r.stdout.strip().splitlines()[-1]
    ex = loom("extract", png)
    assert ex.returncode == 0
    extracted = json.loads(ex.stdout)
    assert [n["id"] for n in extracted["nodes"]] == [n["id"] for n in
                                                     json.loads(EXAMPLE.read_text())["nodes"]]
    # the embedded workflow's relative paths still resolve when run from elsewhere
    wf = work["tmp"] / "wf.json"
    wf.write_text(ex.stdout)
    shutil.copytree(ROOT / "resources" / "images", work["tmp"].parent / "images",
                    dirs_exist_ok=True)
    assert loom("validate", wf).returncode == 0
    plain = work["tmp"] / "plain.png"
    from PIL import Image

    Image.new("RGB", (2, 2)).save(plain)
    no = loom("extract", plain)
    assert no.returncode == 2 and "holds no workflow" in no.stderr
    assert loom("extract", EXAMPLE).returncode == 2


def test_cache_command_reports_and_clears(work):
    loom("run", EXAMPLE, "--out", work["out"], "--cache-dir", work["cache"])
    s = loom("cache", "--cache-dir", work["cache"]).stdout
    assert "10 entries" in s
    assert "0 entries" in loom("cache", "--cache-dir", work["cache"], "--clear").stdout


def test_help_lists_the_commands():
    r = loom("--help")
    assert r.returncode == 0 and "run" in r.stdout and "validate" in r.stdout
    assert "edit" in r.stdout


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / ("loom.exe" if os.name == "nt" else "loom")
    assert exe.exists()
    r = subprocess.run([str(exe), "nodes"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "save_image" in r.stdout
