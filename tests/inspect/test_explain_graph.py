"""explain on graph models: the node order of forward and backward, where gradients are
summed (with the readers named), one paragraph per call of a shared layer, several
inputs and outputs; and the command lines (explain, inspect) on a graph checkpoint."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect.cli_inspect import add_explain_parser
from chainrule.inspect.explain import explain
from chainrule.inspect.report import inspect_run
from tests.graph_models import GRAPH_MODELS, batch


def test_fan_out_is_explained_as_a_sum():
    model = GRAPH_MODELS["fan_out_concat"][0]()
    text = explain(model, batch([(2, 6, 6)], 1, 0)[0], 3)
    assert ("the gradient of 'stem' is the sum of the gradients from 3 readers: 'branch_a', "
            "'branch_b', 'branch_c'") in " ".join(text.split())
    assert "        cat = cat(branch_a, tanh, branch_c)" in text
    assert ("backward order (the reverse): head, flatten, cat, branch_c, tanh, branch_b, "
            "branch_a, stem, stem_conv") in text
    assert "shape:   [(1, 2, 6, 6), (1, 3, 6, 6), (1, 4, 6, 6)] -> (1, 9, 6, 6)" in text
    backward = text.split("BACKWARD")[1]
    order = [backward.index(f"[{n}]") for n in ("head", "cat", "branch_c", "branch_a", "stem")]
    assert order == sorted(order)


def test_shared_layer_has_a_paragraph_per_call():
    model = GRAPH_MODELS["shared_split"][0](np.float64)
    text = explain(model, batch([(8,)], 2, 0, np.float64), np.zeros((2, 8)), cr.MSELoss())
    forward, backward = text.split("BACKWARD")
    assert forward.count("[shared] Linear") == 1 and forward.count("[shared@1] Linear") == 1
    assert forward.index("[shared] Linear") < forward.index("[shared@1] Linear")
    assert backward.index("[shared@1] Linear") < backward.index("[shared] Linear")
    flat = " ".join(text.split())
    assert "the gradient of 'halves:0' is the sum of the gradients from 2 readers: 'add', " \
           "'concat'" in flat
    assert "the gradient of 'halves:1' is the sum of the gradients from 2 readers: " \
           "'sigmoid', 'add'" in flat
    # Chunk's backward takes one gradient per piece and returns one
    assert "dL/dy        [(2, 4), (2, 4)]" in backward


def test_several_inputs_and_outputs_and_nesting():
    model = GRAPH_MODELS["two_in_two_out"][0](np.float64)
    x = batch([(1, 4, 4), (3,)], 2, 0, np.float64)
    with pytest.raises(ValueError, match=r"2 outputs \['logits', 'aux'\]; y must be a list"):
        explain(model, x, np.zeros((2, 4)), cr.MSELoss())
    text = explain(model, x, [np.zeros((2, 4)), np.ones((2, 1))], cr.MSELoss())
    assert "FORWARD: input x [(2, 1, 4, 4), (2, 3)]" in text
    assert "(summed over the outputs)" in text
    assert "the gradient of 'flatten' is the sum of the gradients from 2 readers: 'linear', " \
           "'aux'" in " ".join(text.split())
    nested = GRAPH_MODELS["nested"][0]()
    text = explain(nested, batch([(2, 4, 4)], 1, 0)[0], 1)
    assert "[1] Graph: 6 nodes" in text and "[1.inner] Graph: 2 nodes" in text
    assert "[1.inner.conv2d@1] Conv2d" in text
    assert "Every tensor of graph '1.splitter' is read once" in text


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_explain_command_on_a_graph_checkpoint(tmp_path, capsys):
    model = GRAPH_MODELS["fan_out_concat"][0]()
    # no metadata: the graph's declared input (2, 6, 6) and its 5 outputs give the shapes
    path = cr.save(model, tmp_path / "graph.safetensors")
    args = _parse(["explain", "--checkpoint", str(path), "--seed", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "FORWARD: input x (1, 2, 6, 6)" in out
    assert "the gradient of 'stem' is the sum of the gradients from 3 readers" in " ".join(
        out.split())


def test_inspect_report_on_a_graph_run(tmp_path):
    pytest.importorskip("matplotlib")
    x = cr.Input((1, 8, 8), name="image")
    stem = cr.ReLU()(cr.Conv2d(1, 4, 3, padding=1)(x), name="stem")
    left, right = cr.Chunk(2, dim=1)(stem)
    pooled = cr.MaxPool2d(2)(cr.Add()([left, right]))
    y = cr.Linear(2 * 16, 3)(cr.Flatten()(pooled))
    model = cr.Graph(x, y).reset_parameters(0)
    cr.save(model, tmp_path / "last.safetensors", classes=["a", "b", "c"])
    report = inspect_run(tmp_path)
    assert report.is_file() and "Saliency map" in report.read_text()
