"""Files from a hostile user or a broken disk (issue 22): what Loom reads must be a regular
file of bounded size, what it writes keeps modes, links and inputs intact, and every
failure is a clear message, never a traceback or a hang."""

import errno
import io
import json
import os
import resource
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import Executor, Graph
from engine import workflow as wf
from engine.errors import InputError, WorkflowError
from engine.fsutil import (
    FileHasher,
    UserFileError,
    atomic_write,
    read_user_file,
    remove_stale_temps,
    write_new,
)
from engine.pngmeta import PNG_SIGNATURE, WORKFLOW_KEY, read_text

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "comfyui"
LOOM = [sys.executable, "-m", "app.cli"]


def loom(*args, umask=None, limit_as=None, **kw):
    def pre():
        if umask is not None:
            os.umask(umask)
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    kw.setdefault("timeout", 120)
    return subprocess.run([*LOOM, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=pre, **kw)


def simple_workflow(path: Path, version: int = 1, batch: int = 1, prefix: str = "w") -> Path:
    doc = {"format": "loom.workflow", "version": version, "nodes": [
        {"id": "img", "type": "empty_image", "version": 1,
         "params": {"width": 8, "height": 8, "batch_size": batch, "color": "#102030"}},
        {"id": "save", "type": "save_image", "version": 1, "params": {"filename_prefix": prefix}},
    ], "links": [{"from": ["img", "image"], "to": ["save", "images"]}]}
    path.write_text(json.dumps(doc))
    return path


def chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def itxt_chunk(key: str, text: str) -> bytes:
    """A compressed iTXt chunk, built by hand (Loom writes them through Pillow's PngInfo)."""
    return chunk(b"iTXt", key.encode("latin-1") + b"\0\1\0\0\0"
                 + zlib.compress(text.encode("utf-8"), 9))


def png_with(*chunks: bytes, size=(1, 1)) -> bytes:
    """A valid tiny PNG (from Pillow) with `chunks` inserted before its image data."""
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, format="PNG")
    data = buf.getvalue()
    at = data.index(b"IDAT") - 4
    return data[:at] + b"".join(chunks) + data[at:]


def exportable(tmp_path: Path) -> Path:
    out = tmp_path / "w.json"
    assert loom("import", DATA / "txt2img_api.json", "-o", out).returncode == 0
    return out


def run_graph(reg, tmp_path, **save):
    g = Graph(reg)
    img = g.add("empty_image", "img", width=4, height=4, batch_size=save.pop("batch", 1))
    g.add("save_image", "save", images=img["image"], **save)
    return Executor(output_dir=tmp_path / "out").run(g)


def load_image_failure(reg, path) -> str:
    g = Graph(reg)
    g.add("load_image", "l", path=str(path))
    r = Executor().run(g, ["l"])
    assert not r.ok
    f = r.failures["l"]
    assert f.input == "path", f.message
    return f.message + " " + (f.hint or "")


# ---- 3: stale temp files ---------------------------------------------------------------------

def _temps(folder: Path):
    old = folder / ".e.json.k3j_x9q2.tmp"  # a tempfile.mkstemp name, from before
    fresh = folder / ".e.json.0123abcd.tmp"
    other = folder / ".notes.tmp"  # not Loom's pattern: never touched
    for p in (old, fresh, other):
        p.write_bytes(b"half written")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    return old, fresh, other


def test_stale_temp_files_are_removed_beside_o_targets_and_save_image_outputs(tmp_path,
                                                                           builtin_registry):
    w = exportable(tmp_path)
    folder = tmp_path / "exp"
    folder.mkdir()
    old, fresh, other = _temps(folder)
    r = loom("export", w, "-o", folder / "e.json")
    assert r.returncode == 0, r.stderr
    assert not old.exists() and fresh.exists() and other.exists()

    out = tmp_path / "out"
    out.mkdir()
    old, fresh, other = _temps(out)
    assert run_graph(builtin_registry, tmp_path, filename_prefix="x").ok
    assert not old.exists() and fresh.exists() and other.exists()
    assert remove_stale_temps(out, 0) == 1 and not fresh.exists()
    assert remove_stale_temps(tmp_path / "missing") == 0


