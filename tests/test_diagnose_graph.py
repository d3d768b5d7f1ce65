"""find_non_finite on graph models: the replay runs the graph's nodes one at a time and
names the node (``graph.node``, ``name@1`` for a shared layer's second call) whose output
or gradient first became non-finite, and a gradient sum that overflowed."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.diagnose import find_non_finite

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")


def _data(n: int = 4):
    rng = np.random.default_rng(0)
    return rng.uniform(1.0, 2.0, (n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_the_node_that_overflowed_is_named():
    x = cr.Input((4,))
    a = cr.Linear(4, 4)(x, name="calm")
    b = cr.Linear(4, 4)(x, name="wild")
    graph = cr.Graph(x, cr.Concat(1)([a, b]))
    model = cr.Sequential(graph, cr.Linear(8, 3)).reset_parameters(0)
    graph.get_layer("wild").weight.data[0] = 1e38
    xb, yb = _data()
    message = find_non_finite(model, cr.CrossEntropyLoss(), xb, yb)
    assert "layer '0.wild' Linear(in_features=4, out_features=4)" in message, message
    assert "from a finite input" in message


def test_a_shared_layers_second_call_is_named():
    x = cr.Input((4,))
    shared = cr.Linear(4, 4)
    h = shared(x, name="shared")
    y = shared(h, name="shared")
    model = cr.Graph(x, y).reset_parameters(0)
    shared.weight.data[...] = 1e20           # x ~ 1.5: first call ~6e20, second ~2.4e41
    shared.bias.data[...] = 0.0
    xb, yb = _data()
    message = find_non_finite(model, cr.MSELoss(), xb, np.zeros((4, 4), np.float32))
    assert "layer 'shared@1' Linear" in message, message


def test_an_overflowing_gradient_sum_is_named():
    x = cr.Input((4,))
    h = cr.Identity()(x, name="stem")
    a = cr.Linear(4, 1)(h, name="a")
    b = cr.Linear(4, 1)(h, name="b")
    model = cr.Graph(x, cr.Add()([a, b])).reset_parameters(0)
    for name in ("a", "b"):   # dL/dy = 2 (0 - (-1)): each dL/dstem 2e38, their sum 4e38
        model.get_layer(name).weight.data[...] = 1e38
        model.get_layer(name).bias.data[...] = 0.0
    message = find_non_finite(model, cr.MSELoss(reduction="sum"), np.zeros((1, 4), np.float32),
                              np.full((1, 1), -1.0, np.float32))
    assert "the gradient of tensor 'stem'" in message and "the sum overflowed" in message, \
        message


def test_a_healthy_graph_replays_finite_and_is_left_as_it_was():
    x = cr.Input((4,))
    shared = cr.Linear(4, 4)
    h = shared(cr.Tanh()(shared(x)))
    a, b = cr.Chunk(2, dim=1)(h)
    model = cr.Graph(x, cr.Linear(2, 3)(cr.Multiply()([a, b]))).reset_parameters(1)
    xb, yb = _data()
    loss_fn = cr.CrossEntropyLoss()
    model.forward(xb)
    loss_fn(model.forward(xb), yb)
    model.backward(loss_fn.backward())
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    message = find_non_finite(model, loss_fn, xb, yb)
    assert message.startswith("replaying the step gave finite values everywhere"), message
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad, grads[n], err_msg=n)
