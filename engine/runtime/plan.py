"""The models a run will use, node by node, known before it starts: what the model manager
plans its memory with (evict the model needed furthest ahead, prefetch the next one).

A node uses the models whose refs arrive on its inputs. A value already computed (a cached
output, or a node that ran) is looked into for its `ModelRef`s; a value still to come is
predicted: an output carries the models of the node's inputs of the same link type (a
patch node's MODEL out carries its MODEL in) plus a placeholder for what the node itself
may load. Placeholders stand for models not known yet (a loader that has not run); they
are never resident, so they never decide an eviction. After each node runs the plan is
made again from its real outputs, so a loader's model is known from then on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable


def model_keys(value: Any) -> set[str]:
    """The manager keys of every ModelRef inside a value (dicts, sequences, dataclasses)."""
    from .models import ModelRef  # models imports this module

    def walk(v: Any, depth: int) -> Iterator[str]:
        if isinstance(v, ModelRef):
            yield v.key
        elif depth > 6 or v is None or isinstance(v, str | bytes | int | float | bool):
            return
        elif isinstance(v, dict):
            for x in v.values():
                yield from walk(x, depth + 1)
        elif isinstance(v, list | tuple):
            for x in v:
                yield from walk(x, depth + 1)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                yield from walk(getattr(v, f.name, None), depth + 1)

    return set(walk(value, 0))


Uses = list[frozenset[str]]  # per step of the run: the keys (and placeholders) it uses


def placeholder(nid: str, output: str) -> str:
    return f"?{nid}.{output}"  # never a manager key: those start with a kind prefix


Ports = tuple[dict[str, str], dict[str, str]]  # a node's (input -> type, output -> type)


def use_plan(run: list[str], sources: dict[str, dict[str, Any]],
             ports: Callable[[str], Ports],
             known: Callable[[str], dict[str, Any] | None]) -> Uses:
    """The models each node of `run` uses, in run order. `sources[nid]` maps an input to
    its Link; `ports(nid)` gives the link types of a node's inputs and outputs; `known(nid)`
    the outputs a node already has (cached or computed), or None."""
    predicted: dict[tuple[str, str], frozenset[str]] = {}
    memo: dict[str, dict[str, Any] | None] = {}

    def carried(src: str, output: str) -> frozenset[str]:
        if src not in memo:
            memo[src] = known(src)
        outs = memo[src]
        if outs is not None:
            return frozenset(model_keys(outs.get(output)))
        return predicted.get((src, output), frozenset())

    uses: Uses = []
    for nid in run:
        by_input = {name: carried(l.src, l.src_output) for name, l in sources[nid].items()}
        uses.append(frozenset().union(*by_input.values()))
        ins, outs = ports(nid)
        for out, t in outs.items():  # what its outputs will carry, if it has not run yet
            same = (keys for name, keys in by_input.items() if ins.get(name) == t)
            predicted[(nid, out)] = frozenset().union(*same) | {placeholder(nid, out)}
    return uses


def next_use(uses: Uses, key: str, step: int) -> int:
    """The first step at or after `step` that uses `key`; len(uses) when none does."""
    for i in range(max(step, 0), len(uses)):
        if key in uses[i]:
            return i
    return len(uses)


@runtime_checkable
class PlannedModels(Protocol):
    """A model manager that takes the run's plan (engine.runtime.models.ModelManager)."""

    def set_plan(self, uses: Uses | None, step: int = 0) -> None: ...

    def at_step(self, step: int) -> None: ...


def device_memory(device: str) -> int | None:
    """The device's total memory in bytes (the machine's for the CPU), None if unknown."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        return int(torch.cuda.mem_get_info(index if index is not None else 0)[1])
    if device == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            import os

            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None
