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


def test_copy_paste_renames_clashing_ids_and_keeps_links_and_frames(test_registry):
    from engine.graph import Group

    g = Graph(test_registry)
    a = g.add("num", value=1, pos=(10, 20))
    b = g.add("add", a=a, pos=(200, 20))
    g.add("num", value=7)
    g.set_groups([Group("Pair", [a.id, b.id], "#123456")])
    sub = g.subgraph([b.id, a.id])
    assert list(sub.nodes) == [a.id, b.id] and len(sub.links) == 1 and len(sub.groups) == 1
    rev = g.revision
    added = g.paste(sub, (5, 600))
    assert g.revision > rev and len(g) == 5
    new_a, new_b = list(added.nodes)
    assert {new_a, new_b}.isdisjoint({a.id, b.id})
    assert g.node(new_a).pos == (15, 620) and g.node(new_a).params == {"value": 1}
    assert g.links_into(new_b)["a"].src == new_a  # the link between the pair, renamed
    assert g.groups[-1].nodes == [new_a, new_b] and g.groups[-1].color == "#123456"
    assert g.node(a.id).pos == (10, 20)  # the originals are untouched
    # ids free in the target are kept
    other = Graph(test_registry)
    assert list(other.paste(sub).nodes) == [a.id, b.id]


def test_remove_items_and_restore_put_everything_back_in_order(test_registry):
    from engine import workflow as wf
    from engine.graph import Group

    g = Graph(test_registry)
    a = g.add("num", value=1)
    b = g.add("add", a=a)
    c = g.add("add", a=b, b=a)
    g.set_groups([Group("All", [a.id, b.id, c.id])])
    g.set_link_extra((c.id, "a"), "reroutes", [[1.0, 2.0]])
    before = wf.dumps(g)
    rev = g.revision
    gone = g.remove_items([b.id], [(c.id, "b")])
    assert b.id not in g and not g.links and g.groups[0].nodes == [a.id, c.id]
    assert g.revision > rev
    g.restore(gone)
    assert wf.dumps(g) == before


def test_add_items_is_all_or_nothing_and_reports_replaced_links(test_registry):
    from engine.graph import GraphNode, Link

    g = Graph(test_registry)
    a, b = g.add("num", value=1), g.add("add")
    g.connect(a, (b.id, "a"))
    new = GraphNode("n9", "num", params={"value": 3})
    (old,) = g.add_items([new], [Link("n9", "value", b.id, "a")])
    assert old.src == a.id and g.links_into(b.id)["a"].src == "n9"
    t = GraphNode("t9", "tensor")
    with pytest.raises(GraphError, match="cannot connect IMAGE output"):
        g.add_items([t], [Link("t9", "image", b.id, "b")])
    assert "t9" not in g and set(g.links) == {(b.id, "a")}


def test_link_problem_names_nodes_and_small_edits_bump_the_revision(test_registry):
    g = Graph(test_registry)
    a = g.add("num", value=1)
    b = g.add("add", a=a)
    assert g.link_problem(b["value"], (a.id, "value"), lambda i: f"<{i}>") == \
        f"connecting <{b.id}>.value to <{a.id}>.value would make a cycle"
    assert g.link_problem(a["value"], (b.id, "b")) is None
    for edit in (lambda: g.move(a.id, (3, 4)), lambda: g.set_title(a.id, "A"),
                 lambda: g.unset_param(a.id, "value"), lambda: g.set_groups([]),
                 lambda: g.set_link_extra((b.id, "a"), "reroutes", None),
                 lambda: g.reorder([b.id], [])):
        rev = g.revision
        edit()
        assert g.revision == rev + 1
    assert list(g.nodes) == [b.id, a.id] and g.node(a.id).title == "A"


def test_dependency_order_is_the_newest_ready_first_order_layouts_rely_on():
    """graphlib does the sorting; the order stays the one the hand-written Kahn sort gave
    (ComfyUI API imports are laid out in it)."""
    import random

    from engine.order import dependency_order, find_cycle

    def kahn(ids, edges):
        indeg, children = dict.fromkeys(ids, 0), {}
        for s, d in edges:
            indeg[d] += 1
            children.setdefault(s, []).append(d)
        ready, order = [i for i, d in indeg.items() if d == 0], []
        while ready:
            order.append(ready.pop())
            for c in children.get(order[-1], ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        return order

    rng = random.Random(0)
    for _ in range(300):
        ids = [f"n{i}" for i in rng.sample(range(100), rng.randint(1, 25))]
        rank = {x: rng.random() for x in ids}
        edges = [(a, b) for a in ids for b in ids if rank[a] < rank[b] and rng.random() < 0.15]
        rng.shuffle(edges)
        assert dependency_order(ids, edges) == kahn(ids, edges)
        assert find_cycle(ids, edges) == []
    assert find_cycle("abcd", [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == \
        ["a", "b", "c"]
    with pytest.raises(GraphError, match="the graph has a cycle: a -> b -> a"):
        dependency_order("ab", [("a", "b"), ("b", "a")])
