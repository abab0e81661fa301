"""Plans and runs a graph: only what the requested outputs need and the cache lacks.

A node's signature hashes its type, version, named input values, the signatures of the
outputs feeding it, and its fingerprint (file contents). Equal signature means the cached
output is reused; nothing else decides.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import values as V
from .cache import Cache
from .context import CancelToken, NodeContext
from .errors import Cancelled, InputError, NodeFailure, PartialOutput
from .estimates import EstimateEnv, MemoryEstimate, estimate, node_facts
from .events import (
    EventBus,
    NodeFailed,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
    RunStatus,
)
from .fsutil import FileHasher
from .graph import Graph, GraphNode, Link
from .order import consumer_counts, grouped_order
from .outputs import check_outputs, entry_problem, failure_of, no_grad
from .protocols import Models, PathResolver
from .runtime.plan import PlannedModels, Ports, device_memory, model_keys, use_plan
from .spec import REQUIRED, FingerprintEnv, Node, overrides
from .validate import InvalidGraph, analyze, errors, param_value

log = logging.getLogger("loom.executor")


@dataclass
class Plan:
    targets: list[str]
    run: list[str]  # nodes to compute, in execution order
    cached: list[str]  # nodes whose cached outputs are used
    signatures: dict[str, str]
    sources: dict[str, dict[str, Link]] = field(repr=False, default_factory=dict)
    volatile: set[str] = field(repr=False, default_factory=set)  # never cached (randomness)
    values: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)  # coerced
    order: list[str] = field(repr=False, default_factory=list)  # needed nodes, dependency order

    def to_dict(self) -> dict[str, list[str]]:
        return {"run": list(self.run), "cached": list(self.cached)}


@dataclass
class RunResult:
    run_id: str
    status: RunStatus
    plan: Plan
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per target node
    failures: dict[str, NodeFailure] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it did not run
    computed: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.OK

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        return self.outputs[node_id]


class _Replan(Exception):
    """A value the plan relied on was lost before use: (source node, consumer node)."""


class Executor:
    def __init__(self, cache: Cache | None = None, models: Models | None = None,
                 output_dir: str | os.PathLike[str] | None = None):
        self.cache = cache if cache is not None else Cache()
        if models is None:
            from .modelpaths import ModelFolders
            from .runtime.models import ModelManager

            models = ModelManager(paths=ModelFolders())
        self.models = models
        self.output_dir = Path(output_dir) if output_dir is not None else Path("output")
        self.events = EventBus()
        self.file_hash = FileHasher()

    # ---- planning --------------------------------------------------------------------------
    def resolver(self, graph: Graph) -> PathResolver:
        bases = [b for b in (graph.base_dir, Path.cwd()) if b is not None]

        def resolve(value: str) -> Path | None:
            p = Path(os.path.expanduser(value))
            if p.is_absolute():
                return p
            for base in bases:
                cand = base / p
                if cand.exists():
                    return cand
            return bases[0] / p if bases else p

        return resolve

    def _find_model(self, kind: str, name: str) -> Path | None:
        paths = self.models.paths
        if paths is None:
            return None
        try:
            return paths.find(kind, name)
        except LookupError:
            return None

    def plan(self, graph: Graph, targets: list[str] | None = None, *,
             nonce: str | None = None, fetch: dict[str, dict[str, Any]] | None = None) -> Plan:
        """Which nodes must run and which come from the cache. Raises InvalidGraph.

        With `fetch`, every cache entry the plan would rely on is read and checked now (one
        pass, as the plan is made): a good one lands in `fetch`, a bad one is dropped and
        its node planned to run. Nodes already in `fetch` count as cached."""
        targets = list(targets) if targets is not None else graph.output_nodes()
        problems, all_sources, values, checked = analyze(graph, targets or None)
        if errors(problems):
            raise InvalidGraph(problems)
        reg = graph.registry

        # What the targets need through the effective links (bypassed nodes skipped).
        sources: dict[str, dict[str, Link]] = {}
        stack = list(targets)
        while stack:
            nid = stack.pop()
            if nid not in sources:
                sources[nid] = all_sources[nid]
                stack.extend(l.src for l in sources[nid].values())
        # validation's order holds for the effective links too: each follows raw links
        order = [nid for nid in checked if nid in sources]

        sigs, volatile = self.signatures(graph, order, sources, nonce or uuid.uuid4().hex,
                                         values)

        # From the targets back: stop at cached nodes, nothing upstream runs for them.
        to_run: set[str] = set()
        cached: list[str] = []
        stack, seen = list(targets), set()
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            cls = reg[graph.nodes[nid].type]
            if (fetch is not None and nid in fetch) or (
                    nid not in volatile and self._cached(cls, sigs[nid], nid, fetch)):
                cached.append(nid)
                continue
            to_run.add(nid)
            stack.extend(l.src for l in sources[nid].values())
        run = grouped_order(targets, sources, to_run)
        position = {nid: i for i, nid in enumerate(order)}
        return Plan(targets, run, sorted(cached, key=position.__getitem__), sigs, sources,
                    volatile, values, order)

    def memory(self, graph: Graph, plan: Plan | None = None) -> MemoryEstimate:
        """Each node's peak memory before running it: of the plan's run, or (no plan) of
        every node the graph's outputs need. Raises InvalidGraph."""
        if plan is None:
            plan = self.plan(graph)
            plan.run = list(plan.order)
        device = self.models.device
        env = EstimateEnv(self._find_model, device.dtype, device.vae_dtype, device.device)
        facts = node_facts(graph, plan.order, plan.sources, plan.values, env)
        limit = device_memory(device.device)
        return estimate(facts, plan.run, getattr(self.models, "budget", None), limit,
                        f"{device.device} memory")

    def _cached(self, cls: type[Node], sig: str, nid: str,
                fetch: dict[str, dict[str, Any]] | None) -> bool:
        default_check = not overrides(cls, "still_valid")
        if fetch is None and default_check:
            return sig in self.cache
        entry = self.cache.get(sig)
        if entry is None:
            return False
        problem = entry_problem(cls, entry.outputs, self.output_dir)
        if problem is None and not cls.still_valid(entry.outputs):
            problem = "no longer valid"
        if problem is not None:
            log.warning("dropping cached %s output of %s: %s", cls.type, nid, problem)
            self.cache.discard(sig)
            return False
        if fetch is not None:
            fetch[nid] = entry.outputs
        return True

    def signatures(self, graph: Graph, order: list[str], sources: dict[str, dict[str, Link]],
                   nonce: str, coerced: dict[str, dict[str, Any]] | None = None
                   ) -> tuple[dict[str, str], set[str]]:
        """Merkle signatures of the given nodes (in dependency order)."""
        reg = graph.registry
        env = FingerprintEnv(self.resolver(graph), self.file_hash, str(self.output_dir),
                             self._find_model)
        sigs: dict[str, str] = {}
        volatile: set[str] = set()
        for nid in order:
            node = graph.nodes[nid]
            cls = reg[node.type]
            srcs = sources[nid]
            parts: list[Any] = [cls.type, node.version]
            values: dict[str, Any] = {}
            unknown_file = False
            for inp in cls.inputs:
                if inp.ui_only:
                    continue
                link = srcs.get(inp.name)
                if link is not None:
                    parts.append((inp.name, sigs[link.src], link.src_output))
                    if link.src in volatile:
                        volatile.add(nid)
                    if inp.name in cls.file_inputs:  # a path wired from a primitive is known now
                        src = graph.nodes[link.src]
                        const = reg[src.type].constant(src.params)
                        if const is None or link.src_output not in const:
                            unknown_file = True
                        else:
                            values[inp.name] = const[link.src_output]
                else:
                    v = param_value(inp, node, (coerced or {}).get(nid, {}), inp.default)
                    if v is not REQUIRED:
                        values[inp.name] = v
                    parts.append((inp.name, None if v is REQUIRED else v))
            parts.append(cls.fingerprint(values, env))
            if not cls.cacheable or unknown_file:
                volatile.add(nid)
            if nid in volatile:
                parts.append(nonce)
            # repr is canonical here: widget values are coerced to int / float / str / bool
            sigs[nid] = hashlib.blake2b(repr(parts).encode(), digest_size=20).hexdigest()
        return sigs, volatile

    # ---- running ---------------------------------------------------------------------------
    def run(self, graph: Graph, targets: list[str] | None = None, *,
            cancel: CancelToken | None = None,
            output_dir: str | os.PathLike[str] | None = None) -> RunResult:
        """Run what the targets (default: all output nodes) need. Raises InvalidGraph."""
        if output_dir is not None:
            self.output_dir = Path(output_dir)
        cancel = cancel or CancelToken()
        run_id = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        local: dict[str, dict[str, Any]] = {}
        plan = self.plan(graph, targets, fetch=local)
        result = RunResult(run_id, RunStatus.OK, plan)
        try:
            memory = self.memory(graph, plan)
        except Exception as exc:  # an estimate is advice: it never stops a run
            log.debug("no memory estimate: %s", exc)
            memory = MemoryEstimate({})
        if not memory.fits:
            log.warning("%s", memory.warning())
        self.events.emit(RunStarted(run_id, plan.to_dict(), list(plan.targets),
                                    memory.to_dict()))
        self._emit_cached(graph, result, local, plan.cached)
        try:
            self._execute(graph, plan, result, local, cancel)
        except _Replan:
            plan = self._run_again(graph, plan, result, local, cancel)
        for nid in plan.targets:
            outs = local.get(nid)
            if outs is not None:
                result.outputs[nid] = outs
                ui = outs.get("ui")
                if isinstance(ui, dict):
                    result.files.extend(str(f) for f in ui.get("files", []))
            elif result.status == RunStatus.OK and nid not in result.failures:
                result.skipped.setdefault(nid, "produced no output")
        if result.status != RunStatus.CANCELLED and (result.failures or result.skipped):
            result.status = RunStatus.FAILED
        result.seconds = time.perf_counter() - t0
        self.events.emit(RunFinished(run_id, result.status, list(result.files), result.seconds,
                                     sorted(result.failures), sorted(result.skipped)))
        return result

    def _run_again(self, graph: Graph, plan: Plan, result: RunResult,
                   local: dict[str, dict[str, Any]], cancel: CancelToken) -> Plan:
        """A value was lost after planning: plan once more from what is left, and run."""
        first = set(plan.cached)
        plan = self.plan(graph, plan.targets, fetch=local)
        plan.cached = [n for n in plan.cached if n not in result.computed]
        result.plan = plan
        self._emit_cached(graph, result, local, [n for n in plan.cached if n not in first])
        try:
            self._execute(graph, plan, result, local, cancel)
        except _Replan as miss:
            nid = miss.args[1]
            result.failures[nid] = NodeFailure(
                nid, graph.nodes[nid].type, f"the output of {miss.args[0]} was lost before "
                "use twice in a row (dropped after an in-place change, or its cache entry "
                "removed by another process)", hint="run again")
        return plan

    def _emit_cached(self, graph: Graph, result: RunResult, local: dict[str, dict[str, Any]],
                     nodes: list[str]) -> None:
        for nid in nodes:
            outs = local.get(nid)
            ui = outs.get("ui") if outs is not None else None
            self.events.emit(NodeFinished(result.run_id, nid, graph.nodes[nid].type, True, 0.0,
                                          V.to_json_safe(ui) if ui is not None else None, outs))

    def _execute(self, graph: Graph, plan: Plan, result: RunResult,
                 local: dict[str, dict[str, Any]], cancel: CancelToken) -> None:
        reg = graph.registry
        workflow_doc: list[Any] = []

        def workflow() -> Any:
            if not workflow_doc:
                from .workflow import embedded_dict

                try:
                    workflow_doc.append(embedded_dict(graph))
                except Exception:
                    workflow_doc.append(None)
            return workflow_doc[0]

        def outputs_of(nid: str) -> dict[str, Any]:
            outs = local.get(nid)
            if outs is None:  # every value the plan relies on was fetched: this one was lost
                raise _Replan(nid)
            return outs

        planned = self.models if isinstance(self.models, PlannedModels) else None

        def replan(step: int) -> None:
            if planned is not None:
                planned.set_plan(use_plan(plan.run, plan.sources, ports, local.get), step)

        def ports(nid: str) -> Ports:
            c = reg[graph.nodes[nid].type]
            return ({i.name: i.type for i in c.inputs}, {o.name: o.type for o in c.outputs})

        try:
            replan(0)
            self._steps(graph, plan, result, local, cancel, replan, workflow, outputs_of)
        finally:
            if planned is not None:
                planned.set_plan(None)

    def _steps(self, graph: Graph, plan: Plan, result: RunResult,
               local: dict[str, dict[str, Any]], cancel: CancelToken,
               replan: Callable[[int], None], workflow: Callable[[], Any],
               outputs_of: Callable[[str], dict[str, Any]]) -> None:
        reg = graph.registry
        resolve = self.resolver(graph)
        remaining = consumer_counts(plan)
        at_step = self.models.at_step if isinstance(self.models, PlannedModels) else None
        for step, nid in enumerate(plan.run):
            if nid in local or nid in result.failures:
                continue
            node = graph.nodes[nid]
            cls = reg[node.type]
            if at_step is not None:
                at_step(step)
            if cancel.cancelled:
                result.status = RunStatus.CANCELLED
                return
            bad = next((l.src for l in plan.sources[nid].values()
                        if l.src in result.failures or l.src in result.skipped), None)
            if bad is not None:
                result.skipped[nid] = f"depends on {bad}, which did not finish"
                continue
            self.events.emit(NodeStarted(result.run_id, nid, node.type))
            t0 = time.perf_counter()
            try:
                kwargs, recorded = self._inputs(cls, node, plan.sources[nid], outputs_of,
                                                plan.values.get(nid, {}))
                ctx = NodeContext(run_id=result.run_id, node_id=nid, node_type=node.type,
                                  bus=self.events, cancel=cancel, models=self.models,
                                  resolve_path=resolve, output_dir=self.output_dir,
                                  workflow=workflow)
                with no_grad():
                    outs = cls().run(ctx, **kwargs)
                outs = check_outputs(cls, nid, outs)
                if V.changed_in_place(recorded):
                    for l in plan.sources[nid].values():
                        self.cache.discard(plan.signatures[l.src])
                        local.pop(l.src, None)
                    raise RuntimeError("the node changed one of its inputs in place; nodes must "
                                       "copy a value before changing it (the upstream cached "
                                       "output was dropped)")
            except Cancelled:
                result.status = RunStatus.CANCELLED
                return
            except _Replan as miss:
                raise _Replan(miss.args[0], nid) from None
            except Exception as exc:
                if isinstance(exc, PartialOutput):
                    result.files.extend(exc.files)
                failure = failure_of(nid, node.type, exc)
                src = self._bad_cached_input(plan, nid, exc)
                if src is not None:
                    failure.hint = (f"{failure.hint}; " if failure.hint else "") + (
                        f"the value was {src}'s cached output, which has been dropped: "
                        "running again computes it afresh")
                result.failures[nid] = failure
                self.events.emit(NodeFailed(result.run_id, nid, node.type, failure))
                continue
            seconds = time.perf_counter() - t0
            V.freeze(outs)
            local[nid] = outs
            if model_keys(outs):  # what it made is known now (a loader's model)
                replan(step)
            result.computed.append(nid)
            if nid not in plan.volatile:
                self.cache.put(plan.signatures[nid], outs, node.type)
            ui = outs.get("ui")
            self.events.emit(NodeFinished(result.run_id, nid, node.type, False, seconds,
                                          V.to_json_safe(ui) if ui is not None else None, outs))
            for l in plan.sources[nid].values():  # free values nobody else in this run needs
                remaining[l.src] -= 1
                if remaining[l.src] <= 0 and l.src not in plan.targets:
                    local.pop(l.src, None)

    def _bad_cached_input(self, plan: Plan, nid: str, exc: Exception) -> str | None:
        """The cached node whose value made `nid` reject an input; its entry is dropped."""
        link = plan.sources[nid].get(exc.input) \
            if isinstance(exc, InputError) and exc.input is not None else None
        if link is None or link.src not in plan.cached:
            return None
        self.cache.discard(plan.signatures[link.src])
        return link.src

    @staticmethod
    def _inputs(cls: type[Node], node: GraphNode, srcs: dict[str, Link],
                outputs_of: Callable[[str], dict[str, Any]], coerced: dict[str, Any]
                ) -> tuple[dict[str, Any], list[tuple[Any, int]]]:
        kwargs: dict[str, Any] = {}
        recorded: list[tuple[Any, int]] = []
        for inp in cls.inputs:
            link = srcs.get(inp.name)
            if link is not None:
                value = outputs_of(link.src).get(link.src_output)
                if inp.is_widget:
                    ok, value = inp.coerce(value)
                    if not ok:
                        raise InputError(inp.name, inp.expected(), value,
                                         hint=f"the value came from {link.src}.{link.src_output}")
                recorded.extend(V.versions(value))
            elif inp.name in node.params:
                value = param_value(inp, node, coerced)
            elif inp.default is not REQUIRED:
                value = inp.default
            else:
                continue  # optional and not given: the node's own default applies
            kwargs[inp.name] = value
        return kwargs, recorded