# ---- 4: a partial Save Image --------------------------------------------------------------

def test_a_save_image_that_fails_part_way_lists_the_files_it_wrote(tmp_path, builtin_registry,
                                                                   monkeypatch):
    import nodes.image

    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_new(path, data)

    monkeypatch.setattr(nodes.image, "write_new", full_disk)
    r = run_graph(builtin_registry, tmp_path, batch=4, filename_prefix="part")
    assert not r.ok
    [written] = r.files
    assert Path(written).is_file() and written.endswith("part_00001.png")
    message = r.failures["save"].message
    assert "No space left on device" in message and written in message
    assert "1 of 4" in message


# ---- 5: a newer-version workflow changed with --set ---------------------------------------

def test_newer_file_version_run_with_set_embeds_the_changed_graph_with_a_note(tmp_path):
    w = simple_workflow(tmp_path / "new.json", version=99)
    r = loom("run", w, "--set", "img.color=#ffffff", "--out", tmp_path / "out",
             "--no-disk-cache")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "newer Loom" in r.stderr
    [png] = r.stdout.split()
    embedded = json.loads(read_text(png)[WORKFLOW_KEY])
    assert embedded["nodes"][0]["params"]["color"] == "#ffffff"
    assert embedded["version"] == 99 and "newer Loom" in embedded["meta"][wf.NOTE_KEY]
    # unchanged, the file is embedded exactly as read
    r = loom("run", w, "--out", tmp_path / "out", "--no-disk-cache")
    assert r.returncode == 0 and "warning" not in r.stderr
    assert json.loads(read_text(r.stdout.split()[0])[WORKFLOW_KEY]) == json.loads(w.read_text())


# ---- 6: modes, links and special targets --------------------------------------------------

def test_writes_get_umask_modes_keep_existing_modes_and_write_through_links(tmp_path):
    w = exportable(tmp_path)
    new = tmp_path / "new.json"
    assert loom("export", w, "-o", new, umask=0o022).returncode == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    assert loom("import", DATA / "txt2img_api.json", "-o", tmp_path / "i.json",
                umask=0o027).returncode == 0
    assert stat.S_IMODE((tmp_path / "i.json").stat().st_mode) == 0o640

    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o604)
    assert loom("export", w, "-o", kept, umask=0o077).returncode == 0
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and kept.read_text() != "old"

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    assert loom("export", w, "-o", link).returncode == 0
    assert link.is_symlink() and json.loads(real.read_text())


def test_a_write_to_something_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserFileError, match="FIFO"):
        atomic_write(fifo, b"x")
    r = loom("export", exportable(tmp_path), "-o", fifo)
    assert r.returncode == 1 and "not a regular file" in r.stderr
    assert "Traceback" not in r.stderr and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_image_files_get_the_umask_mode(tmp_path, builtin_registry):
    old = os.umask(0o022)
    try:
        r = run_graph(builtin_registry, tmp_path, filename_prefix="m")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(r.files[0]).st_mode) == 0o644


# ---- 7: output = input --------------------------------------------------------------------

def test_import_and_export_refuse_to_overwrite_their_input(tmp_path):
    api = tmp_path / "api.json"
    api.write_bytes((DATA / "txt2img_api.json").read_bytes())
    before = api.read_bytes()
    r = loom("import", api, "-o", api)
    assert r.returncode == 2 and "input file" in r.stderr and api.read_bytes() == before
    w = exportable(tmp_path)
    hard = tmp_path / "hard.json"
    os.link(w, hard)
    before = w.read_bytes()
    for target in (w, hard, tmp_path / "." / "w.json"):
        r = loom("export", w, "-o", target)
        assert r.returncode == 2 and "input file" in r.stderr, r.stderr
    assert w.read_bytes() == before


# ---- 8: special and huge files as input ---------------------------------------------------

