"""explain: a formula line for every layer type, numbers that match the real step, and the
command line."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import derivative_of, explain
from chainrule.inspect.cli_inspect import add_explain_parser


def every_layer_model() -> cr.Sequential:
    """Every built-in layer type but BatchNorm1d, for a (1, 1, 8, 8) input."""
    return cr.Sequential(
        cr.Conv2d(1, 4, 3, padding=1), cr.BatchNorm2d(4), cr.ReLU(),
        cr.Residual(cr.Sequential(cr.Conv2d(4, 4, 3, padding=1), cr.Tanh())),
        cr.MaxPool2d(2), cr.Conv2d(4, 4, 1), cr.LeakyReLU(0.1), cr.AvgPool2d(2), cr.Sigmoid(),
        cr.AdaptiveAvgPool2d(1), cr.Flatten(), cr.Dropout(0.25, rng=0), cr.Linear(4, 3),
    ).reset_parameters(0)


def formula_lines(text: str) -> list[str]:
    """The equations of each layer's formula block, one a line, without indentation."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("    formula: "):
            inside = True
            lines.append(line[len("    formula: "):])
        elif inside and line.startswith("             "):
            lines.append(line.strip())
        else:
            inside = False
    return lines


def test_every_layer_gets_its_formula_and_shapes():
    model = every_layer_model()
    x = np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32)
    text = explain(model, x, 1, lr=0.1)
    shown = formula_lines(text)
    for name, layer in model.named_modules():
        if isinstance(layer, cr.Sequential):
            continue
        first, *rest = derivative_of(layer).formula.split("; ")
        assert first in shown, f"{name}: {first!r} missing"
        for part in rest:
            assert part in shown, f"{name}: {part!r} missing"
        assert f"[{name}] " in text
    assert "ReLU: dL/dx = dL/dy * [x > 0]" in shown
    assert "MaxPool2d: route dL/dy to the argmax of each window" in shown
    assert "Conv2d: dL/dW = correlate(x, dL/dy)" in shown
    assert "dL/dx = full-convolve(dL/dy, flipped W)" in shown
    assert "(1, 1, 8, 8) -> (1, 4, 8, 8)" in text  # the first conv's forward shape
    assert re.search(r"dL/dweight\s+\(4, 1, 3, 3\)\s+\|\|dL/dweight\|\| = ", text)
    assert "CrossEntropyLoss: dL/dz = (softmax(z) - onehot(y)) / N" in shown


def test_the_shown_update_is_the_real_sgd_step():
    model = every_layer_model()
    twin = every_layer_model()
    x = np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32)
    lr = 0.1
    text = explain(model, x, 1, lr=lr)

    loss_fn = cr.CrossEntropyLoss()  # the same step by hand on an identical model
    loss_fn(twin.forward(x[None]), np.array([1]))
    twin.backward(loss_fn.backward())
    for (name, p), q in zip(twin.named_parameters(), model.parameters()):
        assert np.allclose(q.data, p.data - np.float32(lr) * p.grad, rtol=0, atol=1e-7), name

    updates = re.findall(r"w <- w - lr \* dL/dw = (\S+) - ([\d.]+) \* \((\S+)\) = (\S+)", text)
    assert len(updates) == 5  # one weight per layer with parameters
    for before, step, grad, after in updates:
        assert float(step) == lr
        assert float(after) == pytest.approx(float(before) - lr * float(grad), rel=1e-4, abs=1e-9)


def test_batchnorm1d_needs_two_samples():
    model = cr.Sequential(cr.Linear(4, 3), cr.BatchNorm1d(3), cr.Linear(3, 2))
    with pytest.raises(ValueError, match="at least 2"):
        explain(model, np.zeros((1, 4), np.float32), 0)
    text = explain(model, np.ones((2, 4), np.float32) * [[1], [2]], np.array([0, 1]))
    assert "BatchNorm1d: dL/dgamma = sum(dL/dy * x_hat)" in formula_lines(text)


def test_explain_command_on_lenet5(capsys):
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers())
    args = parser.parse_args(["explain", "--model", "lenet5", "--seed", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    shown = formula_lines(out)
    for formula in ("Conv2d: dL/dW = correlate(x, dL/dy)", "ReLU: dL/dx = dL/dy * [x > 0]",
                    "MaxPool2d: route dL/dy to the argmax of each window",
                    "Flatten: dL/dx = reshape(dL/dy, shape of x)",
                    "Linear: dL/dW = (dL/dy)^T x"):
        assert formula in shown
    assert out.count("w <- w - lr * dL/dw = ") == 5  # 2 conv + 3 linear layers
    assert "(1, 1, 28, 28) -> (1, 6, 28, 28)" in out


def test_grouped_and_depthwise_convolutions_say_what_groups_change():
    assert "groups" not in derivative_of(cr.Conv2d(4, 4, 3)).words
    assert "depthwise (groups = 4)" in derivative_of(cr.Conv2d(4, 4, 3, groups=4)).words
    assert "the 2 input channels of its group" in derivative_of(cr.Conv2d(4, 6, 3, groups=2)).words
    assert "depthwise (groups = 3)" in derivative_of(cr.Conv1d(3, 6, 3, groups=3)).words
