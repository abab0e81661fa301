"""Property tests over random DAGs and random edits (hypothesis).

The oracle is independent of the executor's hashing: a node's identity is the nested
tuple of its type, its own values and its sources' identities. A node must run exactly
when a target needs it and no earlier run computed the same identity.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testnodes import registry as make_registry

from engine import Executor, Graph, dumps, loads

REG = make_registry()


@st.composite
def dags(draw):
    n = draw(st.integers(2, 12))
    spec = []
    for i in range(n):
        if i == 0 or draw(st.booleans()):
            spec.append(("num", {"value": draw(st.integers(-5, 5))}, {}))
        else:
            wires = {}
            for inp in ("a", "b"):
                if draw(st.booleans()):
                    wires[inp] = draw(st.integers(0, i - 1))
            spec.append(("add", {"bias": draw(st.integers(-3, 3))}, wires))
    sinks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))
    return spec, sinks


edit = st.tuples(st.sampled_from(["param", "rewire", "unwire"]), st.integers(0, 100),
                 st.integers(-3, 3), st.sampled_from(["a", "b"]), st.integers(0, 100))


def build(reg, spec, sinks):
    g = Graph(reg)
    for i, (type_, params, wires) in enumerate(spec):
        g.add(type_, f"n{i}", **params)
        for inp, src in wires.items():
            g.connect((f"n{src}", "value"), (f"n{i}", inp))
    for j, src in enumerate(sinks):
        g.add("sink", f"s{j}")
        g.connect((f"n{src}", "value"), (f"s{j}", "value"))
    return g


def apply_edit(g, spec_len, e):
    kind, node, value, inp, src = e
    i = node % spec_len
    nid = f"n{i}"
    node = g.nodes[nid]
    if kind == "param":
        g.set_param(nid, "value" if node.type == "num" else "bias", value)
    elif node.type == "add" and kind == "unwire" and (nid, inp) in g.links:
        g.disconnect(nid, inp)
    elif node.type == "add" and kind == "rewire" and i > 0:
        g.connect((f"n{src % i}", "value"), (nid, inp))


def identity(g, nid, memo):
    if nid not in memo:
        node = g.nodes[nid]
        cls = g.registry.get(node.type)
        parts = [node.type]
        for inp in cls.inputs:
            link = g.links.get((nid, inp.name))
            if link is not None:
                parts.append((inp.name, identity(g, link.src, memo)))
            else:
                parts.append((inp.name, node.params.get(inp.name, inp.default)))
        memo[nid] = tuple(parts)
    return memo[nid]


def evaluate(g, nid):
    node = g.nodes[nid]
    cls = g.registry.get(node.type)
    vals = {}
    for inp in cls.inputs:
        link = g.links.get((nid, inp.name))
        vals[inp.name] = evaluate(g, link.src) if link else node.params.get(inp.name, inp.default)
    return vals["value"] if node.type in ("num", "sink") else vals["a"] + vals["b"] + vals["bias"]


def expected_runs(g, seen):
    memo, run, stack, visited = {}, set(), list(g.output_nodes()), set()
    while stack:
        nid = stack.pop()
        if nid in visited:
            continue
        visited.add(nid)
        if identity(g, nid, memo) in seen:
            continue
        run.add(nid)
        stack.extend(l.src for l in g.links.values() if l.dst == nid)
    return run, {identity(g, n, memo) for n in run}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.lists(edit, min_size=1, max_size=6))
def test_exactly_the_changed_nodes_run_and_cached_equals_recomputed(dag, edits):
    test_registry = REG
    spec, sinks = dag
    g = build(test_registry, spec, sinks)
    ex = Executor()
    seen = set()
    for step in [None, *edits]:
        if step is not None:
            apply_edit(g, len(spec), step)
        want, idents = expected_runs(g, seen)
        result = ex.run(g)
        assert set(result.computed) == want
        seen |= idents
        fresh = Executor().run(g)  # recomputed from scratch
        for sink in g.output_nodes():
            expected = evaluate(g, sink)
            assert result[sink]["ui"] == fresh[sink]["ui"] == {"value": expected}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_workflow_round_trip_is_lossless(dag):
    test_registry = REG
    g = build(test_registry, *dag)
    text = dumps(g)
    again = loads(text, registry=test_registry)
    assert dumps(again) == text
    assert json.loads(text)["format"] == "loom.workflow"
    assert Executor().plan(again).signatures == Executor().plan(g).signatures
