import threading
import time

import pytest

from engine import Cache, CancelToken, DiskCache, Executor, Graph, InvalidGraph, MemoryCache


def chain(reg):
    """num(a) -> add(+b) -> sink, plus an independent num(c) -> sink2."""
    g = Graph(reg)
    a = g.add("num", "a", value=1)
    b = g.add("num", "b", value=2)
    s = g.add("add", "s", a=a, b=b)
    g.add("sink", "out", value=s)
    c = g.add("num", "c", value=7)
    g.add("sink", "out2", value=c)
    return g


def test_run_then_rerun_serves_everything_from_cache(test_registry, events):
    g = chain(test_registry)
    ex = events.attach(Executor())
    r1 = ex.run(g)
    assert r1.ok and r1["out"]["ui"] == {"value": 3} and r1["out2"]["ui"] == {"value": 7}
    assert events.computed() == {"a", "b", "s", "out", "c", "out2"}
    events.clear()
    r2 = ex.run(g)
    assert r2.ok and r2.computed == [] and sorted(r2.plan.cached) == ["out", "out2"]
    assert r2["out"]["ui"] == {"value": 3}
    assert events.computed() == set()


def test_changing_one_widget_reruns_exactly_it_and_its_dependents(test_registry, events):
    g = chain(test_registry)
    ex = events.attach(Executor())
    ex.run(g)
    events.clear()
    g.set_param("b", "value", 5)
    plan = ex.plan(g)
    assert set(plan.run) == {"b", "s", "out"} and set(plan.cached) == {"a", "out2"}
    r = ex.run(g)
    assert set(r.computed) == {"b", "s", "out"} and r["out"]["ui"] == {"value": 6}


def test_cached_node_shields_everything_upstream(test_registry):
    g = chain(test_registry)
    ex = Executor()
    ex.run(g)
    g.set_param("out", "value", 0)  # unused: 'value' is wired, so the param does not matter
    s2 = g.add("add", "s2", bias=1)
    g.connect(("s", "value"), ("s2", "a"))
    g.add("sink", "out3", value=s2)
    plan = ex.plan(g, ["out3"])
    assert plan.run == ["s2", "out3"] and plan.cached == ["s"]  # a and b do not run


def test_outputs_are_shared_across_workflows_in_one_process(test_registry):
    ex = Executor()
    g1 = chain(test_registry)
    ex.run(g1)
    g2 = Graph(test_registry)  # a different workflow containing the same sub-computation
    a = g2.add("num", "x1", value=1)
    b = g2.add("num", "x2", value=2)
    s = g2.add("add", "x3", a=a, b=b)
    g2.add("sink", "x4", value=s)
    g2.set_param("x4", "value", 0)
    r = ex.run(g2)
    assert r.computed == [] and r["x4"]["ui"] == {"value": 3}


def test_failure_stops_only_what_depends_on_it(test_registry, events):
    g = Graph(test_registry)
    f = g.add("fail", "f", value=1)
    g.add("sink", "bad", value=f)
    n = g.add("num", "n", value=4)
    g.add("sink", "good", value=n)
    ex = events.attach(Executor())
    r = ex.run(g)
    assert r.status == "failed"
    assert r["good"]["ui"] == {"value": 4}
    assert list(r.failures) == ["f"] and "bad" in r.skipped
    [failed] = events.named("node_failed")
    assert failed.node == "f" and "always fails" in failed.error.message
    assert "Traceback" in failed.error.traceback
    # the graph stays editable and earlier outputs stay cached
    g.remove("f")
    g.remove("bad")
    assert ex.run(g).computed == []


def test_bad_wired_value_names_node_input_expected_and_source(test_registry):
    g = Graph(test_registry)
    n = g.add("num", "n", value=500)
    a = g.add("add", "a")
    g.connect(n["value"], ("a", "bias"))  # bias allows -100..100; known only at run time
    g.add("sink", "s", value=a)
    r = Executor().run(g)
    f = r.failures["a"]
    assert f.input == "bias" and f.expected == "an integer from -100 to 100" and f.got == "500"
    assert "n.value" in f.hint


def test_invalid_graph_is_refused_before_anything_runs(test_registry):
    g = Graph(test_registry)
    g.add("mutate", "m")  # missing input
    g.add("sink", "s")
    with pytest.raises(InvalidGraph) as info:
        Executor().run(g, ["m"])
    assert info.value.problems[0].code == "missing_input"


