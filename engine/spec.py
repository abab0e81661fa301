"""Declarative node specs: typed inputs with defaults, bounds and choices; typed outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .limits import pixels_problem
from .modelpaths import ModelKind
from .protocols import FileHash, ModelFinder, PathResolver
from .types import PRIMITIVES, LinkType, T, link_type

if TYPE_CHECKING:
    from .context import NodeContext


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

SEED_MAX = 2**64 - 1


def _stat_print(path: Any) -> Any:
    import os

    if path is None:
        return None
    try:
        if os.path.isdir(path):  # a diffusers folder: its newest file decides
            newest = max((os.stat(os.path.join(d, f)).st_mtime_ns
                          for d, _, fs in os.walk(path) for f in fs), default=0)
            return [str(path), "dir", newest]
        st = os.stat(path)
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return None


@dataclass(frozen=True)
class Input:
    name: str
    type: LinkType
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    multiline: bool = False
    # the kind of file this STRING names: "image", ..., or a ModelKind (a model folder)
    file: str | None = None
    description: str = ""
    ui_only: bool = False  # an editor setting (e.g. seed control); not part of the signature

    @property
    def is_widget(self) -> bool:
        """Primitive inputs show as widgets; any of them may be wired instead."""
        return self.type in PRIMITIVES

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.optional

    def expected(self) -> str:
        """Words for what this input accepts, used in every error about it."""
        t = self.type
        if t in (T.int, T.seed, T.float):
            kind = {T.int: "an integer", T.seed: "a seed (integer)", T.float: "a number"}[t]
            lo, hi = self.min, self.max
            if t == T.seed:
                lo, hi = 0 if lo is None else lo, SEED_MAX if hi is None else hi
            if lo is not None and hi is not None:
                return f"{kind} from {_num(lo)} to {_num(hi)}"
            if lo is not None:
                return f"{kind} of at least {_num(lo)}"
            if hi is not None:
                return f"{kind} of at most {_num(hi)}"
            return kind
        if t == T.choice:
            return "one of " + ", ".join(repr(c) for c in self.choices or ())
        if t == T.bool:
            return "true or false"
        if t == T.string:
            return "a file path" if self.file else "text"
        return t.value

    def coerce(self, value: Any) -> tuple[bool, Any]:
        """Check a primitive value against type and bounds: (ok, value as the node gets it)."""
        t = self.type
        if t in (T.int, T.seed):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, value
            if isinstance(value, float):
                if not value.is_integer():
                    return False, value
                value = int(value)
            lo = self.min if self.min is not None else (0 if t == T.seed else None)
            hi = self.max if self.max is not None else (SEED_MAX if t == T.seed else None)
            ok = (lo is None or value >= lo) and (hi is None or value <= hi)
            return ok, value
        if t == T.float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False, value
            try:
                value = float(value)
            except OverflowError:
                return False, value
            if not math.isfinite(value):
                return False, value
            ok = (self.min is None or value >= self.min) and (self.max is None or value <= self.max)
            return ok, value
        if t == T.string:
            return isinstance(value, str), value
        if t == T.bool:
            return isinstance(value, bool), value
        if t == T.choice:
            return isinstance(value, str) and value in (self.choices or ()), value
        return True, value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# Short constructors so node specs read like signatures.
def In(name: str, type: LinkType | str, *, optional: bool = False,
       description: str = "") -> Input:
    return Input(name, link_type(type), optional=optional, description=description)


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None,
        step: int | None = None, description: str = "") -> Input:
    return Input(name, T.int, default, min, max, step, description=description)


def Float(name: str, default: float = 0.0, *, min: float | None = None,
          max: float | None = None, step: float | None = None, description: str = "") -> Input:
    return Input(name, T.float, default, min, max, step, description=description)


def String(name: str, default: Any = "", *, multiline: bool = False, file: str | None = None,
           description: str = "") -> Input:
    return Input(name, T.string, default, multiline=multiline, file=file, description=description)


def Bool(name: str, default: bool = False, *, description: str = "") -> Input:
    return Input(name, T.bool, default, description=description)


def Choice(name: str, choices: tuple[str, ...] | list[str], default: str | None = None, *,
           description: str = "") -> Input:
    choices = tuple(choices)
    return Input(name, T.choice, choices[0] if default is None else default, choices=choices,
                 description=description)


def Seed(name: str = "seed", default: int = 0, *, description: str = "") -> Input:
    return Input(name, T.seed, default, description=description)


SEED_CONTROLS = ("fixed", "randomize", "increment", "decrement")


def SeedControl(name: str = "control_after_run", default: str = "fixed") -> Input:
    """What the editor does to a seed after each run. Not part of the signature."""
    return Input(name, T.choice, default, choices=SEED_CONTROLS, ui_only=True,
                 description="what the editor does to the seed after each run")


@dataclass(frozen=True)
class Output:
    name: str
    type: LinkType
    description: str = ""


@dataclass
class FingerprintEnv:
    """What a fingerprint hook may look at beyond the node's own values."""

    resolve_path: PathResolver
    file_hash: FileHash  # memoised by path, size, mtime
    output_dir: str = ""
    find_model: ModelFinder | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Node:
    """Base of every node. Subclasses declare the class attributes and implement `run`.

    Nodes are stateless: `run` gets everything through its arguments and returns a dict
    keyed by output name (output nodes may add a `ui` entry with what to show or report).
    """

    type: ClassVar[str]
    version: ClassVar[int] = 1
    title: ClassVar[str] = ""
    category: ClassVar[str] = "misc"
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    output: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True
    aliases: ClassVar[tuple[str, ...]] = ()
    # (batch, width, height) inputs of a node that makes an image of that size (batch may be
    # None for one image): the default `check` holds the size to engine.limits.max_pixels()
    pixel_inputs: ClassVar[tuple[str | None, str, str] | None] = None

    input_map: ClassVar[dict[str, Input]]
    output_map: ClassVar[dict[str, Output]]
    file_inputs: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" not in cls.__dict__:
            return  # an abstract helper base
        names = [i.name for i in cls.inputs]
        if len(set(names)) != len(names):
            raise TypeError(f"node {cls.type}: duplicate input names {names}")
        outs = [o.name for o in cls.outputs]
        if len(set(outs)) != len(outs) or "ui" in outs:
            raise TypeError(f"node {cls.type}: bad output names {outs}")
        for i in cls.inputs:
            if i.default is not REQUIRED and i.is_widget:
                ok, _ = i.coerce(i.default)
                if not ok:
                    raise TypeError(f"node {cls.type}: default of {i.name} is not {i.expected()}")
        cls.input_map = {i.name: i for i in cls.inputs}
        cls.output_map = {o.name: o for o in cls.outputs}
        cls.file_inputs = tuple(i.name for i in cls.inputs if i.file)
        if not cls.title:
            cls.title = cls.type.replace("_", " ").title()

    def run(self, ctx: NodeContext, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def fingerprint(cls, values: dict[str, Any], env: FingerprintEnv) -> Any:
        """Extra signature ingredients. By default: content hashes of the files named;
        for model files (gigabytes; inputs whose `file` is a ModelKind) their resolved
        path, size and modification time."""
        out: dict[str, Any] = {}
        for name in cls.file_inputs:
            value = values.get(name)
            if not (isinstance(value, str) and value):
                continue
            kind = cls.input_map[name].file
            if isinstance(kind, ModelKind):
                path = env.find_model(kind, value) if env.find_model else None
                out[name] = _stat_print(path)
            else:
                path = env.resolve_path(value)
                out[name] = env.file_hash(path) if path is not None else None
        return out or None

    @classmethod
    def constant(cls, params: dict[str, Any]) -> dict[str, Any] | None:
        """Outputs known without running (primitives), so a file path wired from one can
        be fingerprinted when planning. None for every other node."""
        return None

    @classmethod
    def checks_values(cls) -> bool:
        """Whether `check` looks at values at all (validation gathers them only then)."""
        return cls.pixel_inputs is not None or overrides(cls, "check")

    @classmethod
    def check(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems of input values that their bounds alone cannot catch, as (input, message)
        pairs, found when validating. `values` holds the inputs known before running (set or
        default widget values, and values wired from primitives)."""
        if cls.pixel_inputs is None:
            return []
        names = [n for n in cls.pixel_inputs if n]
        sizes = [v for n in names if isinstance(v := values.get(n), int)
                 and not isinstance(v, bool)]
        if len(sizes) != len(names):
            return []
        why = pixels_problem(*([1] * (3 - len(sizes)) + sizes))
        return [(cls.pixel_inputs[1], f"{' x '.join(names)}: {why}")] if why else []

    @classmethod
    def migrate(cls, from_version: int, params: dict[str, Any]) -> dict[str, Any]:
        """Turn params saved by `from_version` into those of `from_version + 1`."""
        return params

    @classmethod
    def still_valid(cls, result: dict[str, Any]) -> bool:
        """Whether a cached result may be served; e.g. Save Image checks its files exist."""
        return True

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The spec as plain data (for `loom nodes --json` and the editor)."""

        def inp(i: Input) -> dict[str, Any]:
            d: dict[str, Any] = {"name": i.name, "type": i.type.value}
            if i.default is not REQUIRED:
                d["default"] = i.default
            for key in ("min", "max", "step", "file"):
                if getattr(i, key) is not None:
                    d[key] = getattr(i, key)
            if i.choices is not None:
                d["choices"] = list(i.choices)
            if i.optional:
                d["optional"] = True
            if i.multiline:
                d["multiline"] = True
            if i.description:
                d["description"] = i.description
            if i.ui_only:
                d["ui_only"] = True
            return d

        return {
            "type": cls.type, "version": cls.version, "title": cls.title,
            "category": cls.category, "description": cls.description,
            "inputs": [inp(i) for i in cls.inputs],
            "outputs": [{"name": o.name, "type": o.type.value} for o in cls.outputs],
            "output": cls.output, "cacheable": cls.cacheable, "aliases": list(cls.aliases),
        }


def overrides(cls: type[Node], hook: str) -> bool:
    """Whether a node class defines its own classmethod `hook` instead of Node's."""
    return getattr(cls, hook).__func__ is not getattr(Node, hook).__func__
