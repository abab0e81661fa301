from engine import Graph, validate
from engine.graph import GraphNode, Link


def codes(problems):
    return sorted((p.code, p.node, p.input) for p in problems if p.severity == "error")


def test_every_problem_is_reported_at_once(test_registry):
    g = Graph(test_registry)
    g.insert(GraphNode("u", "mystery_node", params={"x": 1}))
    g.insert(GraphNode("a", "add", params={"bias": 1000}))  # out of range
    g.insert(GraphNode("m", "mutate"))  # missing IMAGE input
    g.insert(GraphNode("t", "tensor"))
    g.insert(GraphNode("s", "sink"))
    g.links[("s", "value")] = Link("t", "image", "s", "value")  # IMAGE into INT
    g.insert(GraphNode("c1", "add"))
    g.insert(GraphNode("c2", "add"))
    g.links[("c2", "a")] = Link("c1", "value", "c2", "a")
    g.links[("c1", "a")] = Link("c2", "value", "c1", "a")
    g.insert(GraphNode("v", "num", version=7))
    problems = validate(g)
    got = codes(problems)
    assert ("unknown_type", "u", None) in got
    assert ("bad_value", "a", "bias") in got
    assert ("missing_input", "m", "image") in got
    assert ("type_mismatch", "s", "value") in got
    assert ("cycle", "c1", None) in got or ("cycle", "c2", None) in got
    assert ("node_version", "v", None) in got
    bad = next(p for p in problems if p.code == "bad_value")
    assert bad.expected == "an integer from -100 to 100" and bad.got == "1000"
    mismatch = next(p for p in problems if p.code == "type_mismatch")
    assert (mismatch.expected, mismatch.got) == ("INT", "IMAGE")


def test_no_output_node(test_registry):
    g = Graph(test_registry)
    g.add("num")
    assert [p.code for p in validate(g)] == ["no_output"]


def test_unknown_param_is_a_warning_and_kept(test_registry):
    g = Graph(test_registry)
    g.insert(GraphNode("n", "num", params={"value": 1, "legacy": True}))
    g.insert(GraphNode("s", "sink"))
    g.links[("s", "value")] = Link("n", "value", "s", "value")
    problems = validate(g)
    assert [(p.code, p.severity) for p in problems] == [("unknown_param", "warning")]


def test_targets_limit_validation_to_what_they_need(test_registry):
    g = Graph(test_registry)
    g.insert(GraphNode("u", "mystery_node"))
    n = g.add("num", value=1)
    s = g.add("sink", value=n)
    assert codes(validate(g, [s.id])) == []
    assert ("unknown_type", "u", None) in codes(validate(g))


def test_muted_source_and_bypass(test_registry):
    g = Graph(test_registry)
    n = g.add("num", value=1)
    a = g.add("add", a=n)
    s = g.add("sink", value=a)
    g.set_mode(n.id, "muted")
    assert codes(validate(g)) == [("muted_source", a.id, "a")]
    g.set_mode(n.id, "active")
    g.set_mode(a.id, "bypassed")  # passes its INT input through
    assert codes(validate(g)) == []
    g.set_mode(s.id, "muted")
    assert [p.code for p in validate(g)] == ["no_output"]
