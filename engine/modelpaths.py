"""Model folders, in the layout ComfyUI users already have: a root with one folder per
model kind. The engine names no kind: node packages register theirs
(`Registry.add_model_kind`) with the folder's layout and file suffixes.

Roots come from, in order: `--models DIR` (given to `ModelFolders`), the `LOOM_MODELS`
environment variable (os.pathsep-separated), the user config file
(`<config dir>/loom/config.toml`: `models = ["/path", ...]` and optionally
`comfyui_extra_model_paths = "/path/extra_model_paths.yaml"`), and the bundled models.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


class Layout(StrEnum):
    tree = "tree"  # model files at any depth
    top = "top"  # model files directly in the kind folder only
    folders = "folders"  # model files and every folder directly in the kind folder


class ModelKind(str):
    """A kind of model and its folder under each root; equal to the folder's name.

    Wherever it sits, a folder holding one of `markers` is one model (a diffusers
    pipeline). `comfyui_keys` are the names of this kind in ComfyUI's
    extra_model_paths.yaml; `with_kinds` are other kinds a picker for this one lists too.
    """

    layout: Layout
    suffixes: tuple[str, ...]
    markers: tuple[str, ...]
    comfyui_keys: tuple[str, ...]
    with_kinds: tuple[str, ...]
    description: str

    def __new__(cls, folder: str, *, layout: Layout = Layout.tree,
                suffixes: Iterable[str] = MODEL_SUFFIXES,
                markers: Iterable[str] = ("model_index.json",), comfyui_keys: Iterable[str] = (),
                with_kinds: Iterable[str] = (), description: str = "") -> ModelKind:
        if not folder or "/" in folder or "\\" in folder or folder.startswith("."):
            raise ValueError(f"model kind {folder!r}: a plain folder name")
        self = super().__new__(cls, folder)
        self.layout = Layout(layout)
        self.suffixes = tuple(x.lower() for x in suffixes)
        self.markers = tuple(markers)
        self.comfyui_keys = tuple(comfyui_keys)
        self.with_kinds = tuple(with_kinds)
        self.description = description
        return self

    def __repr__(self) -> str:
        return f"ModelKind({str(self)!r})"


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
                 bundled: Path | None = None, kinds: Mapping[str, ModelKind] | None = None):
        """`kinds`: the model kinds to know, by name; by default those of the node
        packages installed (the default registry's)."""
        self.roots: list[Path] = [Path(r).expanduser() for r in roots or []]
        self._kinds = dict(kinds) if kinds is not None else None
        self._comfyui: dict[str, list[Path]] = {}  # extra folders by ComfyUI's key
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
                if key == "base_path" or not isinstance(value, str):
                    continue
                for line in value.splitlines():
                    if line.strip():
                        self._comfyui.setdefault(key, []).append(base / line.strip())

    @property
    def kinds(self) -> Mapping[str, ModelKind]:
        if self._kinds is None:
            from .registry import default_registry

            self._kinds = dict(default_registry().model_kinds)
        return self._kinds

    def kind(self, kind: ModelKind | str) -> ModelKind:
        if isinstance(kind, ModelKind):
            return kind
        found = self.kinds.get(kind)
        if found is None:
            raise ValueError(f"unknown model kind {kind!r}; one of {tuple(self.kinds)}")
        return found

    def is_bundled(self, entry: ModelEntry) -> bool:
        return self.bundled is not None and entry.root.parent == self.bundled

    def folders(self, kind: ModelKind | str) -> list[Path]:
        k = self.kind(kind)
        return [r / k for r in self.roots] + [p for key in k.comfyui_keys
                                              for p in self._comfyui.get(key, [])]

    def list(self, kind: ModelKind | str) -> list[ModelEntry]:
        k = self.kind(kind)
        out, seen = [], set()
        for folder in self.folders(k):
            if not folder.is_dir():
                continue
            for entry in sorted(_walk(folder, k)):
                name = entry.relative_to(folder).as_posix()
                if name not in seen:
                    seen.add(name)
                    out.append(ModelEntry(str(k), name, entry, folder))
        return out

    def find(self, kind: ModelKind | str, name: str) -> Path:
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


def _walk(folder: Path, kind: ModelKind) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        d = Path(dirpath)
        if d.name.endswith(".config"):  # a sidecar describing a single-file checkpoint
            dirnames.clear()
            continue
        if any((d / m).exists() for m in kind.markers):
            out.append(d)
            dirnames.clear()
            continue
        if kind.layout is not Layout.tree and d != folder:
            continue
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        out += [d / f for f in filenames if f.lower().endswith(kind.suffixes)]
        if kind.layout is Layout.folders:
            out += [folder / n for n in dirnames]
            dirnames.clear()
    return out
