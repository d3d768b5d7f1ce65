"""chainrule.inspect.explain.loss_derivative: a backward formula for every loss class,
options and reduction, and explain() showing it."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import explain
from chainrule.inspect.explain import _LOSS_DERIVATIVES, loss_derivative

LOSS_NAMES = sorted(n for n in cr.losses.__all__ if n != "Loss")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_has_a_formula_for_every_reduction(name, reduction):
    cls = getattr(cr, name)
    assert cls in _LOSS_DERIVATIVES, f"{name} has no entry in _LOSS_DERIVATIVES"
    formula = loss_derivative(cls(reduction=reduction))
    assert formula.startswith(f"{name}: dL/d") and "see its backward()" not in formula, formula
    first = formula.split("; ")[0]
    if reduction == "none":
        assert first.endswith("* g (g: the upstream gradient of each element's loss)"), first
    elif reduction == "mean":
        assert first.endswith((" / N", " / (number of elements)")), first
    else:
        assert " / N" not in first and "number of elements" not in first and " g " not in first


@pytest.mark.parametrize("loss_fn, expected", [
    (cr.CrossEntropyLoss(), "CrossEntropyLoss: dL/dz = (softmax(z) - onehot(y)) / N"),
    (cr.CrossEntropyLoss(label_smoothing=0.1),
     "CrossEntropyLoss: dL/dz = (softmax(z) - q) / N; q = (1 - 0.1) onehot(y) + 0.1 / C"),
    (cr.CrossEntropyLoss(weight=[1.0, 2.0], ignore_index=0),
     "CrossEntropyLoss: dL/dz = w[y] (softmax(z) - onehot(y)) / sum(w[y]); rows whose y = "
     "ignore_index (0) get 0 and leave sum(w[y])"),
    (cr.CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.2, reduction="sum"),
     "CrossEntropyLoss: dL/dz = ((1 - eps) w[y] (softmax(z) - onehot(y)) + eps/C (softmax(z) "
     "sum(w) - w)); eps = 0.2"),
    (cr.NLLLoss(weight=[1.0, 2.0]), "NLLLoss: dL/dx = -w[y] onehot(y) / sum(w[y])"),
    (cr.BCELoss(weight=[2.0]),
     "BCELoss: dL/dp = w * (p - y) / max(p (1 - p), 1e-12) / (number of elements)"),
    (cr.BCEWithLogitsLoss(), "BCEWithLogitsLoss: dL/dx = (sigmoid(x) - y) / (number of elements)"),
    (cr.BCEWithLogitsLoss(pos_weight=[3.0], reduction="sum"),
     "BCEWithLogitsLoss: dL/dx = ((1 + (pos_weight - 1) y) sigmoid(x) - pos_weight y)"),
    (cr.MSELoss(), "MSELoss: dL/dpred = 2 (pred - target) / (number of elements)"),
    (cr.L1Loss("sum"), "L1Loss: dL/dpred = sign(pred - target)"),
    (cr.SmoothL1Loss(beta=0.5),
     "SmoothL1Loss: dL/dpred = (d / beta if |d| < beta else sign(d)) / (number of elements); "
     "d = pred - target, beta = 0.5"),
    (cr.SmoothL1Loss("sum", beta=0), "SmoothL1Loss: dL/dpred = sign(pred - target); beta = 0: L1"),
    (cr.HuberLoss("sum", delta=2), "HuberLoss: dL/dpred = clip(pred - target, -delta, delta); "
                                   "delta = 2.0"),
    (cr.KLDivLoss("batchmean"), "KLDivLoss: dL/dx = -target / N (the batch size)"),
    (cr.KLDivLoss("sum", log_target=True), "KLDivLoss: dL/dx = -exp(target)"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 3 else None)
def test_formulas_follow_the_options(loss_fn, expected):
    assert loss_derivative(loss_fn) == expected


def test_a_subclass_gets_its_parents_formula_and_a_foreign_loss_a_pointer():
    class Mine(cr.HuberLoss):
        pass

    class Other(cr.Loss):
        pass

    assert loss_derivative(Mine()).startswith("HuberLoss: dL/dpred = clip(")
    assert loss_derivative(Other()) == "Other: see its backward()"


@pytest.mark.parametrize("loss_fn, head, y", [
    (cr.NLLLoss(), [cr.LogSoftmax(dim=1)], 2),
    (cr.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0]), [], np.array([[1.0, 0.0, 1.0]])),
], ids=["nll", "bce_with_logits"])
def test_explain_shows_the_loss_formula(loss_fn, head, y):
    model = cr.Sequential(cr.Flatten(), cr.Linear(4, 3), *head).reset_parameters(0)
    x = np.random.default_rng(0).standard_normal((1, 2, 2)).astype(np.float32)
    text = explain(model, x, y, loss_fn=loss_fn)
    assert f"formula: {loss_derivative(loss_fn)}" in text
    assert f"LOSS: {loss_fn!r} = " in text
