"""serialize and cr.save/cr.load on graph models: the description replays the graph's
declaration, and a malformed description is refused with a ValueError naming the node."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers.symbolic import call_symbolic
from chainrule.serialize import build, describe
from tests.graph_models import GRAPH_MODELS, as_list, batch


def _same_outputs(a, b, x):
    for u, v in zip(as_list(a.eval().forward(x)), as_list(b.eval().forward(x)), strict=True):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_save_load_round_trip(name, dtype, tmp_path):
    make, shapes = GRAPH_MODELS[name]
    model = make(dtype)
    path = cr.save(model, tmp_path / "m.safetensors")
    loaded = cr.load(path)
    assert type(loaded) is type(model) and repr(loaded) == repr(model)
    assert describe(loaded) == describe(model)
    state = model.state_dict()
    assert list(loaded.state_dict()) == list(state)
    for key, value in loaded.state_dict().items():
        assert value.dtype == state[key].dtype and np.array_equal(value, state[key]), key
    _same_outputs(model, loaded, batch(shapes, 3, seed=1, dtype=dtype))


def test_description_of_a_graph():
    desc = describe(GRAPH_MODELS["two_in_two_out"][0]())
    assert json.loads(json.dumps(desc)) == desc
    assert desc["inputs"] == [{"name": "image", "shape": [1, 4, 4]},
                              {"name": "extra", "shape": [3]}]
    assert desc["outputs"] == ["logits", "aux"]
    assert desc["nodes"][-1] == {"name": "aux", "layer": "aux", "inputs": ["flatten"],
                                 "packed": False, "outputs": ["aux"]}
    cat = next(n for n in desc["nodes"] if n["layer"] == "concat")
    assert cat["packed"] and cat["inputs"] == ["linear", "linear_1"]
    shared = describe(GRAPH_MODELS["shared_split"][0]())
    assert list(shared["layers"]).count("shared") == 1      # described once
    assert [n["name"] for n in shared["nodes"] if n["layer"] == "shared"] == ["shared",
                                                                               "shared@1"]
    assert next(n for n in shared["nodes"] if n["layer"] == "halves")["outputs"] == [
        "halves:0", "halves:1"]
    single = describe(GRAPH_MODELS["fan_out_concat"][0]())
    assert single["inputs"] == {"name": "input", "shape": [2, 6, 6]}   # written bare
    assert single["outputs"] == "head"


def test_unknown_shapes_and_dotted_names_round_trip():
    x = cr.Input((1, None, None), name="image")
    conv = cr.Conv2d(1, 2, 3, padding=1)(x, name="block.0.conv")
    # the replay passes the output count, which an unknown shape cannot tell
    a, b = call_symbolic(cr.Split([1, 1], dim=1), conv, num_outputs=2)
    y = cr.Add()([a, cr.Tanh()(b)])
    model = cr.Graph(x, y)
    desc = describe(model)
    assert desc["inputs"]["shape"] == [1, None, None]
    rebuilt = build(json.loads(json.dumps(desc)))
    assert describe(rebuilt) == desc
    rebuilt.load_state_dict(model.state_dict())
    _same_outputs(model, rebuilt, batch([(1, 5, 7)]))


# ---------------------------------------------------------------- malformed descriptions
def _graph_desc():
    return describe(GRAPH_MODELS["fan_out_concat"][0]())


def _node(desc, name):
    return next(n for n in desc["nodes"] if n["name"] == name)


def _mutations():
    def later(d):
        _node(d, "branch_a")["inputs"] = ["cat"]

    def unknown_tensor(d):
        _node(d, "branch_a")["inputs"] = ["nowhere"]

    def unknown_layer(d):
        _node(d, "branch_a")["layer"] = "missing"

    def wrong_name(d):
        _node(d, "branch_a")["name"] = "branch_a@3"

    def bad_outputs(d):
        _node(d, "cat")["outputs"] = ["cat:0", "cat:1"]

    def packed_not_bool(d):
        _node(d, "cat")["packed"] = "yes"

    def unpacked_two_inputs(d):
        _node(d, "branch_a")["inputs"] = ["stem", "stem"]

    def missing_key(d):
        del _node(d, "cat")["packed"]

    def node_not_dict(d):
        d["nodes"][2] = ["stem"]

    def bad_output(d):
        d["outputs"] = "nothing"

    def dead_node(d):
        d["nodes"].append({"name": "extra", "layer": "extra", "inputs": ["stem"],
                           "packed": False, "outputs": ["extra"]})
        d["layers"]["extra"] = {"type": "ReLU"}

    def unused_layer(d):
        d["layers"]["spare"] = {"type": "ReLU"}

    def shape_mismatch(d):
        d["layers"]["branch_a"]["args"]["in_channels"] = 7

    def bad_input_shape(d):
        d["inputs"]["shape"] = [2, -6, 6]

    def input_not_dict(d):
        d["inputs"] = [3, 6, 6]

    def nodes_not_list(d):
        d["nodes"] = {}

    def duplicate_tensor(d):
        d["inputs"]["name"] = "stem"

    return {
        "later": (later, r"node 'branch_a': reads tensor 'cat', made by node 'cat', which "
                         r"comes later"),
        "unknown_tensor": (unknown_tensor, r"node 'branch_a': reads tensor 'nowhere', which no"),
        "unknown_layer": (unknown_layer, r"node 'branch_a': calls the layer 'missing'"),
        "wrong_name": (wrong_name, r"node 'branch_a@3': call 1 of layer 'branch_a' is named "
                                   r"'branch_a'"),
        "bad_outputs": (bad_outputs, r"node 'cat': the description gives it the outputs"),
        "packed_not_bool": (packed_not_bool, r"node 'cat': 'packed' must be true or false"),
        "unpacked_two_inputs": (unpacked_two_inputs, r"node 'branch_a': a node that is not "
                                                     r"packed reads one tensor"),
        "missing_key": (missing_key, r"nodes\[\d+\] must be a dict with the keys"),
        "node_not_dict": (node_not_dict, r"nodes\[2\] must be a dict"),
        "bad_output": (bad_output, r"output 'nothing' is no input's or node's tensor"),
        "dead_node": (dead_node, r"node\(s\) \['extra'\] do not lead to any output"),
        "unused_layer": (unused_layer, r"layer\(s\) \['spare'\] are called by no node"),
        "shape_mismatch": (shape_mismatch, r"node 'branch_a': .*Conv2d"),
        "bad_input_shape": (bad_input_shape, r"inputs\[0\] \('input'\): 'shape' must be"),
        "input_not_dict": (input_not_dict, r"inputs\[0\] must be a dict"),
        "nodes_not_list": (nodes_not_list, r"'nodes' must be a list"),
        "duplicate_tensor": (duplicate_tensor, r"model \(Graph\)"),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_malformed_graph_description_is_refused_by_node(case):
    mutate, message = _mutations()[case]
    desc = copy.deepcopy(_graph_desc())
    mutate(desc)
    with pytest.raises(ValueError, match=message):
        build(desc)


def test_nested_malformed_graph_names_its_path():
    desc = describe(GRAPH_MODELS["nested"][0]())
    desc["layers"][1]["layers"]["inner"]["nodes"][0]["inputs"] = ["tanh"]
    with pytest.raises(ValueError, match=r"model\.1\.inner \(Graph\): node 'conv2d': reads "
                                         r"tensor 'tanh', made by node 'tanh'"):
        build(desc)
