"""Train every demo model in order, resuming whatever stopped, then export them:

    python -m training            # all of it (about 90 min on a 2-core CPU)
    python -m training export     # only write resources/models/ from finished runs
"""

from __future__ import annotations

import sys

from training.common import RUNS

STEPS = ("vae", "upscaler", "unet", "inpaint", "controlnet")


def main(argv: list[str]) -> None:
    import importlib

    only = argv[:1]
    for name in STEPS:
        if only and only[0] != name:
            continue
        if (RUNS / name / "done.json").exists() and not only:
            print(f"{name}: done")
            continue
        importlib.import_module(f"training.train_{name}").main(argv[1:] if only else [])
    if not only or only[0] == "export":
        from training.export import main as export

        export()


if __name__ == "__main__":
    main(sys.argv[1:])
