import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_engine_is_strictly_typed():
    """mypy --strict over engine/, as configured in pyproject.toml's [tool.mypy]."""
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if mypy is None:
        pytest.fail("mypy is not installed; it comes with the [test] extra")
    r = subprocess.run([mypy, "--no-incremental", "--config-file", "pyproject.toml"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
