"""Peak memory of each node before a run: the weights resident while it runs plus its own
working memory (activations) for the requested size and batch.

Node packages supply an estimator per node type (`Registry.add_estimator`); the engine
walks the graph in dependency order handing each one the facts its inputs' producers
reported (a model's weights and shape, a latent's size), and adds up what stays resident.
A node without an estimator passes facts through: each output gets those of the first
input of its link type (a patching node's MODEL out is its MODEL in)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .protocols import ModelFinder
from .spec import REQUIRED

if TYPE_CHECKING:
    from .graph import Graph, Link

log = logging.getLogger("loom.estimates")

GIB = 1 << 30


@dataclass
class Estimate:
    """What one node's estimator says."""

    weights: dict[str, int] = field(default_factory=dict)  # model -> bytes it needs resident
    activations: int = 0  # bytes of its own working memory at the requested size
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # facts for downstream
    advice: str = ""  # what to change when this node's activations do not fit


@dataclass(frozen=True)
class EstimateEnv:
    """What an estimator may look at: the model folders and the compute dtypes."""

    find_model: ModelFinder | None = None
    dtype: str = "float32"
    vae_dtype: str = "float32"
    device: str = "cpu"

    def bytes_per(self, which: str = "model") -> int:
        dtype = self.vae_dtype if which == "vae" else self.dtype
        return 4 if dtype == "float32" else 2


# (widget values, facts of each linked input, env) -> the node's estimate
Estimator = Callable[[dict[str, Any], dict[str, dict[str, Any]], EstimateEnv], Estimate]


@dataclass
class NodeMemory:
    weights: int  # bytes of every model resident while the node runs
    activations: int
    advice: str = ""

    @property
    def peak(self) -> int:
        return self.weights + self.activations

    def to_dict(self) -> dict[str, int]:
        return {"peak": self.peak, "weights": self.weights, "activations": self.activations}


@dataclass
class MemoryEstimate:
    nodes: dict[str, NodeMemory]  # the nodes that will run, in run order
    limit: int | None = None  # the model budget, or the device's memory
    limit_name: str = "memory"

    @property
    def peak_node(self) -> str | None:
        return max(self.nodes, key=lambda n: self.nodes[n].peak, default=None)

    @property
    def peak(self) -> int:
        node = self.peak_node
        return self.nodes[node].peak if node is not None else 0

    @property
    def fits(self) -> bool:
        return self.limit is None or self.peak <= self.limit

    def warning(self) -> str | None:
        """What will not fit and what to change, or None."""
        node = self.peak_node
        if self.fits or node is None or self.limit is None:
            return None
        m = self.nodes[node]
        if m.activations > m.weights and m.advice:
            change = m.advice
        elif m.activations > m.weights:
            change = "use a smaller size or batch"
        else:
            change = ("offload models (a model budget), run fewer models in one graph, or "
                      "pick a lower-precision dtype")
        return (f"the run needs about {gib(m.peak)} at {node} ({gib(m.weights)} weights + "
                f"{gib(m.activations)} working memory), more than the {gib(self.limit)} of "
                f"{self.limit_name}: {change}")

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": {n: m.to_dict() for n, m in self.nodes.items()},
                "peak": self.peak, "peak_node": self.peak_node, "limit": self.limit,
                "fits": self.fits, "warning": self.warning()}


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 10 else f"{n / (1 << 20):.0f} MiB"


def node_facts(graph: Graph, order: list[str], sources: dict[str, dict[str, Link]],
               values: dict[str, dict[str, Any]], env: EstimateEnv) -> dict[str, Estimate]:
    """Each node's estimate, in dependency order."""
    reg = graph.registry
    out: dict[str, Estimate] = {}
    for nid in order:
        node = graph.nodes[nid]
        cls = reg[node.type]
        inputs = {name: out[l.src].outputs.get(l.src_output, {})
                  for name, l in sources[nid].items() if l.src in out}
        fn = reg.estimator(node.type)
        est = None
        if fn is not None:
            known = dict(values.get(nid, {}))
            for inp in cls.inputs:
                if inp.name not in known and inp.name not in sources[nid] \
                        and inp.default is not REQUIRED:
                    known[inp.name] = node.params.get(inp.name, inp.default)
            for name, l in sources[nid].items():  # values wired from primitives
                const = reg[graph.nodes[l.src].type].constant(graph.nodes[l.src].params)
                if const is not None and l.src_output in const:
                    known[name] = const[l.src_output]
            try:
                est = fn(known, inputs, env)
            except Exception as exc:  # an estimate never stops a run
                log.debug("no memory estimate for %s: %s", nid, exc)
        if est is None:
            est = Estimate()
            for o in cls.outputs:
                first = next((i.name for i in cls.inputs if i.type == o.type
                              and i.name in inputs), None)
                if first is not None:
                    est.outputs[o.name] = inputs[first]
        out[nid] = est
    return out


def estimate(facts: dict[str, Estimate], run: list[str], budget: int | None = None,
             limit: int | None = None, limit_name: str = "memory") -> MemoryEstimate:
    """Peaks of the nodes of `run`: each model stays resident from its first use on (as the
    model manager keeps it), up to the budget."""
    resident: dict[str, int] = {}
    nodes: dict[str, NodeMemory] = {}
    for nid in run:
        est = facts.get(nid, Estimate())
        resident.update(est.weights)
        held = sum(resident.values())
        if budget is not None:
            held = min(held, max(budget, sum(est.weights.values())))
        nodes[nid] = NodeMemory(held, est.activations, est.advice)
    return MemoryEstimate(nodes, limit, limit_name)
