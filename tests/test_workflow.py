import json
import os

import pytest

from engine import Graph, GraphError, WorkflowError, dumps, load, loads, save
from engine.workflow import FORMAT

DOC = {
    "format": FORMAT, "version": 1,
    "nodes": [
        {"id": "n1", "type": "num", "version": 1, "title": "Width", "params": {"value": 3},
         "pos": [0, 0]},
        {"id": "n2", "type": "add", "version": 1, "params": {"bias": 1}, "pos": [320, 0.5],
         "color": "#ff0000", "future_field": {"nested": [1, 2]}},
        {"id": "x9", "type": "some_custom_pack.magic", "version": 4,
         "params": {"strength": 0.7, "blob": {"k": [1, "two", None]}}, "pos": [10, 20],
         "mode": "bypassed", "widgets": ["a", 1]},
        {"id": "s", "type": "sink", "version": 1, "params": {}, "pos": [600, 0]},
    ],
    "links": [
        {"from": ["n1", "value"], "to": ["n2", "a"]},
        {"from": ["n2", "value"], "to": ["x9", "in"], "reroute": [1, 2]},
        {"from": ["n2", "value"], "to": ["s", "value"]},
    ],
    "groups": [{"title": "G", "nodes": ["n1", "n2"], "color": "#123456", "bounds": [0, 0, 9, 9]}],
    "meta": {"created_with": "loom 0.1.0", "author": "me"},
    "future_top_level": {"anything": True},
}


def test_lossless_round_trip_of_unknown_nodes_and_fields(test_registry):
    g = loads(json.dumps(DOC), registry=test_registry)
    assert g.nodes["x9"].type == "some_custom_pack.magic"
    out = json.loads(dumps(g))
    assert out == DOC
    # and once more: a fixed point
    assert json.loads(dumps(loads(dumps(g), registry=test_registry))) == DOC


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, test_registry):
    g = loads(json.dumps(DOC), registry=test_registry)
    target = tmp_path / "wf.json"
    target.write_text("old contents")
    save(g, target)
    assert json.loads(target.read_text()) == DOC
    assert sorted(os.listdir(tmp_path)) == ["wf.json"]


