#!/usr/bin/env python3
"""Set up Loom's virtual environment (once, and again when pyproject.toml changes) and run
a job in it. Needs nothing but Python 3.11+.

    python3 tools/dev.py demo      # the bundled text-to-image workflow, headless -> output/
    python3 tools/dev.py test      # the whole test suite
    python3 tools/dev.py edit      # the editor
    python3 tools/dev.py loom ...  # any loom command
    python3 tools/dev.py bench X   # bench/X
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LOOM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 the user has
        sys.exit(f"Loom needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".loom-stamp"
    want = hashlib.sha256(b"".join((ROOT / name).read_bytes()
                                   for name in ("pyproject.toml", "setup.py"))).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return
    if not PY.exists():
        print(f"creating the virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing Loom and its dependencies (first time: a few minutes)", flush=True)
    subprocess.run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    "-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    job, rest = (argv[0], argv[1:]) if argv else ("demo", [])
    ensure_env()
    env = dict(os.environ)
    if job == "test":
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        cmd = [str(PY), "-m", "pytest", *rest]
    elif job == "demo":
        cmd = [str(BIN / "loom"), "run", str(ROOT / "resources/workflows/shapes_txt2img.json"),
               "--out", str(ROOT / "output"), *rest]
    elif job == "edit":
        cmd = [str(BIN / "loom"), "edit", *rest]
    elif job == "loom":
        cmd = [str(BIN / "loom"), *rest]
    elif job == "bench":
        cmd = [str(PY), str(ROOT / "bench" / (rest[0] if rest else "engine.py")), *rest[1:]]
    else:
        print(__doc__)
        return 2
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
