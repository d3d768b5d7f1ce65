"""Gradient clipping (chainrule.utils) against torch.nn.utils: the total norm and the
clipped gradients over grids of norm types, max norms and parameter sets; then clipping
inside ``fit`` (against a torch loop), ``chainrule train --clip-grad-norm`` (against a
hand-written loop) and its resume."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import runner
from chainrule.cli import main
from chainrule.layers.base import backward_parameters_only
from chainrule.utils import (clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_,
                             get_total_norm)
from tests.helpers import each_dtype, float32_tolerance, rel_error

TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}

# Shapes of the parameters; "with_zero" has one all-zero gradient among others.
PARAMETER_SETS = {
    "single": [(7, 5)],
    "several": [(8, 3, 3, 3), (8,), (10, 72), (10,)],
    "with_zero": [(4, 6), (6,), (3, 4)],
}
NORM_TYPES = [1.0, 2.0, 3.0, math.inf]


def _pair(shapes, dtype, seed: int = 0, zero: int | None = None):
    """The same gradients as chainrule Parameters and as torch leaf tensors."""
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    if zero is not None:
        grads[zero][...] = 0
    ours = []
    for g in grads:
        p = cr.Parameter(np.zeros(g.shape, dtype))
        p.grad[...] = g
        ours.append(p)
    theirs = []
    for g in grads:
        t = torch.zeros(g.shape, dtype=TORCH_DTYPE[np.dtype(dtype)], requires_grad=True)
        t.grad = torch.tensor(g)
        theirs.append(t)
    return ours, theirs


def _tolerance(dtype, shapes) -> float:
    # The total norm sums every entry once; the scaling adds one rounding per entry.
    terms = sum(math.prod(s) for s in shapes)
    return 1e-9 if np.dtype(dtype) == np.float64 else float32_tolerance(terms)


@each_dtype
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("scale", [0.3, 3.0], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("name", list(PARAMETER_SETS))
def test_clip_grad_norm_matches_torch(name, scale, norm_type, dtype):
    shapes = PARAMETER_SETS[name]
    ours, theirs = _pair(shapes, dtype, zero=1 if name == "with_zero" else None)
    # max_norm below (0.3x) or above (3x) the total norm: clipped, or left alone.
    max_norm = scale * float(torch.nn.utils.get_total_norm([t.grad for t in theirs], norm_type))
    before = [p.grad.copy() for p in ours]
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    tol = _tolerance(dtype, shapes)
    assert isinstance(total, float)
    assert rel_error(np.float64(total), expected.double().numpy()) <= tol, (total, expected)
    for p, t in zip(ours, theirs):
        assert p.grad.dtype == dtype
        error = rel_error(p.grad, t.grad.numpy())
        assert error <= tol, f"gradient differs from torch: {error:.2e} > {tol:.2e}"
    clipped_total = get_total_norm([p.grad for p in ours], norm_type)
    if scale < 1:
        assert clipped_total == pytest.approx(max_norm, rel=1e-5)
    else:
        for p, g in zip(ours, before):  # a clamped coefficient of 1 changes nothing
            np.testing.assert_array_equal(p.grad, g)


@pytest.mark.parametrize("norm_type", [0.0, 0.5, -1.0, -math.inf, "inf"], ids=str)
def test_other_norm_types_match_torch(norm_type):
    """torch's vector_norm semantics for the rarer orders (0 counts non-zeros, also in
    the norm of the norms: it counts the parameters whose gradient is not all zero)."""
    shapes = PARAMETER_SETS["with_zero"]
    ours, theirs = _pair(shapes, np.float64, seed=1, zero=2)
    total = clip_grad_norm_(ours, 0.5, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert rel_error(np.float64(total), expected.numpy()) <= 1e-9
    for p, t in zip(ours, theirs):
        assert rel_error(p.grad, t.grad.numpy()) <= 1e-9


def test_mixed_dtypes_match_torch():
    """float32 and float64 gradients together: the total in float64, each gradient
    scaled in its own dtype."""
    ours32, theirs32 = _pair([(6, 5)], np.float32, seed=2)
    ours64, theirs64 = _pair([(5,)], np.float64, seed=3)
    total = clip_grad_norm_(ours32 + ours64, 0.1)
    expected = torch.nn.utils.clip_grad_norm_(theirs32 + theirs64, 0.1)
    assert expected.dtype == torch.float64
    assert rel_error(np.float64(total), expected.numpy()) <= float32_tolerance(30)
    assert ours32[0].grad.dtype == np.float32
    assert rel_error(ours32[0].grad, theirs32[0].grad.numpy()) <= float32_tolerance(30)
    assert rel_error(ours64[0].grad, theirs64[0].grad.numpy()) <= float32_tolerance(30)


def test_zero_gradients_stay_zero():
    ours, theirs = _pair([(3, 4), (4,)], np.float64, zero=0)
    ours[1].grad[...] = 0
    assert clip_grad_norm_(ours, 1.0) == 0.0  # 1 / (0 + 1e-6), clamped to 1: no 0/0
    assert all(np.array_equal(p.grad, np.zeros_like(p.grad)) for p in ours)


def test_single_parameter_generator_duplicates_and_empty():
    ours, theirs = _pair([(5, 4)], np.float64)
    p = ours[0]
    reference = cr.Parameter(p.data.copy())
    reference.grad[...] = p.grad
    total = clip_grad_norm_(p, 0.5)  # a Parameter on its own, as torch takes a Tensor
    assert rel_error(np.float64(total), torch.nn.utils.clip_grad_norm_(theirs[0], 0.5).numpy()) <= 1e-9
    assert rel_error(p.grad, theirs[0].grad.numpy()) <= 1e-9
    # Listed twice (a shared weight): counted and scaled once.
    assert clip_grad_norm_([reference, reference], 0.5) == total
    np.testing.assert_array_equal(reference.grad, p.grad)
    # A generator is read once, like a list.
    model = cr.Sequential(cr.Linear(3, 2, rng=0), cr.Linear(2, 2, rng=1))
    for q in model.parameters():
        q.grad[...] = 1.0
    assert clip_grad_norm_((q for q in model.parameters()), 1.0) == pytest.approx(math.sqrt(14))
    assert clip_grad_norm_([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        assert clip_grad_norm_((q for q in []), 1.0) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_error_if_nonfinite(bad):
    ours, theirs = _pair([(4, 3), (3,)], np.float64)
    ours[0].grad[1, 2] = bad
    theirs[0].grad[1, 2] = bad
    before = [p.grad.copy() for p in ours]
    with pytest.raises(RuntimeError) as ours_error:
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as torch_error:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    assert str(ours_error.value) == str(torch_error.value)
    for p, g in zip(ours, before):  # nothing was scaled
        np.testing.assert_array_equal(p.grad, g)
    # Without the error: scaled by the non-finite norm anyway, as torch does.
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_equal(total, float(expected))
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())  # NaN where torch has NaN


def test_bad_arguments():
    with pytest.raises(TypeError, match="clip_grad_norm_: expected a Parameter or an iterable"):
        clip_grad_norm_(3.0, 1.0)
    with pytest.raises(TypeError, match="clip_grad_norm_: expected Parameters .* ndarray"):
        clip_grad_norm_([np.ones(3)], 1.0)
    p = cr.Parameter(np.ones(3))
    with pytest.raises(TypeError, match="clip_grad_norm_: norm_type must be a number"):
        clip_grad_norm_(p, 1.0, norm_type="fro")
    with pytest.raises(TypeError, match="clip_grad_value_: clip_value must be a number"):
        clip_grad_value_(p, None)


@each_dtype
@pytest.mark.parametrize("clip_value", [0.0, 0.5, 2.0, -0.5])
def test_clip_grad_value_matches_torch(clip_value, dtype):
    ours, theirs = _pair(PARAMETER_SETS["several"], dtype, seed=4)
    assert clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for p, t in zip(ours, theirs):
        assert p.grad.dtype == dtype
        np.testing.assert_array_equal(p.grad, t.grad.numpy())  # a clamp rounds nothing
    if clip_value > 0:
        assert max(np.abs(p.grad).max() for p in ours) == np.float32(clip_value)


def test_total_norm_then_clip_with_norm_matches_torch():
    ours, theirs = _pair(PARAMETER_SETS["several"], np.float64, seed=5)
    total = get_total_norm([p.grad for p in ours], 3.0)
    expected = torch.nn.utils.get_total_norm([t.grad for t in theirs], 3.0)
    assert rel_error(np.float64(total), expected.numpy()) <= 1e-9
    clip_grads_with_norm_(ours, 0.7, total)
    torch.nn.utils.clip_grads_with_norm_(theirs, 0.7, expected)
    for p, t in zip(ours, theirs):
        assert rel_error(p.grad, t.grad.numpy()) <= 1e-9


# ---------------------------------------------------------------- in the training loops

def _data(n: int = 48, features: int = 5, classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, features)) * 3, rng.integers(0, classes, n)


def test_fit_clips_like_a_torch_loop():
    """fit(clip_grad_norm=...) against torch: forward, loss, backward, clip_grad_norm_,
    SGD step, over 2 unshuffled epochs in float64; the clipping is active (the norms
    exceed max_norm) and changes the result."""
    X, y = _data()
    max_norm = 0.2

    def model():
        return cr.Sequential(cr.Linear(5, 8, rng=0), cr.Tanh(), cr.Linear(8, 3, rng=1)).double()

    ours = model()
    cr.fit(ours, cr.CrossEntropyLoss(), cr.optim.SGD(ours.parameters(), lr=0.5), (X, y),
           epochs=2, batch_size=8, shuffle=False, clip_grad_norm=max_norm)

    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    net = net.double()
    net.load_state_dict({k: torch.tensor(v) for k, v in model().state_dict().items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    norms = []
    for _ in range(2):
        for start in range(0, len(X), 8):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(torch.tensor(X[start:start + 8])),
                                                     torch.tensor(y[start:start + 8]))
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)))
            optimizer.step()
    assert max(norms) > 2 * max_norm, norms  # clipping happened
    for name, value in net.state_dict().items():
        assert rel_error(ours.state_dict()[name], value.numpy()) <= 1e-9, name

    unclipped = model()
    cr.fit(unclipped, cr.CrossEntropyLoss(), cr.optim.SGD(unclipped.parameters(), lr=0.5),
           (X, y), epochs=2, batch_size=8, shuffle=False)
    assert rel_error(unclipped.state_dict()["2.weight"], ours.state_dict()["2.weight"]) > 1e-3


needs_digits = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                  reason="the runs train on digits (chainrule[datasets])")
RUN = ["--data", "digits", "--model", "lenet5", "--batch-size", "16", "--limit", "48",
       "--optimizer", "sgd", "--lr", "0.1", "--scheduler", "none", "--val-fraction", "0",
       "--no-progress", "--seed", "2"]
MAX_NORM = 0.05


@needs_digits
def test_train_clip_grad_norm_equals_a_hand_written_loop(tmp_path, capsys):
    """`chainrule train --clip-grad-norm` ends with the weights of forward, loss,
    backward, clip_grad_norm_, step written out by hand over the run's batches."""
    assert main(["train", *RUN, "--epochs", "1", "--clip-grad-norm", str(MAX_NORM),
                        "--out", str(tmp_path / "run")]) == 0
    ckpt = cr.load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.metadata["args"]["clip_grad_norm"] == MAX_NORM

    cfg = runner.TrainConfig(**ckpt.metadata["args"])
    data = runner.prepare_data(cfg)
    model = cr.models.lenet5(in_channels=data.in_channels, input_size=data.input_size,
                             num_classes=data.num_classes, seed=cfg.seed).float()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = cr.CrossEntropyLoss()
    X, y = data.train
    order = np.random.default_rng([cfg.seed, 0]).permutation(len(X))
    norms = []
    for start in range(0, len(X), 16):
        idx = order[start:start + 16]
        optimizer.zero_grad()
        loss_fn(model.forward(X[idx]), y[idx])
        backward_parameters_only(model, loss_fn.backward())
        norms.append(clip_grad_norm_(model.parameters(), MAX_NORM))
        optimizer.step()
    assert min(norms) > 2 * MAX_NORM, norms  # every step was clipped
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(ckpt.model.state_dict()[name], value, err_msg=name)


