import pytest

from engine import Graph, GraphError, validate
from engine.spec import Input
from engine.types import T, can_connect


def test_connect_rule_table():
    assert can_connect(T.image, T.image)
    assert can_connect(T.int, T.float) and can_connect(T.int, T.seed) and can_connect(T.seed, T.int)
    assert can_connect(T.string, T.choice)
    assert not can_connect(T.float, T.int)
    assert not can_connect(T.image, T.mask)
    assert not can_connect(T.latent, T.image)


def test_input_coerce_and_expected():
    i = Input("steps", T.int, 20, min=1, max=150)
    assert i.coerce(20) == (True, 20)
    assert i.coerce(20.0) == (True, 20)
    assert not i.coerce(0)[0] and not i.coerce(151)[0]
    assert not i.coerce(True)[0] and not i.coerce("20")[0] and not i.coerce(2.5)[0]
    assert i.expected() == "an integer from 1 to 150"
    f = Input("cfg", T.float, 7.0, min=0.0, max=30.0)
    assert f.coerce(7) == (True, 7.0)
    assert not f.coerce(float("nan"))[0] and not f.coerce(10**400)[0]
    c = Input("mode", T.choice, "a", choices=("a", "b"))
    assert c.coerce("b") == (True, "b") and not c.coerce("z")[0]
    assert c.expected() == "one of 'a', 'b'"
    s = Input("seed", T.seed, 0)
    assert s.coerce(2**64 - 1)[0] and not s.coerce(2**64)[0] and not s.coerce(-1)[0]


def test_add_connect_and_typed_builder(test_registry):
    g = Graph(test_registry)
    a = g.add("num", value=2)
    b = g.add("num", value=3)
    s = g.add("add", a=a["value"], b=b)  # a NodeRef with one output wires that output
    g.add("sink", value=s)
    assert len(g.links) == 3
    assert g.links_into(s.id)["a"].src == a.id
    assert validate(g) == []


def test_edits_refuse_bad_changes_and_leave_graph_unchanged(test_registry):
    g = Graph(test_registry)
    a = g.add("num", value=1)
    b = g.add("add", a=a)
    t = g.add("tensor")
    rev = g.revision
    with pytest.raises(GraphError, match="cannot connect IMAGE output"):
        g.connect(t["image"], (b.id, "b"))
    with pytest.raises(GraphError, match="cycle"):
        g.connect(b["value"], (a.id, "value"))
    with pytest.raises(GraphError, match="no input 'nope'"):
        g.connect(a["value"], (b.id, "nope"))
    with pytest.raises(GraphError, match=r"expected an integer from -100 to 100, got 500"):
        g.set_param(b.id, "bias", 500)
    with pytest.raises(GraphError, match="unknown node type"):
        g.add("no_such_node")
    with pytest.raises(GraphError, match="already exists"):
        g.add("num", id=a.id)
    with pytest.raises(GraphError, match="takes a IMAGE link, not a value"):
        g.add("mutate", image=3)
    assert g.revision == rev and len(g.links) == 1 and len(g) == 3


def test_connecting_an_occupied_input_replaces_the_link(test_registry):
    g = Graph(test_registry)
    a, b = g.add("num", value=1), g.add("num", value=2)
    s = g.add("add", a=a)
    g.connect(b["value"], (s.id, "a"))
    assert len(g.links) == 1 and g.links[(s.id, "a")].src == b.id


def test_remove_drops_links_and_group_membership(test_registry):
    from engine.graph import Group

    g = Graph(test_registry)
    a = g.add("num")
    s = g.add("add", a=a, b=a)
    g.groups.append(Group("g", [a.id, s.id]))
    g.remove(a.id)
    assert not g.links and g.groups[0].nodes == [s.id]
    with pytest.raises(GraphError):
        g.disconnect(s.id, "a")


def test_copy_is_a_snapshot(test_registry):
    g = Graph(test_registry)
    a = g.add("num", value=1)
    snap = g.copy()
    g.set_param(a.id, "value", 5)
    g.add("num")
    assert snap.nodes[a.id].params["value"] == 1 and len(snap) == 1


def test_find_by_id_or_unique_title(test_registry):
    g = Graph(test_registry)
    a = g.add("num", title="Width")
    g.add("num", title="Dup")
    g.add("num", title="Dup")
    assert g.find("Width").id == a.id and g.find(a.id).id == a.id
    with pytest.raises(GraphError, match="2 nodes are titled"):
        g.find("Dup")
    with pytest.raises(GraphError, match="no node"):
        g.find("missing")