def test_commands_refuse_devices_fifos_and_folders_as_workflows(tmp_path):
    fifo = tmp_path / "w.json"
    os.mkfifo(fifo)
    for command in ("validate", "run", "import", "extract"):
        for path in ("/dev/zero", fifo, tmp_path):
            r = loom(command, path, timeout=60)
            assert r.returncode == 2, (command, path, r.stderr)
            assert str(path) in r.stderr and "not a regular file" in r.stderr
            assert "Traceback" not in r.stderr


def test_a_workflow_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 5000)
    with pytest.raises(UserFileError, match="more than"):
        read_user_file(big, "workflow file", 4096)
    monkeypatch.setattr("engine.workflow.WORKFLOW_LIMIT", 4096)
    with pytest.raises(WorkflowError, match="big.json.*more than the 0.0 MiB a workflow file"):
        wf.load(big)


def test_load_image_refuses_special_files_during_planning_with_a_clear_error(tmp_path,
                                                                             builtin_registry):
    assert "directory" in load_image_failure(builtin_registry, tmp_path)
    assert "could not be decoded" in load_image_failure(builtin_registry, "/proc/self/mem")
    hasher = FileHasher()
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    assert hasher(tmp_path) is None and hasher(fifo) is None and hasher(Path("/dev/zero")) is None
    assert hasher(Path("/proc/self/mem")) is None


def test_load_image_of_a_fifo_or_dev_zero_does_not_hang(tmp_path):
    fifo = tmp_path / "in.png"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        doc = {"format": "loom.workflow", "version": 1, "nodes": [
            {"id": "l", "type": "load_image", "params": {"path": str(path)}},
            {"id": "s", "type": "save_image", "params": {}}],
            "links": [{"from": ["l", "image"], "to": ["s", "images"]}]}
        w = tmp_path / "w.json"
        w.write_text(json.dumps(doc))
        r = loom("run", w, "--out", tmp_path / "out", "--no-disk-cache", timeout=60)
        assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_model_loaders_refuse_files_that_are_not_regular(tmp_path):
    from nodes.diffusion.loading import header_shapes, read_state_dict

    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    for read in (read_state_dict, header_shapes):
        with pytest.raises(InputError, match="FIFO"):
            read(fifo)
    with pytest.raises(InputError, match="character device"):
        read_state_dict(Path("/dev/zero"))


# ---- 9: PNG text-chunk bombs --------------------------------------------------------------

def _bomb(key: bytes, n: int = 60, size: int = 32 << 20) -> bytes:
    inflated = zlib.compress(b"\0" * size, 9)
    return png_with(*[chunk(b"zTXt", key + b"\0\0" + inflated) for _ in range(n)])


def test_png_text_bombs_are_bounded(tmp_path):
    import tracemalloc

    other = tmp_path / "other.png"
    other.write_bytes(_bomb(b"Comment"))
    prompt = tmp_path / "prompt.png"
    prompt.write_bytes(_bomb(b"prompt", n=8))
    assert other.stat().st_size < 3 << 20
    tracemalloc.start()
    try:
        assert read_text(other) == {}  # keys Loom does not read are never inflated
        chunks = read_text(prompt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20
    assert sum(map(len, chunks.values())) <= 64 << 20
    for command in ("extract", "run"):
        r = loom(command, other, limit_as=1 << 30)
        assert r.returncode == 2 and "holds no workflow" in r.stderr, r.stderr


def test_read_text_skips_image_data_and_still_reads_its_keys(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(png_with(chunk(b"tEXt", b"parameters\0steps: 20"),
                             itxt_chunk(WORKFLOW_KEY, '{"a": "\u00e9"}'), size=(300, 300)))
    assert read_text(png) == {"parameters": "steps: 20", WORKFLOW_KEY: '{"a": "\u00e9"}'}


def test_load_image_of_a_text_bomb_is_a_clear_error(tmp_path, builtin_registry):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bomb(b"Comment", n=4, size=40 << 20))
    assert "could not be decoded" in load_image_failure(builtin_registry, bomb)


# ---- 10: export -o to a folder or a read-only path ----------------------------------------

def test_export_to_a_folder_or_a_read_only_path_is_a_clear_error(tmp_path):
    w = exportable(tmp_path)
    for target, why in ((tmp_path, "a directory"), ("/proc/loom.json", "cannot write")):
        r = loom("export", w, "-o", target)
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr


# ---- 15: pixels checked from the header ---------------------------------------------------

def test_load_image_checks_the_pixel_limit_before_decoding(tmp_path, builtin_registry,
                                                           monkeypatch):
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2000, 2000, 8, 2, 0, 0, 0))
    fake = tmp_path / "big.png"  # a header, and image data that would not even decode
    fake.write_bytes(PNG_SIGNATURE + ihdr + chunk(b"IDAT", b"junk") + chunk(b"IEND", b""))
    monkeypatch.setenv("LOOM_MAX_PIXELS", "1000000")
    message = load_image_failure(builtin_registry, fake)
    assert "4,000,000 pixels is over the limit of 1,000,000" in message
    assert "LOOM_MAX_PIXELS" in message