def test_failed_save_keeps_the_old_file(tmp_path, test_registry, monkeypatch):
    g = loads(json.dumps(DOC), registry=test_registry)
    target = tmp_path / "wf.json"
    target.write_text("old contents")

    def broken_replace(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save(g, target)
    assert target.read_text() == "old contents"
    assert sorted(os.listdir(tmp_path)) == ["wf.json"]


def test_newer_file_version_loads_read_only_safe(tmp_path, test_registry):
    doc = dict(DOC, version=3, nodes=DOC["nodes"] + [{"id": "z", "type": "num", "version": 1,
                                                       "params": {}, "pos": [0, 0],
                                                       "v3_thing": 1}])
    g = loads(json.dumps(doc), registry=test_registry)
    assert g.read_only and "newer" in g.read_only
    assert json.loads(dumps(g)) == doc  # saved back unchanged
    g.set_param("n1", "value", 4)  # edits work in memory (e.g. --set) ...
    with pytest.raises(GraphError, match="newer Loom"):  # ... but saving them is refused
        dumps(g)


def test_aliases_become_the_current_type_id(test_registry):
    doc = {"format": FORMAT, "version": 1,
           "nodes": [{"id": "a", "type": "plus", "params": {}, "pos": [0, 0]}]}
    g = loads(json.dumps(doc), registry=test_registry)
    assert g.nodes["a"].type == "add"


def test_file_and_node_migrations(test_registry):
    import testnodes

    from engine.registry import Registry

    class AddV2(testnodes.Add):
        type = "add2"
        version = 3

        @classmethod
        def migrate(cls, from_version, params):
            if from_version == 1:
                params["bias"] = params.pop("offset", 0)
            elif from_version == 2:
                params["bias"] = params["bias"] * 2
            return params

    reg = Registry()
    reg.register(AddV2)
    old = {"format": FORMAT, "version": 1,
           "nodes": [{"id": "a", "type": "add2", "version": 1, "params": {"offset": 5},
                      "pos": [0, 0]}], "connections": []}

    def v1_to_v2(doc):  # a pretend future format change: "connections" became "links"
        doc["links"] = doc.pop("connections")
        return doc

    g = loads(json.dumps(old), registry=reg, migrations={1: v1_to_v2}, current=2)
    assert g.file_version == 2 and g.nodes["a"].version == 3
    assert g.nodes["a"].params == {"bias": 10}
    assert "connections" not in json.loads(dumps(g))
    with pytest.raises(WorkflowError, match="no migration from file version 1"):
        loads(json.dumps(old), registry=reg, migrations={}, current=2)


MALFORMED = [
    ("", "the file is empty"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [', "line 1, column"),
    ("not json at all", "not valid JSON"),
    ("[1, 2]", "top level: expected an object, got a list"),
    ('{"format": "other", "version": 1}', "format: expected 'loom.workflow'"),
    ('{"format": "loom.workflow", "version": "1"}', "version: expected an integer"),
    ('{"format": "loom.workflow", "version": 1, "nodes": {}}', "nodes: expected a list"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [{"id": 5, "type": "num"}]}',
     "nodes[0].id: expected a non-empty string"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [{"id": "a", "type": "num", '
     '"params": []}]}', "nodes[0] (id 'a').params: expected an object"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [{"id": "a", "type": "num", '
     '"pos": [1]}]}', "pos: expected [x, y] numbers"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [{"id": "a", "type": "num"}, '
     '{"id": "a", "type": "num"}]}', "duplicate node id 'a'"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [], "links": [{"from": ["x", "v"], '
     '"to": ["y", "v"]}]}', "links[0].from: no node with id 'x'"),
    ('{"format": "loom.workflow", "version": 1, "nodes": [], "links": [{"from": "x"}]}',
     "links[0].from: expected [\"node id\", \"port name\"]"),
    ('{"format": "loom.workflow", "version": 1e999}', "too large"),
    ('{"format": "loom.workflow", "version": NaN}', "NaN is not a JSON number"),
    ('{"format": "loom.workflow", "version": ' + "9" * 5000 + "}", "not readable"),
    ('{"format": "loom.workflow", "version": 99999999999}', "plausible version"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"last_node_id": 3, "nodes": [], "links": []}', "looks like a ComfyUI workflow"),
]


@pytest.mark.parametrize("text,expected", MALFORMED)
def test_malformed_files_get_one_clear_error(tmp_path, test_registry, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(WorkflowError) as info:
        load(path, registry=test_registry)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_and_binary_files(tmp_path, test_registry):
    with pytest.raises(WorkflowError, match="cannot read the file"):
        load(tmp_path / "missing.json", registry=test_registry)
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WorkflowError, match="not UTF-8"):
        load(p, registry=test_registry)


def test_huge_param_numbers_load_and_fail_validation_clearly(test_registry):
    from engine import validate

    doc = {"format": FORMAT, "version": 1,
           "nodes": [{"id": "a", "type": "add", "params": {"bias": 10**40}, "pos": [0, 0]},
                     {"id": "s", "type": "sink", "params": {}, "pos": [0, 0]}],
           "links": [{"from": ["a", "value"], "to": ["s", "value"]}]}
    g = loads(json.dumps(doc), registry=test_registry)
    [p] = validate(g)
    assert p.node == "a" and p.input == "bias" and p.expected == "an integer from -100 to 100"


def test_load_sets_base_dir_for_relative_paths(tmp_path, test_registry):
    g = Graph(test_registry)
    g.add("num")
    save(g, tmp_path / "w.json")
    assert load(tmp_path / "w.json", registry=test_registry).base_dir == tmp_path.resolve()


def test_bundled_example_workflows_validate(builtin_registry):
    from pathlib import Path

    from engine import validate

    folder = Path(__file__).resolve().parent.parent / "resources" / "workflows"
    files = sorted(folder.glob("*.json"))
    assert files
    for f in files:
        g = load(f, registry=builtin_registry)
        assert [p for p in validate(g) if p.severity == "error"] == [], f