def test_events_arrive_in_order(test_registry, events):
    g = Graph(test_registry)
    sl = g.add("slow", "sl", value=1, steps=5, delay=0.0)
    g.add("sink", "s", value=sl)
    events.attach(Executor()).run(g)
    names = [e.event for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert events[0].plan == {"run": ["sl", "s"], "cached": []}
    i = names.index("node_started")
    assert names[i: i + 1] == ["node_started"] and events[i].node == "sl"
    steps = [e.step for e in events.named("progress")]
    assert steps[0] == 1 and steps[-1] == 5 and steps == sorted(steps)
    assert events[-1].status == "ok"


def test_cancel_inside_a_long_node_and_cache_stays_intact(test_registry, events):
    g = Graph(test_registry)
    n = g.add("num", "n", value=3)
    sl = g.add("slow", "sl", value=n, steps=10_000, delay=0.001)
    g.add("sink", "s", value=sl)
    ex = events.attach(Executor())
    token = CancelToken()
    threading.Timer(0.2, token.cancel).start()
    t0 = time.perf_counter()
    r = ex.run(g, cancel=token)
    assert r.status == "cancelled" and time.perf_counter() - t0 < 2.0
    assert events[-1].event == "run_finished" and events[-1].status == "cancelled"
    assert r.computed == ["n"]
    g.set_param("sl", "steps", 3)
    r2 = ex.run(g)
    assert r2.ok and r2.computed == ["sl", "s"]  # n came from the cache


def test_cancel_between_nodes(test_registry):
    g = chain(test_registry)
    token = CancelToken()
    token.cancel()
    r = Executor().run(g, cancel=token)
    assert r.status == "cancelled" and r.computed == []


def test_uncacheable_node_runs_every_time_with_its_dependents(test_registry):
    g = Graph(test_registry)
    rnd = g.add("rand", "r")
    a = g.add("add", "a", a=rnd)
    g.add("sink", "s", value=a)
    ex = Executor()
    ex.run(g)
    assert set(ex.run(g).computed) == {"r", "a", "s"}


def test_in_place_change_of_an_input_is_caught_and_the_entry_dropped(test_registry):
    g = Graph(test_registry)
    t = g.add("tensor", "t", fill=1.0)
    g.add("mutate", "m", image=t)
    ex = Executor()
    r = ex.run(g, ["m"])
    assert "changed one of its inputs in place" in r.failures["m"].message
    assert r.plan.signatures["t"] not in ex.cache  # the corrupted output is not served again


def test_memory_cache_is_byte_bounded_lru_with_a_summary(test_registry):
    import torch

    image = 4 * 3 * 16 * 16
    cache = MemoryCache(budget_bytes=3 * image + 500)  # room for three 16x16 images
    ex = Executor(cache=Cache(cache))
    g = Graph(test_registry)
    for i in range(5):
        g.add("tensor", f"t{i}", fill=float(i), size=16)
    for i in range(5):
        ex.run(g, [f"t{i}"])
    s = cache.summary()
    assert s["entries"] == 3 and s["bytes"] <= s["budget"]
    assert s["by_type"]["tensor"]["entries"] == 3
    assert 3 * image <= s["by_type"]["tensor"]["bytes"] <= 3 * image + 500
    assert set(ex.plan(g, [f"t{i}" for i in range(5)]).run) == {"t0", "t1"}
    assert torch.equal(ex.run(g, ["t4"])["t4"]["image"], torch.full((1, 3, 16, 16), 4.0))


def test_disk_tier_serves_a_new_executor_without_computing(tmp_path, test_registry):
    import torch

    g = Graph(test_registry)
    g.add("tensor", "t", fill=0.25, size=8)
    m = g.add("num", "n", value=9)
    g.add("sink", "s", value=m)
    g.add("text_sink", "ts", text="hello")
    ex1 = Executor(cache=Cache(disk=DiskCache(tmp_path)))
    r1 = ex1.run(g, ["t", "s", "ts"])
    ex2 = Executor(cache=Cache(disk=DiskCache(tmp_path)))  # as if in a new process
    r2 = ex2.run(g, ["t", "s", "ts"])
    assert r2.computed == [] and sorted(r2.plan.cached) == ["s", "t", "ts"]
    assert torch.equal(r2["t"]["image"], r1["t"]["image"])
    assert r2["s"]["ui"] == {"value": 9} and r2["ts"]["ui"] == {"text": "hello"}
    assert DiskCache(tmp_path).summary()["entries"] == 4


def test_disk_tier_is_byte_bounded_and_survives_damage(tmp_path, test_registry):
    g = Graph(test_registry)
    for i in range(4):
        g.add("tensor", f"t{i}", fill=float(i), size=32)  # ~12 KiB each
    disk = DiskCache(tmp_path, budget_bytes=30_000)
    ex = Executor(cache=Cache(disk=disk))
    for i in range(4):
        ex.run(g, [f"t{i}"])
    assert disk.summary()["bytes"] <= 30_000 and disk.summary()["entries"] == 2
    sig = ex.plan(g, ["t3"]).signatures["t3"]
    disk._path(sig).write_bytes(b"garbage")  # a damaged entry is a miss, never a crash
    r = Executor(cache=Cache(disk=DiskCache(tmp_path))).run(g, ["t3"])
    assert r.ok and r.computed == ["t3"]


def test_file_fingerprint_reruns_on_content_change_only(tmp_path, test_registry):
    f = tmp_path / "in.txt"
    f.write_text("one")
    g = Graph(test_registry)
    g.base_dir = tmp_path
    t = g.add("text", "t", path="in.txt")
    g.add("text_sink", "s", text=t)
    ex = Executor()
    assert ex.run(g)["s"]["ui"] == {"text": "one"}
    f.write_text("one")  # touched, same content: still cached
    assert ex.run(g).computed == []
    f.write_text("two")
    r = ex.run(g)
    assert r.computed == ["t", "s"] and r["s"]["ui"] == {"text": "two"}


def test_file_path_wired_from_a_primitive_is_fingerprinted(tmp_path, test_registry):
    import testnodes

    from engine.spec import Output, String
    from engine.types import T

    class Str(testnodes.Num):
        type = "str"
        inputs = (String("value", ""),)
        outputs = (Output("value", T.string),)

    test_registry.register(Str)
    f = tmp_path / "in.txt"
    f.write_text("one")
    g = Graph(test_registry)
    g.base_dir = tmp_path
    p = g.add("str", "p", value="in.txt")
    t = g.add("text", "t")
    g.connect(p["value"], ("t", "path"))
    g.add("text_sink", "s", text=t)
    ex = Executor()
    ex.run(g)
    assert ex.run(g).computed == []
    f.write_text("two")
    assert ex.run(g)["s"]["ui"] == {"text": "two"}


def test_bypassed_node_passes_its_input_through(test_registry):
    g = Graph(test_registry)
    n = g.add("num", "n", value=5)
    a = g.add("add", "a", a=n, bias=10)
    g.add("sink", "s", value=a)
    g.set_mode("a", "bypassed")
    r = Executor().run(g)
    assert r["s"]["ui"] == {"value": 5} and "a" not in r.computed


def test_only_the_requested_targets_run(test_registry):
    g = chain(test_registry)
    r = Executor().run(g, ["out2"])
    assert r.computed == ["c", "out2"]


def test_each_widget_value_is_coerced_once_per_run(test_registry, monkeypatch):
    """validate coerces (and checks) a stored value; signatures and the node's inputs reuse
    what it got, instead of coercing the same value three times."""
    from engine.spec import Input

    g = chain(test_registry)
    calls: list[str] = []
    real = Input.coerce

    def counting(self, value):
        calls.append(self.name)
        return real(self, value)

    monkeypatch.setattr(Input, "coerce", counting)
    r = Executor().run(g)
    assert r.ok and r["out"]["ui"] == {"value": 3}
    # the three num nodes' stored values once each, Add's unset bias (its default) once for
    # the signature, and the values wired into Add and the two sinks when they arrive
    assert sorted(calls) == sorted(["value"] * 3 + ["bias"] + ["a", "b", "value", "value"])


def test_statuses_are_enums_that_compare_and_print_as_their_strings(test_registry, capsys):
    import json

    from app.progress import TerminalProgress
    from engine.events import NodeFinished, NodeStarted, NodeStatus, RunFinished, RunStatus

    r = Executor().run(chain(test_registry))
    assert r.status is RunStatus.OK and r.status == "ok" and f"{r.status}" == "ok"
    assert json.dumps(RunFinished("r", RunStatus.CANCELLED).to_json())\
        .startswith('{"event": "run_finished", "run_id": "r", "status": "cancelled"')
    assert NodeStatus.NONE == "" and NodeStatus.FAILED == "failed"
    # the CLI's renderer dispatches on the event's type: off a terminal, a line per node run
    show = TerminalProgress()
    show.tty = False
    for ev in (NodeStarted("r", "a", "num"), NodeFinished("r", "a", "num", seconds=0.5),
               NodeFinished("r", "b", "num", cached=True), RunFinished("r")):
        show(ev)
    show.close()
    assert capsys.readouterr().err == "a num: 0.50 s\n"
