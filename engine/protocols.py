"""The seams between the engine and what plugs into it, as Protocols: the executor, a node's
context and the ComfyUI converter take any object with these members (the runtime's
ModelManager and ModelFolders, or a test's own), so they are typed without importing torch."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .modelpaths import ModelEntry, ModelKind
    from .runtime.device import DeviceChoice

# a file named in a param -> the path it means (absolute, or under the workflow's folder / cwd)
PathResolver = Callable[[str], Path | None]
# a file -> its content hash (None when it cannot be read)
FileHash = Callable[[Path], str | None]
# (model kind, name) -> the model's file, or None when it is not in the model folders
ModelFinder = Callable[[str, str], Path | None]


class ModelPaths(Protocol):
    """Where model files are looked up by kind and name (engine.modelpaths.ModelFolders)."""

    def folders(self, kind: ModelKind | str) -> builtins.list[Path]: ...

    def find(self, kind: ModelKind | str, name: str) -> Path:
        """The file, or LookupError naming what was looked for and where."""
        ...

    def list(self, kind: ModelKind | str) -> builtins.list[ModelEntry]: ...


class Models(Protocol):
    """What nodes and the executor use of the model manager (engine.runtime.models)."""

    @property
    def paths(self) -> ModelPaths | None: ...

    @property
    def device(self) -> DeviceChoice: ...

    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        """The loaded model under `key`, loading it with `loader` the first time."""
        ...

    def retry_on_oom(self, fn: Callable[[], Any], what: str, module: Any = None) -> Any: ...