def test_image_conversions_keep_their_values(tmp_path):
    import numpy as np
    import torch

    from nodes._tensors import pil_to_tensors, to_uint8

    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    image, mask = pil_to_tensors(Image.fromarray(rgba, "RGBA"))
    want = rgba.astype(np.float32) / 255.0
    assert torch.equal(image[0], torch.from_numpy(want[..., :3].transpose(2, 0, 1).copy()))
    assert torch.equal(mask[0, 0], torch.from_numpy(1.0 - want[..., 3]))
    assert (to_uint8(image) == rgba[..., :3]).all()


_PEAK_PROBE = """
import resource, sys
import numpy as np, torch
from PIL import Image
from nodes._tensors import pil_to_tensors, to_uint8
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
image = torch.rand(1, 3, 4096, 4096)
p0 = peak(); to_uint8(image); p1 = peak()
del image
img = Image.fromarray(np.zeros((4096, 4096, 4), dtype=np.uint8), "RGBA")
img.load()
p2 = peak(); pil_to_tensors(img); p3 = peak()
print(p1 - p0, p3 - p2)
"""


def test_image_conversions_make_no_extra_full_size_float_copies():
    # a 4096-square RGB float image is 192 MiB, its 8-bit form 48 MiB
    r = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    to_bytes, to_tensors = map(int, r.stdout.split())
    assert to_bytes < 320  # one float copy and the bytes (two or three float copies before)
    assert to_tensors < 420  # the outputs (192 + 64 MiB) and 8-bit copies, one float step


# ---- 16: control characters in a save prefix ----------------------------------------------

@pytest.mark.parametrize("prefix", ["a\nb", "x\x1b[2Jy", "tab\there", "del\x7f", "c1\x9b"])
def test_save_prefixes_with_control_characters_are_refused(tmp_path, builtin_registry, prefix):
    r = run_graph(builtin_registry, tmp_path, filename_prefix=prefix)
    f = r.failures["save"]
    assert f.input == "filename_prefix" and "control characters" in f.message
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


# ---- property: random bytes never give a traceback ----------------------------------------

def _cli(argv) -> tuple[int, str]:
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, err.getvalue()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), png=st.booleans())
def test_random_bytes_as_a_workflow_or_png_never_give_a_traceback(data, png):
    if png:
        data = PNG_SIGNATURE + data
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("f.png" if png else "f.json")
        path.write_bytes(data)
        for command in ("validate", "extract", "import"):
            rc, err = _cli([command, str(path)])
            assert rc in (0, 2), (command, rc, err)
            assert "Traceback" not in err
        try:
            wf.loads(data.decode("utf-8", "replace"))
        except WorkflowError:
            pass


def test_random_png_bytes_in_a_real_process(tmp_path):
    path = tmp_path / "r.png"
    path.write_bytes(PNG_SIGNATURE + chunk(b"zTXt", b"prompt\0\0" + os.urandom(64))
                     + struct.pack(">I", 1 << 31) + b"tEXt")
    r = loom("extract", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
