"""Hardening of the output cache and the executor against damaged, hostile or vanishing
cache entries, stale temp files, bad cache options and broken outputs (issue 22)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import testnodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Cache, DiskCache, Executor, Graph
from engine.cache import _encode_entry
from engine.errors import InputError
from engine.events import RunStarted
from engine.spec import Float, In, Node, Output
from engine.types import T
from engine.values import Latent

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "resources" / "workflows" / "example.json"
LOOM = [sys.executable, "-m", "app.cli"]


def loom(*args, prefix=LOOM):
    return subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=180)


# ---- small image nodes for in-process runs ---------------------------------------------

class Scale(Node):
    type = "scale"
    category = "test"
    inputs = (In("image", T.image), Float("factor", 0.5))
    outputs = (Output("image", T.image),)

    def run(self, ctx, image, factor=0.5):
        if image.shape[1] != 3:
            raise InputError("image", "an RGB image", image)
        return {"image": image * factor}


class ImageSink(Node):
    type = "image_sink"
    category = "test"
    output = True
    inputs = (In("image", T.image), Float("gain", 1.0))
    outputs = ()

    def run(self, ctx, image, gain=1.0):
        return {"ui": {"total": float(image.sum()) * gain}}


class Broken(Node):
    type = "broken"
    category = "test"
    inputs = (Float("fill", 1.0),)
    outputs = (Output("image", T.image),)

    def run(self, ctx, fill=1.0):
        import torch

        return {"image": torch.full((1, 3, 4, 4), -fill).log()}  # NaN, as a broken model gives


class Oom(Node):
    type = "oom"
    category = "test"
    inputs = ()
    outputs = (Output("image", T.image),)

    def run(self, ctx):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 1099511627776 bytes")


@pytest.fixture
def reg(test_registry):
    test_registry.register_all((Scale, ImageSink, Broken, Oom))
    return test_registry


def chain(reg, gain=1.0):
    """t -> a -> b -> out (the sink), and n -> s: images and plain values."""
    g = Graph(reg)
    t = g.add("tensor", "t", fill=1.0, size=8)
    a = g.add("scale", "a", image=t["image"], factor=0.5)
    b = g.add("scale", "b", image=a["image"], factor=4.0)
    g.add("image_sink", "out", image=b["image"], gain=gain)
    g.add("sink", "s", value=g.add("num", "n", value=7))
    return g


EXPECTED = {"out": {"ui": {"total": 2.0 * 3 * 8 * 8}}, "s": {"ui": {"value": 7}}}


def entries(root):
    return sorted(Path(root).glob("*/*.loomcache"))


def node_type_of(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8: 8 + n])["__metadata__"]["loom"])["node_type"]


def write_entry(path, outputs, node_type):
    """An entry that checks out byte for byte (a valid checksum) whatever it holds."""
    path.write_bytes(bytes(_encode_entry(outputs, node_type, 1 << 30)))


def fresh(root, **kw):
    return Executor(cache=Cache(disk=DiskCache(root)), **kw)


# ---- 1. never ok without outputs -------------------------------------------------------

def damage(path, how):
    if how == "zeroed":
        path.write_bytes(b"\0" * path.stat().st_size)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()


def test_run_with_damaged_entries_along_the_chain_recomputes_them(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = loom("run", EXAMPLE, "--out", out, "--cache-dir", cache)
    assert first.returncode == 0, first.stderr
    kept = 0
    for i, path in enumerate(entries(cache)):
        if node_type_of(path) == "load_image":
            kept += 1  # two intact entries: they must be served, and counted as cached
        else:
            damage(path, ("zeroed", "truncated", "deleted")[i % 3])
    assert kept == 2
    r = loom("run", EXAMPLE, "--out", out, "--cache-dir", cache, "--set",
             "save.filename_prefix=again")
    assert r.returncode == 0, r.stderr
    [png] = r.stdout.split()
    assert Path(png).is_file() and Path(png).name.startswith("again_")
    assert "8 node(s) computed, 2 from cache" in r.stderr
    assert "Traceback" not in r.stderr


def test_entries_removed_after_planning_do_not_matter(tmp_path, reg):
    fresh(tmp_path).run(chain(reg))
    ex = fresh(tmp_path)

    def evict(ev):  # another process clears the cache as soon as the run is planned
        if isinstance(ev, RunStarted):
            for p in entries(tmp_path):
                p.unlink()

    ex.events.subscribe(evict)
    r = ex.run(chain(reg, gain=1.0 + 1e-9))
    assert r.ok and r.computed == ["out"] and sorted(r.plan.cached) == ["b", "s"]


def test_a_value_lost_during_the_run_is_planned_again_once(reg):
    g = Graph(reg)
    t = g.add("tensor", "t", fill=1.0, size=4)
    g.add("mutate", "m", image=t["image"])  # fails, and drops t's value and entry
    g.add("image_sink", "out", image=g.add("scale", "a", image=t["image"])["image"])
    r = Executor().run(g, ["m", "out"])
    assert r.status == "failed" and set(r.failures) == {"m"}
    assert r["out"]["ui"]["total"] == pytest.approx(0.5 * 3 * 16)
    assert r.computed.count("t") == 2  # computed again for the node that still needed it


def test_a_value_lost_twice_fails_the_run_clearly(reg):
    g = Graph(reg)
    t = g.add("tensor", "t", fill=1.0, size=4)
    g.add("mutate", "m1", image=t["image"])
    g.add("mutate", "m2", image=t["image"])
    g.add("image_sink", "out", image=g.add("scale", "a", image=t["image"])["image"])
    r = Executor().run(g, ["m1", "m2", "out"])
    assert r.status == "failed" and set(r.failures) == {"m1", "m2", "a"}
    assert "was lost before use twice in a row" in r.failures["a"].message
    assert r.skipped == {"out": "produced no output"} and r.files == []


# ---- 2. entries are checked against what the node declares ------------------------------

def sig_path(ex, g, nid):
    return ex.cache.disk._path(ex.plan(g).signatures[nid])


@pytest.mark.parametrize("outputs", [
    None, [1, 2], "text", {}, {"image": "a string"}, {"image": 3},
    {"image": Latent(samples=None)}, {"image": {"__dataclass__": "x"}},
], ids=["null", "list", "string", "empty", "str-image", "int-image", "latent", "dict"])
def test_an_entry_of_the_wrong_kind_is_dropped_and_recomputed(tmp_path, reg, outputs):
    g = chain(reg)
    ex = fresh(tmp_path)
    ex.run(g)
    path = sig_path(ex, g, "b")
    write_entry(path, outputs, "scale")
    r = fresh(tmp_path).run(chain(reg, gain=2.0))
    assert r.ok and "b" in r.computed
    assert r["out"]["ui"]["total"] == 2 * EXPECTED["out"]["ui"]["total"]
    r2 = fresh(tmp_path).run(chain(reg, gain=3.0))  # the bad entry was replaced
    assert r2.ok and r2.computed == ["out"]


def test_flipped_tensor_bytes_are_detected(tmp_path, reg):
    g = chain(reg)
    ex = fresh(tmp_path)
    ex.run(g)
    path = sig_path(ex, g, "b")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the tensor data
    path.write_bytes(bytes(data))
    r = fresh(tmp_path).run(chain(reg, gain=2.0))
    assert r.ok and "b" in r.computed
    assert r["out"]["ui"]["total"] == 2 * EXPECTED["out"]["ui"]["total"]


def test_a_cached_value_a_consumer_rejects_is_dropped(tmp_path, reg):
    import torch

    g = chain(reg)
    ex = fresh(tmp_path)
    ex.run(g)
    write_entry(sig_path(ex, g, "a"), {"image": torch.zeros(1, 2, 8, 8)}, "scale")
    g.set_param("b", "factor", 2.0)  # b must run, on a's (bad) entry
    r = fresh(tmp_path).run(g)
    assert r.status == "failed" and "b" in r.failures
    assert "a's cached output, which has been dropped" in r.failures["b"].hint
    r2 = fresh(tmp_path).run(g)
    assert r2.ok and set(r2.computed) == {"a", "b", "out"}


def test_cached_files_outside_the_output_folder_are_never_reported(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert loom("run", EXAMPLE, "--out", out, "--cache-dir", cache).returncode == 0
    [save] = [p for p in entries(cache) if node_type_of(p) == "save_image"]
    (tmp_path / "x.png").write_bytes(b"x")  # exists, but outside the output folder
    for files in (["/etc/passwd"], [str(out / ".." / "x.png")]):
        write_entry(save, {"ui": {"files": files}}, "save_image")
        r = loom("run", EXAMPLE, "--out", out, "--cache-dir", cache)
        assert r.returncode == 0, r.stderr
        [png] = r.stdout.split()
        assert Path(png).is_file() and Path(png).resolve().parent == out.resolve()
        assert "1 node(s) computed, 1 from cache" in r.stderr  # save ran, on frame's entry


def test_entries_from_before_checksums_are_dropped(tmp_path, reg):
    g = chain(reg)
    ex = fresh(tmp_path)
    ex.run(g)
    path = sig_path(ex, g, "n")
    text = json.dumps({"outputs": {"value": 7}, "node_type": "num"})
    header = json.dumps({"__metadata__": {"loom": text}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert DiskCache(tmp_path).get(ex.plan(g).signatures["n"]) is None
    assert not path.exists()


# ---- 3. stale temp files ------------------------------------------------------------------

def test_cache_command_removes_stale_temp_files_and_leaves_fresh_ones(tmp_path):
    cache = tmp_path / "cache"
    assert loom("run", EXAMPLE, "--out", tmp_path / "out", "--cache-dir", cache).returncode == 0
    folder = entries(cache)[0].parent
    stale = folder / ".abc.loomcache.k2j4.tmp"
    stale.write_bytes(b"x" * (3 << 20))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = folder / ".def.loomcache.q8z1.tmp"
    live.write_bytes(b"y")
    r = loom("cache", "--cache-dir", cache)
    assert r.returncode == 0
    assert "removed 1 stale temp file(s)" in r.stdout and "3.0 MiB" in r.stdout
    assert "1 temp file(s) being written now" in r.stdout
    assert not stale.exists() and live.exists()
    stale.write_bytes(b"x")
    os.utime(stale, (old, old))
    r = loom("cache", "--cache-dir", cache, "--clear")
    assert r.returncode == 0 and "0 entries" in r.stdout and not stale.exists()


# ---- 10. cache command and options --------------------------------------------------------

DENY_UNLINK = [sys.executable, "-c", "import os, runpy\n"
               "def deny(path, *a, **k):\n"
               "    raise PermissionError(13, 'Permission denied', str(path))\n"
               "os.unlink = deny\n"
               "runpy.run_module('app.cli', run_name='__main__')"]


def test_clear_on_a_read_only_cache_says_so_and_fails(tmp_path):
    cache = tmp_path / "cache"
    assert loom("run", EXAMPLE, "--out", tmp_path / "out", "--cache-dir", cache).returncode == 0
    # a process for which nothing can be removed (as on a read-only disk, even for root)
    r = loom("cache", "--cache-dir", cache, "--clear", prefix=DENY_UNLINK)
    assert r.returncode == 1
    assert "10 entries" in r.stdout and "cannot remove" in r.stderr
    assert "Permission denied" in r.stderr and "was not cleared" in r.stderr
    assert "Traceback" not in r.stderr
    if os.geteuid() != 0:
        for d in cache.iterdir():
            d.chmod(0o555)
        try:
            r = loom("cache", "--cache-dir", cache, "--clear")
            assert r.returncode == 1 and "cannot remove" in r.stderr
        finally:
            for d in cache.iterdir():
                d.chmod(0o755)
    assert len(entries(cache)) == 10


@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "-1", "lots"])
def test_disk_cache_size_out_of_range_is_refused(tmp_path, value):
    r = loom("run", EXAMPLE, "--out", tmp_path, "--disk-cache-gb", value)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "argument --disk-cache-gb: expected a size in GiB" in r.stderr


def test_cache_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for args in (("run", EXAMPLE, "--out", tmp_path), ("cache",)):
        r = loom(*args, "--cache-dir", f)
        assert r.returncode == 2 and "is not a folder" in r.stderr


# ---- 12. non-finite outputs; 15. memory ---------------------------------------------------

def test_non_finite_output_fails_naming_node_and_output(tmp_path, reg):
    g = Graph(reg)
    g.add("image_sink", "out", image=g.add("broken", "bad")["image"])
    ex = fresh(tmp_path)
    r = ex.run(g)
    assert r.status == "failed" and set(r.failures) == {"bad"} and "out" in r.skipped
    assert "output 'image' of bad holds NaN or infinite values" in r.failures["bad"].message
    assert entries(tmp_path) == [] and r.plan.signatures["bad"] not in ex.cache


def test_allocation_failure_is_reported_as_out_of_memory(reg):
    g = Graph(reg)
    g.add("image_sink", "out", image=g.add("oom", "o")["image"])
    f = Executor().run(g).failures["o"]
    assert f.message.startswith("out of memory") and "smaller" in f.hint


def test_disk_write_out_of_memory_is_a_skipped_write(tmp_path, reg, monkeypatch):
    import engine.cache

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(engine.cache, "_encode_entry", no_memory)
    r = fresh(tmp_path).run(chain(reg))
    assert r.ok and r["out"] == EXPECTED["out"] and entries(tmp_path) == []


def test_entry_over_the_budget_is_skipped_before_encoding(tmp_path, monkeypatch):
    import torch

    import engine.values

    def refuse(*a, **k):
        raise AssertionError("encoded an entry that cannot fit")

    monkeypatch.setattr(engine.values, "encode", refuse)
    disk = DiskCache(tmp_path, budget_bytes=1000)
    assert disk.put("ab" * 20, {"image": torch.zeros(1, 3, 32, 32)}, "tensor") is False


def test_entry_round_trips_every_stored_dtype(tmp_path):
    import numpy as np
    import torch

    disk = DiskCache(tmp_path)
    outs = {"f": torch.rand(2, 3), "h": torch.rand(3).half(), "b": torch.rand(2).bfloat16(),
            "i": torch.arange(5), "m": torch.tensor([True, False]), "s": torch.tensor(3.5),
            "e": torch.zeros(0, 4), "a": np.arange(6, dtype=np.int16).reshape(2, 3),
            "x": {"__k": (1, 2.5, float("inf"), None, "t")}}
    assert disk.put("cd" * 20, outs, "x")
    got = DiskCache(tmp_path).get("cd" * 20).outputs
    for k in "fhbimse":
        assert got[k].dtype == outs[k].dtype and torch.equal(got[k], outs[k])
    assert np.array_equal(got["a"], outs["a"]) and got["x"] == outs["x"]


# ---- property: random damage never gives ok without outputs, nor an exception -----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=3),
    max_leaves=8)

damages = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("tree"), json_values),
    st.tuples(st.just("delete")),
)


def apply_damage(path, damage):
    kind, *args = damage
    data = path.read_bytes()
    if not data:
        return
    if kind == "bytes":
        path.write_bytes(args[0])
    elif kind == "truncate":
        path.write_bytes(data[: int(len(data) * args[0])])
    elif kind == "flip":
        pos = min(len(data) - 1, int(len(data) * args[0]))
        path.write_bytes(data[:pos] + bytes([data[pos] ^ args[1]]) + data[pos + 1:])
    elif kind == "tree":  # random JSON that checks out as an entry
        write_entry(path, args[0], "scale")
    else:
        path.unlink()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    reg = testnodes.registry()
    reg.register_all((Scale, ImageSink))
    root = tmp_path_factory.mktemp("pristine")
    assert fresh(root).run(chain(reg)).ok
    return reg, root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 100), damages), min_size=1, max_size=6),
       st.booleans())
def test_random_damage_never_gives_ok_without_outputs(pristine, harm, deeper):
    reg, root = pristine
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "c"
        shutil.copytree(root, cache)
        paths = entries(cache)
        for index, damage in harm:
            path = paths[index % len(paths)]
            if path.exists():
                apply_damage(path, damage)
        gain = 2.0 if deeper else 1.0  # with 2.0 the sink runs and reads b's entry
        r = fresh(cache).run(chain(reg, gain=gain))
        assert r.ok, r.failures
        assert r["out"]["ui"]["total"] == gain * EXPECTED["out"]["ui"]["total"]
        assert r["s"] == EXPECTED["s"] and r.files == []
        assert len(set(r.computed) | set(r.plan.cached)) == len(r.computed) + len(r.plan.cached)
