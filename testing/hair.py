"""A tiny random-weight Stable-Hair set for tests and benchmarks, in exactly the released
file layout and key names, built on a tiny SD 1.5-shaped UNet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes.hair.model import PARTS, classes, controlnet_config, hair_processors


def build_stable_hair(root: str | Path, unet_folder: str | Path, name: str = "tiny-hair",
                      seed: int = 0, fmt: str = "bin") -> Path:
    """`root/hair/NAME/stage1/pytorch_model.bin`, `stage2/pytorch_model{,_1,_2}.bin` (or
    .safetensors), and `config.json` (the UNet config, which SD 1.5-sized sets omit).
    ControlNet zero convolutions and hair-attention layers get small random weights, so
    every part changes the result."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    config = {k: v for k, v in json.loads((Path(unet_folder) / "config.json").read_text())
              .items() if not k.startswith("_")}
    LatentControlNet = classes()[0]
    extractor = UNet2DConditionModel.from_config(config)
    parts: dict[str, Any] = {
        "bald_converter": LatentControlNet.build(controlnet_config(config)),
        "hair_extractor": extractor,
        "hair_attention": hair_processors(extractor),
        "identity_net": LatentControlNet.build(controlnet_config(config)),
    }
    with torch.no_grad():
        for part in ("bald_converter", "identity_net"):
            for n, p in parts[part].named_parameters():
                if n.startswith("controlnet_") or n.startswith("conv_in_2"):
                    p.normal_(0, 0.05)
        for p in parts["hair_attention"].parameters():
            p.normal_(0, 0.2)
    folder = Path(root) / "hair" / name
    for part, stem in PARTS.items():
        path = folder / (stem + (".bin" if fmt == "bin" else ".safetensors"))
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.contiguous() for k, v in parts[part].state_dict().items()}
        if fmt == "bin":
            torch.save(sd, path)
        else:
            from safetensors.torch import save_file

            save_file(sd, path)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder
