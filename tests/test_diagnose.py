"""find_non_finite and fit's NonFiniteLossError: the first layer that produced a NaN or
an Inf is named, by its dotted path and its repr, on models built to overflow at a
known place; inputs and targets that are already non-finite are named as such."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.diagnose
from chainrule.diagnose import find_non_finite

# The models here overflow on purpose; NumPy's warnings about it are expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")


def overflowing_model() -> cr.Sequential:
    """float32 model whose layer '2.block.0' overflows to +inf on positive inputs.

    '0' maps the positive input to values >= 4, ReLU keeps them; '2.block.0' has a row of
    1e38 weights, so that row sums to at least 8 * 4 * 1e38 > 3.4e38 (float32 max): +inf.
    ReLU keeps the inf, the residual adds it, and the last Linear mixes +inf with weights
    of both signs into NaN, so the loss is NaN.
    """
    model = cr.Sequential(
        cr.Linear(4, 8), cr.ReLU(),
        cr.Residual(cr.Sequential(cr.Linear(8, 8), cr.ReLU())),
        cr.Linear(8, 3),
    ).reset_parameters(0)
    model[0].weight.data[...] = 1.0
    model[0].bias.data[...] = 0.0
    model[2].block[0].weight.data[0] = 1e38
    return model


def positive_data(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(1.0, 2.0, (n, 4)).astype(np.float32), rng.integers(0, 3, n)


def test_fit_names_the_layer_that_overflowed_and_keeps_the_weights():
    model = overflowing_model()
    before = model.state_dict()
    X, y = positive_data()
    with pytest.raises(cr.NonFiniteLossError) as info:
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, y),
               epochs=2, batch_size=4)
    message = str(info.value)
    assert "epoch 1, step 1" in message
    assert "layer '2.block.0' Linear(in_features=8, out_features=8)" in message, message
    assert "Inf" in message and "from a finite input" in message
    # The failed step was not applied: no NaN update reached the weights.
    after = model.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_nan_in_the_input_is_named_as_input():
    model = cr.Sequential(cr.Linear(4, 5), cr.Tanh(), cr.Linear(5, 3)).reset_parameters(1)
    X, y = positive_data(12)
    X[5, 2] = np.nan                                     # in the second batch of 4
    with pytest.raises(cr.NonFiniteLossError) as info:
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, y),
               epochs=1, batch_size=4, shuffle=False)
    message = str(info.value)
    assert "epoch 1, step 2" in message
    assert "the input batch already holds non-finite values (1 NaN among 16 values)" in message


def test_non_finite_targets_are_named():
    model = cr.Sequential(cr.Linear(4, 2)).reset_parameters(2)
    X, _ = positive_data(4)
    targets = np.ones((4, 2), np.float32)
    targets[1, 0] = np.inf
    with pytest.raises(cr.NonFiniteLossError, match="the targets already hold non-finite values"):
        cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, targets))


def test_loss_overflow_from_finite_outputs_then_the_backward_layer():
    """Finite outputs of ~1e30 square to inf in float32 (the loss), and the backward
    pass of the last layer multiplies its ~1e30 upstream gradient by 1e30 weights."""
    model = cr.Sequential(cr.Linear(2, 2), cr.Sigmoid(), cr.Linear(2, 2)).reset_parameters(3)
    model[2].weight.data[...] = 1e30
    X = np.ones((4, 2), np.float32)
    with pytest.raises(cr.NonFiniteLossError) as info:
        cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, np.zeros((4, 2))))
    message = str(info.value)
    assert "the loss MSELoss(reduction='mean') became inf from finite model outputs" in message
    assert "its input gradient" in message and "layer '2' Linear(in_features=2, out_features=2)" \
        in message, message


def test_non_finite_parameters_point_to_an_earlier_update():
    model = cr.Sequential(cr.Conv2d(1, 2, 3, padding=1), cr.ReLU(), cr.Flatten(),
                          cr.Linear(2 * 4 * 4, 3)).reset_parameters(4)
    model[3].weight.data[1, 5] = np.nan
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    message = find_non_finite(model, cr.CrossEntropyLoss(), x, np.array([0, 1]))
    assert message.startswith("the output of layer '3' Linear(in_features=32, out_features=3)")
    assert "parameter(s) weight already hold NaN/Inf" in message


def test_the_replay_reuses_dropout_masks_and_leaves_the_model_as_it_was():
    model = cr.Sequential(cr.Linear(4, 6), cr.Dropout(0.5, rng=7), cr.BatchNorm1d(6),
                          cr.Linear(6, 3)).reset_parameters(5)
    X, y = positive_data(8)
    loss_fn = cr.CrossEntropyLoss()
    loss_fn(model.forward(X), y)          # the step's forward: a dropout mask is drawn
    rng_state = dict(model[1].rng.bit_generator.state)
    state = model.state_dict()
    message = find_non_finite(model, loss_fn, X, y)
    assert message.startswith("replaying the step gave finite values everywhere")
    assert model[1].rng.bit_generator.state == rng_state, "the replay drew a new dropout mask"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert all(p.grad.sum() == 0 for p in model.parameters())
    assert all(m._cache is None for m in model.modules())


def test_works_on_a_model_in_eval_mode_and_restores_it():
    model = overflowing_model().eval()
    X, y = positive_data(4)
    message = find_non_finite(model, cr.CrossEntropyLoss(), X, y)
    assert "layer '2.block.0'" in message
    assert not model.training and not any(m._keep_cache_in_eval for m in model.modules())


def test_a_bare_layer_is_named_as_the_model():
    layer = cr.Linear(4, 3).reset_parameters(0)
    layer.weight.data[0] = 1e38
    X, y = positive_data(2)
    assert find_non_finite(layer, cr.CrossEntropyLoss(), X * 10, y).startswith(
        "the output of the model itself, Linear(in_features=4, out_features=3)")


def test_healthy_steps_never_run_the_diagnosis(monkeypatch):
    def fail(*args):
        raise AssertionError("find_non_finite called on a healthy step")

    # (fit's TerminateOnNaN looks it up in chainrule.diagnose when a loss is non-finite)
    monkeypatch.setattr(chainrule.diagnose, "find_non_finite", fail)
    model = cr.Sequential(cr.Linear(4, 3)).reset_parameters(0)
    X, y = positive_data(16)
    cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, y),
           epochs=2, batch_size=4)


def test_dropout_replays_its_last_mask_for_the_diagnosis(monkeypatch):
    """diagnose asks Dropout for its kept mask (Dropout.replay) rather than reading the
    layer's private cache, and the loss releases its own cache."""
    drop = cr.Dropout(0.5, rng=1)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    y = drop.forward(x)
    np.testing.assert_array_equal(drop.replay(x), y)       # the same mask, no fresh draw
    assert drop.replay(x[:2]) is None                        # another shape: none kept

    calls = {"replay": 0, "release": 0}
    real_replay, real_release = cr.Dropout.replay, cr.Loss.release
    monkeypatch.setattr(cr.Dropout, "replay", lambda self, a: calls.__setitem__(
        "replay", calls["replay"] + 1) or real_replay(self, a))
    monkeypatch.setattr(cr.Loss, "release", lambda self: calls.__setitem__(
        "release", calls["release"] + 1) or real_release(self))
    model = cr.Sequential(cr.Linear(6, 3, rng=0), cr.Dropout(0.5, rng=2))
    loss_fn = cr.CrossEntropyLoss()
    loss_fn(model.forward(x), np.zeros(4, np.int64))
    find_non_finite(model, loss_fn, x, np.zeros(4, np.int64))
    assert calls == {"replay": 1, "release": 1}
    with pytest.raises(RuntimeError):
        loss_fn.backward()                                   # released: nothing to go back on
