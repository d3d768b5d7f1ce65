"""BatchNorm1d and BatchNorm2d: gradients, running statistics and modes, against torch."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity, copy_torch_weights, rel_error

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]

# (chainrule class, torch class, input shape): batch 1 only where there is more than one
# value per channel, odd sizes.
CASES = [
    (cr.BatchNorm1d, torch.nn.BatchNorm1d, (4, 3)),
    (cr.BatchNorm1d, torch.nn.BatchNorm1d, (3, 5)),  # n = 2 would make dx ~ 0 (ill-posed)
    (cr.BatchNorm1d, torch.nn.BatchNorm1d, (3, 2, 5)),
    (cr.BatchNorm1d, torch.nn.BatchNorm1d, (1, 3, 7)),
    (cr.BatchNorm2d, torch.nn.BatchNorm2d, (2, 3, 4, 5)),
    (cr.BatchNorm2d, torch.nn.BatchNorm2d, (1, 2, 3, 3)),
    (cr.BatchNorm2d, torch.nn.BatchNorm2d, (5, 1, 1, 2)),
]
# (affine, track_running_stats, momentum)
OPTIONS = [(True, True, 0.1), (False, True, 0.1), (True, False, 0.1), (True, True, None)]


def _case_id(case) -> str:
    return f"{case[0].__name__}-x{'x'.join(map(str, case[2]))}"


def _opt_id(opt) -> str:
    return f"affine{int(opt[0])}-track{int(opt[1])}-mom{opt[2]}"


def make_pair(ours_cls, torch_cls, c: int, options, seed: int = 0):
    """A chainrule and a torch BatchNorm with the same random affine parameters and
    running statistics (so that a wrong use of weight/bias/running stats shows)."""
    affine, track, momentum = options
    ref = torch_cls(c, affine=affine, track_running_stats=track, momentum=momentum,
                    dtype=torch.float64)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        if affine:
            ref.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
            ref.bias.copy_(torch.tensor(rng.standard_normal(c)))
        if track:
            ref.running_mean.copy_(torch.tensor(rng.standard_normal(c)))
            ref.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, c)))
    ours = ours_cls(c, affine=affine, track_running_stats=track, momentum=momentum)
    return ours, ref


def data(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a non-zero mean and non-unit scale per channel, so normalization does something
    return rng.standard_normal(shape) * 2.0 + 0.7


@pytest.mark.parametrize("options", OPTIONS, ids=_opt_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batchnorm_train_gradcheck(case, options):
    ours_cls, _, shape = case
    ours = ours_cls(shape[1], affine=options[0], track_running_stats=options[1],
                    momentum=options[2], dtype=np.float64)
    if options[0]:
        rng = np.random.default_rng(1)
        ours.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
        ours.bias.data[...] = rng.standard_normal(shape[1])
    err = cr.gradcheck(ours, data(shape, seed=2))
    assert err < 1e-6, f"{ours!r} on {shape}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batchnorm_eval_gradcheck(case):
    ours_cls, torch_cls, shape = case
    ours, ref = make_pair(ours_cls, torch_cls, shape[1], OPTIONS[0])
    copy_torch_weights(ours.to(np.float64), ref)
    ours.eval()
    err = cr.gradcheck(ours, data(shape, seed=3))
    assert err < 1e-6, f"{ours!r} (eval) on {shape}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("options", OPTIONS, ids=_opt_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batchnorm_train_matches_torch(case, options, dtype):
    ours_cls, torch_cls, shape = case
    ours, ref = make_pair(ours_cls, torch_cls, shape[1], options)
    assert_torch_parity(ours, ref, data(shape, seed=4), dtype=dtype)
    # the one training forward also updated the running statistics the same way
    if options[1]:
        tol = 1e-12 if dtype == np.float64 else 1e-6
        assert rel_error(ours.running_mean, ref.running_mean.numpy()) < tol
        assert rel_error(ours.running_var, ref.running_var.numpy()) < tol
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batchnorm_eval_matches_torch(case, dtype):
    ours_cls, torch_cls, shape = case
    ours, ref = make_pair(ours_cls, torch_cls, shape[1], OPTIONS[0], seed=5)
    ours.eval().gradients_in_eval()  # backward in eval: the parity helper checks gradients
    ref.eval()
    assert_torch_parity(ours, ref, data(shape, seed=6), dtype=dtype)
    # eval uses the running statistics and must not change them
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(value, copy_of(ref.state_dict()[key]), err_msg=key)
    assert int(ours.num_batches_tracked) == 0


@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_batchnorm_inference_forward_matches_torch(case, dtype, affine, layout):
    """Eval without backward takes its own path (x * alpha + beta, nothing kept); it must
    give what torch and the path that keeps a cache give."""
    ours_cls, torch_cls, shape = case
    ours, ref = make_pair(ours_cls, torch_cls, shape[1], (affine, True, 0.1), seed=11)
    copy_torch_weights(ours.to(dtype), ref)
    ours.eval()
    ref.eval()
    x = data(shape, seed=12).astype(dtype)
    if layout == "channel-major":          # as a convolution's output is laid out
        x = np.ascontiguousarray(np.moveaxis(x, 1, 0)).swapaxes(0, 1)
    y = ours.forward(x)
    assert ours.keeps_cache is False and y.shape == x.shape and y.dtype == dtype
    expected = ref(torch.tensor(np.asarray(x, np.float64))).detach().numpy()
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert rel_error(y, expected) < tol
    cached = ours.gradients_in_eval().forward(x)
    assert rel_error(y, cached) < tol


def copy_of(t) -> np.ndarray:
    return t.detach().numpy().copy()


@pytest.mark.parametrize("momentum", [0.1, 0.5, None], ids=lambda m: f"momentum{m}")
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_running_statistics_equal_torch_after_three_steps(case, momentum):
    ours_cls, torch_cls, shape = case
    ours, ref = make_pair(ours_cls, torch_cls, shape[1], (True, True, momentum), seed=7)
    copy_torch_weights(ours.to(np.float64), ref)
    for step in range(3):
        x = data(shape, seed=10 + step) * (step + 1)  # batches with different statistics
        ours.forward(x)
        ref(torch.tensor(x))
    for key in ("running_mean", "running_var"):
        ours_value = getattr(ours, key)
        assert ours_value.dtype == np.float64
        err = rel_error(ours_value, copy_of(getattr(ref, key)))
        assert err < 1e-13, f"{key} after 3 steps (momentum={momentum}): rel error {err:.3g}"
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    assert ours.num_batches_tracked.dtype == np.int64
    assert ours.state_dict()["num_batches_tracked"].shape == ()


def test_momentum_none_is_the_cumulative_average_of_batch_statistics():
    bn = cr.BatchNorm1d(2, momentum=None, dtype=np.float64)
    batches = [data((6, 2), seed=20 + i) for i in range(4)]
    for x in batches:
        bn.forward(x)
    means = np.mean([x.mean(axis=0) for x in batches], axis=0)
    variances = np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0)
    # The first update replaces the initial (0, 1) completely (factor 1/1).
    np.testing.assert_allclose(bn.running_mean, means, rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, variances, rtol=1e-13)


def test_without_running_stats_eval_uses_the_batch_statistics_like_torch():
    ours, ref = make_pair(cr.BatchNorm2d, torch.nn.BatchNorm2d, 3, (True, False, 0.1))
    copy_torch_weights(ours.to(np.float64), ref)
    assert "running_mean" not in ours.state_dict()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.eval()
    ref.eval()
    x = data((2, 3, 4, 4), seed=8)
    y = ours.forward(x)
    assert rel_error(y, ref(torch.tensor(x)).detach().numpy()) < 1e-12
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), ref.bias.detach().numpy(), atol=1e-12)


def test_eval_forward_is_the_affine_map_of_the_running_statistics():
    bn = cr.BatchNorm1d(2, dtype=np.float64)
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.data[...] = [3.0, 1.0]
    bn.bias.data[...] = [0.5, 0.0]
    bn.eval()
    x = np.array([[3.0, -1.0], [1.0, -2.0]])
    expected = (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5) * [3.0, 1.0] + [0.5, 0.0]
    np.testing.assert_allclose(bn.forward(x), expected, rtol=1e-14)


@pytest.mark.parametrize("ours_cls, torch_cls", [(cr.BatchNorm1d, torch.nn.BatchNorm1d)])
def test_a_single_value_per_channel_in_training_raises_like_torch(ours_cls, torch_cls):
    x = np.ones((1, 3))
    with pytest.raises(ValueError):
        torch_cls(3, dtype=torch.float64)(torch.tensor(x))
    bn = ours_cls(3)
    with pytest.raises(ValueError, match=r"BatchNorm1d.*more than 1 value per channel.*\(1, 3\)"):
        bn.forward(x)
    assert int(bn.num_batches_tracked) == 0, "a refused batch must not count"
    np.testing.assert_array_equal(bn.running_mean, 0)
    # In eval, one sample is fine (the running statistics are used), as in torch.
    assert bn.eval().forward(x).shape == (1, 3)


def test_batch_of_one_with_a_length_axis_trains():
    bn = cr.BatchNorm1d(3, dtype=np.float64)
    x = data((1, 3, 5), seed=9)
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-12)


def test_affine_false_has_no_parameters_but_keeps_buffers():
    bn = cr.BatchNorm2d(4, affine=False)
    assert bn.parameters() == []
    ref = torch.nn.BatchNorm2d(4, affine=False)
    assert list(bn.state_dict()) == list(ref.state_dict())
    assert bn.dtype == np.float32


def test_batchnorm_casts_buffers_with_to():
    bn = cr.BatchNorm2d(3).to(np.float64)
    assert bn.weight.dtype == bn.running_mean.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64
    y = bn.forward(np.ones((2, 3, 2, 2), np.float32) + np.arange(2)[:, None, None, None])
    assert y.dtype == np.float64
