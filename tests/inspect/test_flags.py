"""The dead-unit and vanishing/exploding-gradient flags fire on constructed failures and
stay quiet on a healthy network."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import Recorder
from chainrule.train import train_step
from tests.inspect.conftest import batch, small_convnet


def record_steps(model, x, y, steps: int = 3, **recorder_args) -> Recorder:
    optimizer = cr.optim.SGD(model.parameters(), lr=0.01)
    recorder = Recorder(**recorder_args).attach(model, optimizer)
    for _ in range(steps):
        train_step(model, cr.CrossEntropyLoss(), optimizer, x, y)
    return recorder.detach()


def test_dead_relu_units_are_flagged():
    model = cr.Sequential(cr.Linear(4, 8, rng=0), cr.ReLU(), cr.Linear(8, 2, rng=1))
    model[0].bias.data[[1, 5]] = -100.0  # pre-activations far below 0 for any input
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    recorder = record_steps(model, x, np.arange(32) % 2)
    flags = recorder.flags()
    assert flags["dead_units"] == {"1": [1, 5]}
    assert recorder.records["layer_stats"]["1"]["dead_units"] == [2, 2, 2]
    assert "2 of 8 channels" in recorder.summary()


def test_dead_conv_channel_is_flagged():
    model = small_convnet()
    model[0].bias.data[2] = -100.0
    x, y = batch()
    assert record_steps(model, x, y).flags()["dead_units"] == {"1": [2]}


def test_healthy_network_has_no_flags():
    x, y = batch(n=16)
    flags = record_steps(small_convnet(), x, y).flags()
    assert flags["dead_units"] == {}
    assert not flags["vanishing"] and not flags["exploding"]
    assert 1e-3 < flags["gradient_ratio"] < 1e3


def test_a_unit_silent_on_one_batch_only_is_not_flagged():
    model = cr.Sequential(cr.Linear(1, 1, rng=0), cr.ReLU(), cr.Linear(1, 2, rng=1))
    model[0].weight.data[...] = 1.0
    model[0].bias.data[...] = 0.0
    optimizer = cr.optim.SGD(model.parameters(), lr=0.0)
    recorder = Recorder(dead_window=3).attach(model, optimizer)
    for sign in (1.0, -1.0):  # fires on the first batch, silent on the second
        train_step(model, cr.CrossEntropyLoss(), optimizer, np.full((4, 1), sign, np.float32),
                   np.zeros(4, dtype=np.int64))
    assert recorder.records["layer_stats"]["1"]["dead_units"] == [0, 1]
    assert recorder.flags()["dead_units"] == {}
    recorder.detach()


def deep_stack(depth: int, activation, scale: float) -> cr.Sequential:
    layers = []
    for i in range(depth):
        layers += [cr.Linear(16, 16, rng=i), activation()]
    model = cr.Sequential(*layers, cr.Linear(16, 2, rng=depth))
    for layer in model:
        if isinstance(layer, cr.Linear):
            layer.weight.data *= scale
    return model


def test_vanishing_gradients_are_flagged_on_a_deep_sigmoid_stack():
    model = deep_stack(8, cr.Sigmoid, scale=0.05)
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    recorder = record_steps(model, x, np.arange(16) % 2)
    flags = recorder.flags()
    assert flags["vanishing"] and not flags["exploding"]
    assert flags["gradient_ratio"] < 1e-3
    assert "VANISHING" in recorder.summary()


def test_exploding_gradients_are_flagged_on_a_deep_linear_stack_with_large_weights():
    model = deep_stack(6, cr.Tanh, scale=1.0)
    for layer in model:  # linear regime of tanh, weights that amplify 4x per layer
        if isinstance(layer, cr.Linear):
            layer.weight.data[...] = 4.0 * np.eye(16, dtype=np.float32)[:layer.out_features]
            layer.bias.data[...] = 0.0
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) * 1e-6
    flags = record_steps(model, x, np.arange(16) % 2, steps=1).flags()
    assert flags["exploding"] and not flags["vanishing"]
    assert flags["gradient_ratio"] == pytest.approx(4.0 ** 6, rel=1e-3)
