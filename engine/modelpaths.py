"""Model folders, in the layout ComfyUI users already have: a root with `checkpoints`,
`diffusers`, `loras`, `vae`, `controlnet`, `upscale_models`, `hair`.

Roots come from, in order: `--models DIR` (given to `ModelFolders`), the `LOOM_MODELS`
environment variable (os.pathsep-separated), the user config file
(`<config dir>/loom/config.toml`: `models = ["/path", ...]` and optionally
`comfyui_extra_model_paths = "/path/extra_model_paths.yaml"`), and the bundled models.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

KINDS = ("checkpoints", "diffusers", "loras", "vae", "controlnet", "upscale_models", "hair",
         "diffusion_models")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
# ComfyUI's extra_model_paths.yaml keys that differ from ours
_COMFY_KEYS = {"unet": "diffusion_models", "diffusion_models": "diffusion_models",
               "upscale_models": "upscale_models", "controlnet": "controlnet",
               "t2i_adapter": "controlnet", "loras": "loras", "vae": "vae",
               "checkpoints": "checkpoints", "diffusers": "diffusers"}


class ModelNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    kind: str
    name: str  # relative to its kind folder, with forward slashes
    path: Path
    root: Path


def config_file() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("loom", appauthor=False)) / "config.toml"


class ModelFolders:
    def __init__(self, roots: list[str | os.PathLike[str]] | None = None, *,
                 use_env: bool = True, use_config: bool = True,
                 bundled: Path | None = None):
        self.roots: list[Path] = [Path(r).expanduser() for r in roots or []]
        self.extra: dict[str, list[Path]] = {k: [] for k in KINDS}
        if use_env and os.environ.get("LOOM_MODELS"):
            self.roots += [Path(p).expanduser() for p in
                           os.environ["LOOM_MODELS"].split(os.pathsep) if p]
        if use_config:
            self._read_config(config_file())
        self.bundled = bundled
        if bundled is not None:
            self.roots.append(bundled)

    def _read_config(self, path: Path) -> None:
        if not path.is_file():
            return
        with open(path, "rb") as f:
            data = tomllib.load(f)
        self.roots += [Path(p).expanduser() for p in data.get("models", [])]
        comfy = data.get("comfyui_extra_model_paths")
        if comfy:
            self.add_comfyui_yaml(Path(comfy).expanduser())

    def add_comfyui_yaml(self, path: Path) -> None:
        """Read ComfyUI's extra_model_paths.yaml: sections with a base_path and
        per-kind folders (several per kind, one per line)."""
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        for section in data.values():
            if not isinstance(section, dict):
                continue
            base = Path(str(section.get("base_path", path.parent))).expanduser()
            if not base.is_absolute():
                base = path.parent / base
            for key, value in section.items():
                kind = _COMFY_KEYS.get(key)
                if kind is None or not isinstance(value, str):
                    continue
                for line in value.splitlines():
                    if line.strip():
                        self.extra[kind].append(base / line.strip())

    def is_bundled(self, entry: ModelEntry) -> bool:
        return self.bundled is not None and entry.root.parent == self.bundled

    def folders(self, kind: str) -> list[Path]:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; one of {KINDS}")
        return [r / kind for r in self.roots] + self.extra[kind]

    def list(self, kind: str) -> list[ModelEntry]:
        out, seen = [], set()
        for folder in self.folders(kind):
            if not folder.is_dir():
                continue
            for entry in sorted(_walk(folder, kind)):
                name = entry.relative_to(folder).as_posix()
                if name not in seen:
                    seen.add(name)
                    out.append(ModelEntry(kind, name, entry, folder))
        return out

    def find(self, kind: str, name: str) -> Path:
        """A model by its name in a kind folder, or an absolute / relative path."""
        p = Path(name).expanduser()
        if p.is_absolute() and p.exists():
            return p
        for folder in self.folders(kind):
            cand = folder / name
            if cand.exists():
                return cand
        if p.exists():
            return p.resolve()
        looked = ", ".join(str(f) for f in self.folders(kind)) or "(no model folders set)"
        raise ModelNotFound(f"no {kind} model named {name!r}; looked in {looked}")


def _walk(folder: Path, kind: str) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        if d.name.endswith(".config"):  # a sidecar describing a single-file checkpoint
            dirnames.clear()
            continue
        if (d / "model_index.json").is_file() or (kind == "diffusers" and (d / "unet").is_dir()):
            out.append(d)
            dirnames.clear()
            continue
        if kind in ("diffusers", "hair") and d != folder:
            continue
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        for f in filenames:
            if f.lower().endswith(MODEL_SUFFIXES):
                out.append(d / f)
        if kind == "hair" and d == folder:
            out += [folder / n for n in dirnames]
            dirnames.clear()
    return out
