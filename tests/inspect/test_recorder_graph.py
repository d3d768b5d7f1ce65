"""Recorder on graph models: one entry per call of a layer (``name``, ``name@1``, as the
graph names its nodes), forward calls in order and backward calls in reverse; layers of
several inputs or outputs are recorded over all of them. Each number is checked against
the arrays the same calls produce, captured by an independent hook."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import Recorder
from chainrule.inspect._hooks import install, remove
from tests.graph_models import GRAPH_MODELS, batch


def _watch(layer):
    """Every forward output and backward input gradient of ``layer``, in call order."""
    seen = {"forward": [], "backward": []}
    hooks = [install(layer, "forward", lambda _l, _x, y: seen["forward"].append(y)),
             install(layer, "backward", lambda _l, _g, dx: seen["backward"].append(dx))]
    return seen, hooks


def _flat(value):
    return np.concatenate([np.ravel(v) for v in value]) if isinstance(value, list) else value


def _step(model, x, target):
    """One recorded step without an optimizer: forward, MSE loss, backward, on_step."""
    out = model.forward(x)
    loss_fn = cr.MSELoss()
    loss_fn(out, target)
    model.backward(loss_fn.backward())


def test_shared_layer_gets_one_entry_per_call():
    model = GRAPH_MODELS["shared_split"][0](np.float64)
    shared, halves, cat = (model.get_layer(n) for n in ("shared", "halves", "concat"))
    watched = [_watch(layer) for layer in (shared, halves, cat)]
    recorder = Recorder().attach(model)
    names = [e["name"] for e in recorder.records["layers"]]
    assert names == ["shared", "shared@1", "tanh", "halves", "sigmoid", "add", "multiply",
                     "concat"]
    rng = np.random.default_rng(0)
    for step in range(2):
        x = rng.standard_normal((4, 8))
        _step(model, x, rng.standard_normal((4, 8)))
        recorder.on_step()
        stats = recorder.records["layer_stats"]
        (s_seen, _), (h_seen, _), (c_seen, _) = watched
        first, second = s_seen["forward"][-2:]
        assert stats["shared"]["mean"][step] == pytest.approx(first.mean(), rel=1e-12)
        assert stats["shared@1"]["mean"][step] == pytest.approx(second.mean(), rel=1e-12)
        assert stats["shared@1"]["std"][step] == pytest.approx(second.std(), rel=1e-12)
        # backward runs the second call first
        dx_second, dx_first = s_seen["backward"][-2:]
        assert stats["shared"]["grad_input_norm"][step] == pytest.approx(
            np.linalg.norm(dx_first), rel=1e-12)
        assert stats["shared@1"]["grad_input_norm"][step] == pytest.approx(
            np.linalg.norm(dx_second), rel=1e-12)
        pieces = h_seen["forward"][-1]                   # Chunk: two outputs
        assert stats["halves"]["mean"][step] == pytest.approx(_flat(pieces).mean(), rel=1e-12)
        dxs = c_seen["backward"][-1]                     # Concat: two input gradients
        assert stats["concat"]["grad_input_norm"][step] == pytest.approx(
            np.linalg.norm(_flat(dxs)), rel=1e-12)
    recorder.detach()
    for seen, hooks in watched:
        for hook in reversed(hooks):
            remove(hook)
    assert not any("forward" in m.__dict__ or "backward" in m.__dict__
                   for m in model.modules())


def test_graph_called_twice_inside_a_sequential_and_several_inputs(tmp_path):
    model = GRAPH_MODELS["nested"][0](np.float64)
    conv = model[1].get_layer("inner").get_layer("conv2d")
    (seen, hooks) = _watch(conv)
    recorder = Recorder().attach(model)
    names = [e["name"] for e in recorder.records["layers"]]
    assert names[:5] == ["0", "1.inner.conv2d", "1.inner.conv2d@1", "1.inner.tanh",
                         "1.inner.tanh@1"]
    assert "1.splitter.split" in names and "1.splitter.split@1" not in names
    rng = np.random.default_rng(1)
    _step(model, rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((3, 3)))
    recorder.on_step()
    stats = recorder.records["layer_stats"]
    assert stats["1.inner.conv2d@1"]["mean"][0] == pytest.approx(seen["forward"][1].mean(),
                                                                 rel=1e-12)
    assert stats["1.inner.conv2d"]["grad_input_norm"][0] == pytest.approx(
        np.linalg.norm(seen["backward"][1]), rel=1e-12)
    assert all(v[0] is not None for s in stats.values() for v in (s["mean"], s["std"]))
    assert recorder.records["ratio_layers"] == ["0", "3"]
    recorder.save(tmp_path)
    recorder.detach()
    for hook in reversed(hooks):
        remove(hook)

    two = GRAPH_MODELS["two_in_two_out"][0](np.float64)
    with Recorder().attach(two) as rec:
        xs = batch([(1, 4, 4), (3,)], 4, 2, np.float64)
        outs = two.forward(xs)
        two.backward([np.ones_like(outs[0]), None])   # the aux output has no loss
        rec.on_step()
        stats = rec.records["layer_stats"]
        assert stats["aux"]["grad_input_norm"][0] is None      # not reached: no backward
        assert stats["concat"]["grad_input_norm"][0] > 0


def test_fit_with_a_recorder_on_a_graph(tmp_path):
    model = GRAPH_MODELS["fan_out_concat"][0]()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.05)
    x = batch([(2, 6, 6)], 16, 3)
    y = np.random.default_rng(3).integers(0, 5, 16)
    with Recorder().attach(model, optimizer) as recorder:
        cr.fit(model, cr.CrossEntropyLoss(), optimizer, (x, y), epochs=2, batch_size=8,
               on_batch=recorder.on_batch)
    assert len(recorder.records["step"]) == 4
    assert recorder.records["gradient_ratio"][-1] is not None
    assert recorder.records["layer_stats"]["stem"]["zero_fraction"][-1] is not None
