"""summary() on graph models: one row per layer (a shared layer once, xK), several input
shapes, list shapes for several outputs; the counts agree with the parameters."""

from __future__ import annotations

import pytest

import chainrule as cr
from tests.graph_models import GRAPH_MODELS


def _summary(name, **kwargs):
    make, shapes = GRAPH_MODELS[name]
    model = make()
    return model, model.summary(shapes if len(shapes) > 1 else shapes[0], **kwargs)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_every_graph_model_is_summarized(name):
    model, s = _summary(name, batch_size=3)
    assert s.trainable_params == sum(p.size for p in model.parameters())
    assert [r.name for r in s.rows[1:]] == [n for n, _ in model.named_modules()][1:]
    assert all(r.calls >= 1 for r in s.rows)        # every layer ran
    assert "Graph" in str(s) or "Sequential" in str(s)


def test_shared_layer_is_one_row_with_its_calls():
    model, s = _summary("shared_split")
    row = next(r for r in s.rows if r.name == "shared")
    assert row.calls == 2 and row.params == 8 * 8 + 8
    assert row.mult_adds == 2 * 8 * 8                # both calls, batch 1
    assert "(1, 8) x2" in str(s)
    assert [r.name for r in s.rows].count("shared") == 1


def test_several_inputs_and_outputs():
    model, s = _summary("two_in_two_out", batch_size=2)
    assert s.input_shape == [(2, 1, 4, 4), (2, 3)]
    assert s.output_shape == [(2, 4), (2, 1)]
    assert s.input_bytes == (2 * 16 + 2 * 3) * 4
    assert "Graph on input [(2, 1, 4, 4), (2, 3)] float32" in str(s)
    concat = next(r for r in s.rows if r.type == "Concat")
    assert concat.output_shape == (2, 10)
    _, split = _summary("no_conv")
    row = next(r for r in split.rows if r.type == "Split")
    assert row.output_shape == [(1, 3, 3), (1, 3, 3), (1, 3, 2)]
    assert row.output_bytes == 8 * (9 + 9 + 6)      # float64, all three pieces
    assert "[(1, 3, 3), (1, 3, 3), (1, 3, 2)]" in str(split)


def test_nested_graph_called_twice():
    model, s = _summary("nested")
    inner = {r.name: r for r in s.rows}
    assert inner["1.inner"].calls == 2 and inner["1.inner.conv2d"].calls == 2
    assert inner["1.splitter"].output_shape == [(1, 1, 4, 4), (1, 2, 4, 4)]
    folded = model.summary((2, 4, 4), max_depth=1)
    assert folded.total_params == s.total_params


def test_several_inputs_need_a_list_of_shapes():
    model = GRAPH_MODELS["two_in_two_out"][0]()
    with pytest.raises(ValueError, match=r"takes 2 inputs \['image', 'extra'\]; input_shape "
                                         r"must be a list"):
        model.summary((1, 4, 4))
    with pytest.raises(ValueError, match=r"failed in the model \(Graph\) .*input 'extra' "
                                         r"expects arrays of shape \(N, 3\)"):
        model.summary([(1, 4, 4), (4,)])


def test_failure_in_a_merge_layer_shows_its_input_shapes():
    x = cr.Input((2, None))
    model = cr.Graph(x, cr.Concat(1)([x, cr.Linear(4, 3)(x)]))
    with pytest.raises(ValueError, match=r"on its input of shape \[\(1, 2, 4\), \(1, 2, 3\)\]"):
        model.summary((2, 4))
    with pytest.raises(ValueError, match=r"layer 'linear' \(Linear.*\) on its input of shape "
                                         r"\(1, 2, 3\)"):
        model.summary((2, 3))
