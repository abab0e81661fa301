"""Memory planned ahead: the executor tells the model manager which models each step of a
run uses; the manager evicts the one needed furthest ahead and prefetches the next."""

import time

import pytest
import torch

from engine import Executor
from engine.modelpaths import ModelFolders
from engine.runtime.device import DeviceChoice
from engine.runtime.models import ModelManager

pytestmark = pytest.mark.slow

CPU = DeviceChoice("cpu", "float32", "float32")
# the diffusers folder and the single file of tiny-sd15 are two models to the manager
A, X, B = "tiny-sd15", "tiny-sdxl", "tiny-sd15.safetensors"


def chain(names, steps=2):
    from testing.midsize import model_chain

    return model_chain(names, steps)


def name_of(key):
    return key.split(":")[1].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def two_budget(tiny_models):
    """A budget that holds any two of the three models, never all three."""
    m = ModelManager(CPU, paths=ModelFolders([tiny_models], use_env=False, use_config=False))
    assert Executor(models=m).run(chain([A, X, B])).ok
    sizes = sorted(e["bytes"] for e in m.summary()["loaded"].values())
    assert len(sizes) == 3 and sizes[0] > 0
    return sizes[1] + sizes[2]


def run_chain(tiny_models, budget, names=(A, X, B, A, X), steps=2, **kw):
    m = ModelManager(CPU, budget, ModelFolders([tiny_models], use_env=False, use_config=False),
                     **kw)
    ex = Executor(models=m)
    starts = []
    ex.events.subscribe(lambda e: starts.append((time.monotonic(), e.node, m.loads))
                        if e.event == "node_started" else None)
    r = ex.run(chain(list(names), steps))
    assert r.ok, r.failures
    return m, r, starts


def test_lookahead_evicts_the_model_needed_last_and_loads_less_than_lru(tiny_models,
                                                                        two_budget):
    lru, r_lru, _ = run_chain(tiny_models, two_budget, lookahead=False, prefetch=False)
    plan, r_plan, _ = run_chain(tiny_models, two_budget, prefetch=False)
    order = r_plan.plan.run
    assert order == r_lru.plan.run
    # the text encoders run first (X's, A's, B's, then X's and A's again), so when B comes
    # in, A is needed after X: A goes, where least-recently-used drops X
    assert [name_of(k) for k in plan.load_log[:3]] == [X, A, B]
    assert name_of(plan.evicted[0]) == A and name_of(lru.evicted[0]) == X
    assert plan.loads < lru.loads, (plan.load_log, lru.load_log)
    assert (plan.loads, lru.loads) == (6, 8)
    assert torch.equal(r_plan["out"]["ui"]["images"], r_lru["out"]["ui"]["images"])
    # the plan kept the run inside the budget without the out-of-memory safety net
    assert plan.oom_retries == lru.oom_retries == 0


def consumers(graph, loader):
    return {nid for nid in graph.nodes
            if any(l.src == loader for l in graph.links_into(nid).values())}


def test_prefetch_loads_the_next_model_in_the_background(tiny_models, two_budget):
    plain, r_plain, _ = run_chain(tiny_models, two_budget, prefetch=False, steps=12)
    m, r, starts = run_chain(tiny_models, two_budget, steps=12)
    assert m.prefetched, m.timeline
    assert m.loads == plain.loads  # prefetching loads what demand would, only earlier
    assert torch.equal(r["out"]["ui"]["images"], r_plain["out"]["ui"]["images"])
    # a prefetched model was in memory before the first node using it started: loaded by
    # the background thread while the nodes before it ran, so that node loaded nothing
    graph = chain([A, X, B, A, X])
    loader_of = {graph.nodes[n].params["ckpt_name"]: n for n in graph.nodes
                 if graph.nodes[n].type == "load_checkpoint"}
    ahead = []
    for key in m.prefetched:
        began = next(t for t, what, k in m.timeline if what == "prefetch-start" and k == key)
        done = next(t for t, what, k in m.timeline if what == "prefetch" and k == key)
        users = consumers(graph, loader_of[name_of(key)])
        i, (t_start, node, loads) = next((i, s) for i, s in enumerate(starts)
                                         if s[0] > began and s[1] in users)
        if done < t_start and starts[i + 1][2] == loads:
            ahead.append((name_of(key), node))
    assert ahead, (m.timeline, starts)


def test_a_failed_prefetch_is_reported_by_the_node_that_needs_it():
    """The background load's error is raised where the model is asked for, not lost."""
    m = ModelManager(CPU, budget_bytes=2 * 4 * 64 * 64 + 512)
    calls = {"a": 0, "b": 0, "c": 0}

    def loader(name):
        def load():
            calls[name] += 1
            if name == "a" and calls["a"] > 1:
                raise OSError("the disk went away")
            return torch.nn.Linear(64, 64, bias=False)
        return load

    m.set_plan([frozenset({"a"}), frozenset({"b"}), frozenset({"c"}), frozenset({"a"})])
    m.at_step(0)
    m.get("a", loader("a"))
    m.at_step(1)
    m.get("b", loader("b"))
    m.at_step(2)
    m.get("c", loader("c"))  # a third model: the budget holds two; b is never needed again
    assert m.evicted == ["b"]
    m.unload("a")
    m.at_step(2)  # a is next: loaded in the background, and the load fails
    deadline = time.monotonic() + 10
    while not m._failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls["a"] == 2  # the failed load ran in the background
    with pytest.raises(OSError, match="the disk went away"):
        m.get("a", loader("a"))
