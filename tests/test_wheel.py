"""Loom installs from a wheel: built from the checkout, installed into a fresh venv, it runs
the bundled demo workflow from another folder with the resources it carries as package
data (not the checkout's). Offline: the venv reaches the test interpreter's dependencies
through a .pth line, which appends their folder without running its .pth files, so the
checkout's editable install stays out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_wheel_installs_and_runs_the_demo_workflow_elsewhere(tmp_path):
    src = tmp_path / "src"
    for name in ("pyproject.toml", "setup.py", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    for name in ("app", "engine", "nodes", "resources"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w",
                            str(tmp_path / "dist")], cwd=src, env=env, capture_output=True,
                           text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("loom-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "loom-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install",
                              "--no-deps", "--no-index", "-q", str(wheel)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.update(LOOM_MODELS="", HOME=str(elsewhere), XDG_CONFIG_HOME=str(elsewhere),
               LOOM_CACHE_DIR=str(elsewhere / "cache"))
    where = subprocess.run([str(py), "-c", "import app, nodes; from engine.resources import "
                            "RESOURCES; print(app.__file__); print(nodes.__file__); "
                            "print(RESOURCES)"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    paths = [Path(p) for p in where.stdout.split()]
    assert all(p.is_relative_to(site) for p in paths), paths  # the installed copy runs
    resources = paths[-1]
    assert resources.name == "loom_resources"

    run = subprocess.run([str(venv / "bin" / "loom"), "run",
                          str(resources / "workflows" / "shapes_txt2img.json"),
                          "--set", "latent.batch_size=1", "--set", "sampler.steps=4",
                          "--out", str(elsewhere / "out"), "--no-disk-cache"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in (elsewhere / "out").glob("*.png")) == ["shapes_00001.png"]
