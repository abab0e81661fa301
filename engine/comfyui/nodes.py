"""The converter's own data: ComfyUI nodes of either format brought to one flat shape, and
the small readers of ComfyUI's loosely typed fields that every stage shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PLACEHOLDER_PREFIX = "comfyui:"
MODES = {2: "muted", 4: "bypassed"}
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")


class Source(NamedTuple):
    """Where an input's link comes from: a node id and its output slot."""

    node: str
    slot: int


class CLink(NamedTuple):
    """A UI-format link: ids are strings once read (a subgraph definition's stay as written
    until flattened, where -10 and -20 stand for its inputs and outputs); the slots are as
    the file gives them, checked when the links are named."""

    id: Any
    src: Any
    src_slot: Any
    dst: Any
    dst_slot: Any


@dataclass
class CNode:
    """One ComfyUI node, either format, flattened."""

    id: str
    type: str
    literals: dict[str, Any] = field(default_factory=dict)  # named input values
    widgets: list[Any] | None = None  # UI format: positional widget values
    links: dict[str, Source] = field(default_factory=dict)  # input -> where it comes from
    overrides: dict[str, Any] = field(default_factory=dict)  # named values that win
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    title: str | None = None
    pos: tuple[float, float] | None = None
    mode: str = "active"
    raw: Any = None
    reroutes: dict[str, list[list[float]]] = field(default_factory=dict)  # input -> points


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def mode(v: Any) -> str:
    return MODES.get(v, "active") if is_int(v) else "active"


def position(p: Any) -> tuple[float, float] | None:
    if isinstance(p, dict):
        p = [p.get("0"), p.get("1")]
    if isinstance(p, (list, tuple)) and len(p) >= 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in p[:2]):
        return (float(p[0]), float(p[1]))
    return None
