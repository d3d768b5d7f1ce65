"""fit, evaluate and predict: the history they report, reproducibility, modes, and the
non-finite-loss guard."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from chainrule.train import train_step

N_FEATURES, N_CLASSES = 4, 3


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable classification set: three Gaussian blobs in 4-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    centers = np.random.default_rng(100).standard_normal((N_CLASSES, N_FEATURES)) * 2.5
    return centers[y] + rng.standard_normal((n, N_FEATURES)), y


def classifier(seed: int = 0, dropout: bool = True, dtype=np.float32) -> cr.Sequential:
    layers = [cr.Linear(N_FEATURES, 16), cr.BatchNorm1d(16), cr.ReLU()]
    if dropout:
        layers.append(cr.Dropout(0.3))
    layers.append(cr.Linear(16, N_CLASSES))
    return cr.Sequential(*layers).reset_parameters(seed).to(dtype)


def assert_states_identical(a: cr.Layer, b: cr.Layer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), f"{key} differs"


# ----------------------------------------------------------------------------- history
def test_fit_returns_per_epoch_loss_and_accuracy():
    X, y = blobs(60, seed=1)
    model = classifier()
    batch_losses: dict[int, list[float]] = {}
    epoch_metrics = []
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
                     (X, y), epochs=4, batch_size=16, seed=0,
                     on_batch=lambda e, s, loss: batch_losses.setdefault(e, []).append(loss),
                     on_epoch=lambda e, m: epoch_metrics.append((e, m)))
    assert isinstance(history, cr.History)
    assert len(history.loss) == len(history.accuracy) == 4
    assert history.val_loss == [] and history.val_accuracy == []
    assert set(history.as_dict()) == {"loss", "accuracy"}
    # the epoch loss is the mean over samples: batches of 16, 16, 16 and 12
    sizes = [16, 16, 16, 12]
    for epoch in range(4):
        assert len(batch_losses[epoch]) == 4
        expected = sum(loss * n for loss, n in zip(batch_losses[epoch], sizes)) / 60
        assert history.loss[epoch] == pytest.approx(expected, rel=1e-12)
    assert all(0.0 <= a <= 1.0 for a in history.accuracy)
    assert history.loss[-1] < history.loss[0] and history.accuracy[-1] > 0.8, history
    assert [e for e, _ in epoch_metrics] == [0, 1, 2, 3]
    assert epoch_metrics[-1][1] == {"loss": history.loss[-1], "accuracy": history.accuracy[-1]}
    assert model.training, "fit leaves the model in training mode"


def test_fit_with_validation_data_reports_val_metrics_of_the_model_in_eval_mode():
    X, y = blobs(48, seed=2)
    Xv, yv = blobs(20, seed=3)
    model = classifier()
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.Adam(model.parameters(), lr=1e-2),
                     (X, y), epochs=3, batch_size=16, val=(Xv, yv), seed=1)
    assert len(history.val_loss) == len(history.val_accuracy) == 3
    assert set(history.as_dict()) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # the last epoch's validation metrics are those of the final model
    final = cr.evaluate(model, Xv, yv)
    assert history.val_loss[-1] == pytest.approx(final["loss"], rel=1e-6)
    assert history.val_accuracy[-1] == final["accuracy"]
    assert model.training


def test_fit_steps_the_scheduler_once_per_epoch():
    X, y = blobs(32, seed=4)
    model = classifier(dropout=False)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    scheduler = cr.optim.StepLR(optimizer, step_size=1, gamma=0.5)
    cr.fit(model, cr.CrossEntropyLoss(), optimizer, (X, y), epochs=3, batch_size=8,
           scheduler=scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_fit_with_zero_epochs_changes_nothing():
    X, y = blobs(8, seed=5)
    model = classifier()
    before = model.copy()
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
                     (X, y), epochs=0)
    assert history.as_dict() == {}
    assert_states_identical(model, before)


# ----------------------------------------------------------------------------- reproducibility
def run_fit(seed: int, model_seed: int = 0) -> cr.Sequential:
    X, y = blobs(50, seed=6)
    model = classifier(seed=model_seed)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cr.fit(model, cr.CrossEntropyLoss(), optimizer, (X, y), epochs=3, batch_size=8,
           shuffle=True, seed=seed)
    return model


def test_same_seed_gives_bitwise_identical_weights_with_dropout_and_shuffle():
    a, b = run_fit(seed=7), run_fit(seed=7)
    assert_states_identical(a, b)
    c = run_fit(seed=8)  # another seed: other shuffles and masks
    assert not np.array_equal(a[0].weight.data, c[0].weight.data)


def test_fit_does_not_touch_numpy_global_random_state():
    # The whole state: a few draws move only the position (item 2), not the key array.
    _, keys, position, has_gauss, gauss = np.random.get_state()
    keys = keys.copy()
    run_fit(seed=7)
    _, keys_after, *rest = np.random.get_state()
    assert np.array_equal(keys_after, keys) and rest == [position, has_gauss, gauss]


def test_fit_without_shuffle_is_the_plain_loop_over_ordered_batches():
    X, y = blobs(20, seed=9)
    model, twin = classifier(dropout=False), classifier(dropout=False)
    loss_fn = cr.CrossEntropyLoss()
    cr.fit(model, loss_fn, cr.optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=2,
           batch_size=6, shuffle=False)
    optimizer = cr.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(2):
        for start in range(0, 20, 6):
            train_step(twin, loss_fn, optimizer, X[start:start + 6], y[start:start + 6])
    assert_states_identical(model, twin)


# ----------------------------------------------------------------------------- predict, evaluate
def trained_model() -> tuple[cr.Sequential, np.ndarray, np.ndarray]:
    X, y = blobs(30, seed=10)
    model = classifier(dtype=np.float64)
    cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), (X, y),
           epochs=2, batch_size=10)
    return model, X, y


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_predict_in_batches_equals_one_eval_forward_and_restores_the_mode(mode):
    model, X, _ = trained_model()
    model.train(mode == "train")
    running = model[1].running_mean.copy()
    out = cr.predict(model, X, batch_size=7)
    assert model.training == (mode == "train")
    np.testing.assert_array_equal(model[1].running_mean, running)  # eval: stats frozen
    reference = model.copy().eval().forward(X)
    np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-14)
    # and differs from a training-mode forward (batch statistics, dropout)
    assert not np.allclose(out, model.copy().train().forward(X))
    assert all(m._cache is None for m in model.modules()), "predict must not leave caches"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_evaluate_in_batches_equals_one_eval_forward_and_restores_the_mode(mode):
    model, X, y = trained_model()
    model.train(mode == "train")
    metrics = cr.evaluate(model, X, y, batch_size=4)
    assert model.training == (mode == "train")
    out = model.copy().eval().forward(X)
    assert metrics["loss"] == pytest.approx(cr.CrossEntropyLoss()(out, y), rel=1e-12)
    assert metrics["accuracy"] == np.mean(out.argmax(axis=1) == y)
    mse = cr.evaluate(model, X, np.zeros((30, N_CLASSES)), loss_fn=cr.MSELoss(), batch_size=9)
    assert set(mse) == {"loss"}
    assert mse["loss"] == pytest.approx(np.mean(out ** 2), rel=1e-12)


def test_predict_and_evaluate_refuse_bad_data():
    model = classifier()
    with pytest.raises(ValueError, match="no samples"):
        cr.predict(model, np.zeros((0, N_FEATURES)))
    with pytest.raises(ValueError, match=r"evaluate: X has 3 samples but y has 2"):
        cr.evaluate(model, np.zeros((3, N_FEATURES)), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"fit: X has 3 samples but y has 4"):
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
               (np.zeros((3, N_FEATURES)), np.zeros(4, np.int64)))
    # Arguments in the wrong places (a loss as X, an (X, y) pair as y) are named, not a
    # NumPy "inhomogeneous shape" error.
    data = (np.zeros((3, N_FEATURES)), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match=r"evaluate: expected X as an array of samples "
                                        r"\(N, \.\.\.\), got CrossEntropyLoss"):
        cr.evaluate(model, cr.CrossEntropyLoss(), data)
    with pytest.raises(TypeError, match=r"evaluate: expected y as an array of samples "
                                        r"\(N, \.\.\.\), got tuple"):
        cr.evaluate(model, data[0], (data[0], data[1]))


# ----------------------------------------------------------------------------- regression
def regression_data(n: int = 64, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = X @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.01 * rng.standard_normal((n, 1))
    return X, y


def test_mse_regression_fit_reduces_the_loss():
    X, y = regression_data()
    model = cr.Linear(3, 1, rng=0)
    history = cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=0.05), (X, y),
                     epochs=15, batch_size=8, seed=0)
    assert history.accuracy == [] and set(history.as_dict()) == {"loss"}
    assert history.loss[-1] < 0.01 * history.loss[0], history.loss
    np.testing.assert_allclose(model.weight.data, [[1.5, -2.0, 0.5]], atol=0.05)


def test_an_absurd_learning_rate_raises_non_finite_loss_error_naming_epoch_and_step():
    X, y = regression_data(32)
    model = cr.Linear(3, 1, rng=0)
    seen: list[tuple[int, int]] = []
    with pytest.raises(cr.NonFiniteLossError) as info, np.errstate(over="ignore", invalid="ignore"):
        cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=1e6), (X, y), epochs=5,
               batch_size=8, seed=0, on_batch=lambda e, s, loss: seen.append((e, s)))
    assert isinstance(info.value, FloatingPointError)
    message = str(info.value)
    match = re.search(r"epoch (\d+), step (\d+)", message)
    assert match, message
    # it names (1-based) the first step whose loss was not finite: the one after the last
    # step the on_batch callback saw
    last_epoch, last_step = seen[-1]
    expected = (last_epoch + 1, last_step + 2) if last_step < 3 else (last_epoch + 2, 1)
    assert (int(match.group(1)), int(match.group(2))) == expected, (message, seen)
    assert "learning rate" in message


def test_the_non_finite_step_is_not_applied():
    X, y = regression_data(32)
    model = cr.Linear(3, 1, rng=0)
    with pytest.raises(cr.NonFiniteLossError), np.errstate(over="ignore", invalid="ignore"):
        cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=1e6), (X, y), epochs=5,
               batch_size=8, seed=0)
    assert all(np.all(np.isfinite(p.data)) for p in model.parameters()), "weights went non-finite"


def test_fit_and_evaluate_refuse_a_loss_without_reduction():
    model = cr.Sequential(cr.Linear(3, 2))
    X, y = np.zeros((4, 3), np.float32), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"fit: .*reduction='none'.*'mean' or 'sum'"):
        cr.fit(model, cr.CrossEntropyLoss(reduction="none"),
               cr.optim.SGD(model.parameters(), lr=0.1), (X, y))
    with pytest.raises(ValueError, match=r"evaluate: .*reduction='none'"):
        cr.evaluate(model, X, y, loss_fn=cr.MSELoss(reduction="none"))


def test_accuracy_counts_per_pixel_and_leaves_out_ignored_targets():
    # 1x1 convolution classifier on 2x2 "images": accuracy is over pixels, and the
    # pixels whose target is ignore_index count neither as right nor as wrong.
    model = cr.Sequential(cr.Conv2d(2, 3, 1, rng=0)).eval()
    X = np.random.default_rng(0).standard_normal((2, 2, 2, 2)).astype(np.float32)
    pred = model.forward(X).argmax(axis=1)                     # (2, 2, 2)
    y = pred.copy()
    y[0, 0, 0] = (pred[0, 0, 0] + 1) % 3                       # one wrong pixel
    y[1, 1, 1] = -100                                          # one ignored pixel
    metrics = cr.evaluate(model, X, y, loss_fn=cr.CrossEntropyLoss())
    assert metrics["accuracy"] == 6 / 7
    nll = cr.evaluate(cr.Sequential(cr.Conv2d(2, 3, 1, rng=0), cr.LogSoftmax(dim=1)), X, y,
                      loss_fn=cr.NLLLoss())
    assert nll["accuracy"] == 6 / 7


@pytest.mark.parametrize("loss_fn", [cr.KLDivLoss("batchmean"), cr.KLDivLoss("mean"),
                                     cr.KLDivLoss("sum"), cr.MSELoss()], ids=repr)
def test_the_epoch_loss_of_fit_is_the_loss_over_the_whole_set(loss_fn):
    # lr 0: the weights stay, so the epoch's loss is the loss of the whole set, whatever
    # the reduction ("sum": the sum over the set, divided by its size).
    rng = np.random.default_rng(0)
    X, t = rng.standard_normal((30, 4)), rng.uniform(0.1, 1.0, (30, 3))
    t /= t.sum(axis=1, keepdims=True)
    model = cr.Sequential(cr.Linear(4, 3, rng=0), cr.LogSoftmax(dim=1)).to(np.float64)
    history = cr.fit(model, loss_fn, cr.optim.SGD(model.parameters(), lr=0.0), (X, t),
                     epochs=1, batch_size=8)
    whole = cr.evaluate(model, X, t, loss_fn=loss_fn)["loss"]
    expected = whole / len(X) if loss_fn.reduction == "sum" else whole
    assert history.loss[0] == pytest.approx(expected, rel=1e-12)