@needs_digits
def test_train_resume_keeps_clipping(tmp_path, capsys):
    """The setting lives in the checkpoint: 1 epoch, then --resume to 2, equals 2 epochs
    straight with clipping, and differs from 2 epochs without it."""
    def run(out: str, *extra: str) -> dict:
        assert main(["train", *extra, "--out", str(tmp_path / out)]) == 0
        return cr.load_checkpoint(tmp_path / out / "last.safetensors").model.state_dict()

    clip = ["--clip-grad-norm", str(MAX_NORM)]
    straight = run("straight", *RUN, "--epochs", "2", *clip)
    run("resumed", *RUN, "--epochs", "1", *clip)
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--epochs", "2",
                        "--no-progress"]) == 0
    resumed = cr.load_checkpoint(tmp_path / "resumed" / "last.safetensors").model.state_dict()
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    unclipped = run("unclipped", *RUN, "--epochs", "2")
    assert not np.array_equal(unclipped["11.weight"], straight["11.weight"])
    with pytest.raises(runner.RunError, match="--clip-grad-norm cannot change"):
        runner.TrainingRun.resume(tmp_path / "resumed", {"clip_grad_norm": 1.0})


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan])
def test_train_refuses_a_non_positive_clip_grad_norm(value):
    with pytest.raises(runner.RunError, match="--clip-grad-norm must be > 0"):
        runner.TrainConfig(clip_grad_norm=value).validate()
