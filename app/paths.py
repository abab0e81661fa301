"""Where Loom keeps things: bundled resources, the user's cache and config folders."""

from __future__ import annotations

import os
from pathlib import Path

from engine.resources import RESOURCES  # noqa: F401  (app code finds it here too)


def cache_dir() -> Path:
    env = os.environ.get("LOOM_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("loom", appauthor=False))


def data_dir() -> Path:
    """Per-user state of the editor (recovery file). LOOM_DATA_DIR overrides it (tests)."""
    env = os.environ.get("LOOM_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("loom", appauthor=False))
