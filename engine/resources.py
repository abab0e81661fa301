"""Where Loom's bundled data lies (model configs, demo models, workflows, images): the
top-level `resources/` of a source checkout, or the `loom_resources` package data that a
wheel installs beside the packages (pyproject maps the one onto the other)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _find() -> Path:
    checkout = Path(__file__).resolve().parents[1]
    # a checkout first, so that a worktree run with PYTHONPATH uses its own files
    if (checkout / "pyproject.toml").is_file() and (checkout / "resources").is_dir():
        return checkout / "resources"
    spec = importlib.util.find_spec("loom_resources")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return checkout / "resources"


RESOURCES = _find()
