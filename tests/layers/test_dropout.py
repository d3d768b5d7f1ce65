"""Dropout and Dropout2d: the mask, its scale, its reproducibility, and the modes."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]


def data(shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)  # never 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_p0_is_the_identity_in_training(dtype):
    layer = cr.Dropout(0.0, rng=0)
    x = data((3, 4, 5)).astype(dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x)
    g = data((3, 4, 5), seed=1).astype(dtype)
    np.testing.assert_array_equal(layer.backward(g), g)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_p1_gives_zeros_and_zero_gradient(dtype):
    layer = cr.Dropout(1.0, rng=0)
    x = data((2, 7)).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype and np.all(y == 0) and np.all(np.isfinite(y))
    dx = layer.backward(np.ones_like(x))
    assert np.all(dx == 0) and np.all(np.isfinite(dx))
    torch_y = torch.nn.Dropout(1.0)(torch.tensor(x))
    np.testing.assert_array_equal(y, torch_y.numpy())


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_rate_and_scale_preserve_the_mean(p):
    n = 200_000
    layer = cr.Dropout(p, rng=42)
    y = layer.forward(np.ones((n,)))
    kept = y != 0
    # each kept element is scaled by exactly 1 / (1 - p)
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - p), rtol=1e-15)
    # dropped fraction and mean within 5 standard deviations of their expectations
    sd_rate = np.sqrt(p * (1 - p) / n)
    assert abs((1 - kept.mean()) - p) < 5 * sd_rate, f"dropped {1 - kept.mean():.4f}, p={p}"
    assert abs(y.mean() - 1.0) < 5 * sd_rate / (1 - p), f"mean {y.mean():.4f} should be ~1"


def test_same_seed_gives_the_same_mask_and_a_new_mask_each_call():
    x = data((8, 16))
    a, b = cr.Dropout(0.5, rng=7), cr.Dropout(0.5, rng=7)
    first = a.forward(x)
    np.testing.assert_array_equal(first, b.forward(x))
    second = a.forward(x)
    assert not np.array_equal(first != 0, second != 0), "a new mask is drawn each forward"
    np.testing.assert_array_equal(second, b.forward(x))
    other = cr.Dropout(0.5, rng=8).forward(x)
    assert not np.array_equal(first != 0, other != 0)


def test_a_generator_is_accepted_and_used():
    x = data((4, 9))
    y1 = cr.Dropout(0.3, rng=np.random.default_rng(3)).forward(x)
    y2 = cr.Dropout(0.3, rng=3).forward(x)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_backward_uses_the_forward_mask(p):
    layer = cr.Dropout(p, rng=11)
    x = data((5, 6, 7))
    y = layer.forward(x)
    g = data((5, 6, 7), seed=2)
    dx = layer.backward(g)
    # y = x * m/(1-p) and dx = g * m/(1-p): the same scaled mask
    np.testing.assert_allclose(dx, g * (y / x), rtol=1e-15)
    assert np.array_equal(dx != 0, y != 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_eval_is_the_identity_and_keeps_no_cache(dtype):
    layer = cr.Dropout(0.5, rng=0).eval()
    x = data((3, 4)).astype(dtype)
    np.testing.assert_array_equal(layer.forward(x), x)
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="Dropout"):
        layer.backward(np.ones_like(x))
    # back in training mode it drops again
    assert np.any(layer.train().forward(x) == 0)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (2, 3, 4, 5)], ids=str)
def test_dropout_gradcheck(p, shape):
    # gradcheck replays the generator's state, so every evaluation sees the same mask
    err = cr.gradcheck(cr.Dropout(p, rng=5), data(shape, seed=3))
    assert err < 1e-6, f"Dropout(p={p}) on {shape}: gradcheck relative error {err:.3g}"


def test_gradcheck_of_a_network_with_dropout_in_the_middle():
    model = cr.Sequential(cr.Linear(4, 6, rng=0), cr.Tanh(), cr.Dropout(0.5, rng=1),
                          cr.Linear(6, 3, rng=2))
    err = cr.gradcheck(model, data((3, 4)))
    assert err < 1e-6, f"gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p, mode", [(0.0, "train"), (0.5, "eval"), (1.0, "train")])
def test_dropout_matches_torch_where_masks_are_determined(p, mode, dtype):
    # Random masks cannot agree with torch's; p=0, p=1 and eval mode are deterministic.
    ours, ref = cr.Dropout(p, rng=0), torch.nn.Dropout(p)
    if mode == "eval":
        ours.eval().gradients_in_eval()
        ref.eval()
    assert_torch_parity(ours, ref, data((2, 3, 4)), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout_matches_torch_given_the_same_mask(dtype):
    # torch's functional form with our mask: x * mask / (1 - p), backward g * mask / (1 - p)
    p = 0.4
    layer = cr.Dropout(p, rng=9)
    x = data((4, 5)).astype(dtype)
    y = layer.forward(x)
    mask = torch.tensor(y != 0)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * mask / (1 - p)
    g = data((4, 5), seed=4).astype(dtype)
    yt.backward(torch.tensor(g))
    tol = 1e-15 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=tol)


@pytest.mark.parametrize("p", [np.float32(0.5), np.float64(0.25), np.int64(0), 1])
def test_numpy_scalars_and_ints_are_valid_probabilities(p):
    assert cr.Dropout(p).p == float(p)
    assert isinstance(cr.Dropout(p).p, float)


# ----------------------------------------------------------------------------- Dropout2d
def channel_mask(y: np.ndarray) -> np.ndarray:
    """Which (sample, channel) a Dropout2d output kept, checking that each channel is
    either dropped whole or kept whole."""
    axes = tuple(range(2, y.ndim))
    kept, dropped = np.all(y != 0, axis=axes), np.all(y == 0, axis=axes)
    assert np.all(kept | dropped), "a channel was dropped in part"
    return kept


def test_dropout2d_reads_like_torch_and_has_its_defaults():
    assert repr(cr.Dropout2d()) == repr(torch.nn.Dropout2d()) == "Dropout2d(p=0.5, inplace=False)"
    assert repr(cr.Dropout2d(0.25, inplace=True)) == repr(torch.nn.Dropout2d(0.25, inplace=True))
    assert cr.Dropout2d().state_dict() == {}


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout2d_drops_whole_channels_at_rate_p_and_scales_the_rest(p):
    n, c = 400, 250
    x = np.ones((n, c, 2, 3))
    y = cr.Dropout2d(p, rng=1).forward(x)
    kept = channel_mask(y)
    assert kept.shape == (n, c)
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - p), rtol=1e-15)
    sd = np.sqrt(p * (1 - p) / kept.size)
    assert abs((1 - kept.mean()) - p) < 5 * sd, f"dropped {1 - kept.mean():.4f}, p={p}"


def test_dropout2d_mask_is_per_sample_and_channel():
    layer = cr.Dropout2d(0.5, rng=3)
    layer.forward(data((6, 5, 3, 4)))
    scaled_mask = layer._cache[0]
    assert scaled_mask.shape == (6, 5, 1, 1)            # never N*C*H*W: one value per channel
    kept = channel_mask(layer.forward(data((6, 5, 3, 4))))
    assert 0 < kept.sum() < kept.size


def test_dropout2d_on_3d_input_is_channelwise_1d_like_torch_with_a_warning():
    # torch 2.x reads a 3-D input as (N, C, L): one mask value per (n, c), not per image.
    x = np.ones((40, 30, 5))
    with pytest.warns(UserWarning, match=r"3-D input.*\(N, C, L\)"):
        y = cr.Dropout2d(0.5, rng=4).forward(x)
    kept = channel_mask(y)
    assert kept.shape == (40, 30) and 0.3 < kept.mean() < 0.7
    with pytest.warns(UserWarning, match="channel-wise 1D dropout"):
        yt = torch.nn.Dropout2d(0.5)(torch.tensor(x)).numpy()
    torch_kept = channel_mask(yt)                       # torch: whole rows too
    assert 0.3 < torch_kept.mean() < 0.7


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(4, 5, 3, 2), (3, 4, 6)], ids=str)
def test_dropout2d_matches_torchs_rule_given_the_same_mask(shape, dtype):
    # The masks are random on both sides; torch's rule applied to our mask must give our
    # output and our gradient bit for bit. torch (aten's _dropout_impl) scales the 0/1
    # noise first, noise / (1 - p) in the input's dtype, then y = x * noise and
    # dx = g * noise, with the noise of shape (N, C, 1, 1) (or (N, C, 1)).
    p = 0.4
    layer = cr.Dropout2d(p, rng=9)
    x = data(shape).astype(dtype)
    with pytest.warns(UserWarning) if len(shape) == 3 else _no_warning():
        y = layer.forward(x)
    kept = torch.tensor(channel_mask(y)).reshape(*shape[:2], *(1,) * (len(shape) - 2))
    noise = kept.to(torch.float64 if dtype == np.float64 else torch.float32) / (1 - p)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * noise
    g = data(shape, seed=4).astype(dtype)
    yt.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(layer.backward(g), xt.grad.numpy())


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("p, mode", [(0.0, "train"), (0.5, "eval"), (1.0, "train"), (0.7, "eval")])
def test_dropout2d_matches_torch_where_masks_are_determined(p, mode, dtype):
    ours, ref = cr.Dropout2d(p, rng=0), torch.nn.Dropout2d(p)
    if mode == "eval":
        ours.eval().gradients_in_eval()
        ref.eval()
    assert_torch_parity(ours, ref, data((2, 3, 4, 5)), dtype=dtype, terms=1)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (2, 3, 4)], ids=str)
@pytest.mark.filterwarnings("ignore:.*3-D input:UserWarning")
def test_dropout2d_gradcheck(p, shape):
    err = cr.gradcheck(cr.Dropout2d(p, rng=5), data(shape, seed=3))
    assert err < 1e-7, f"Dropout2d(p={p}) on {shape}: gradcheck relative error {err:.3g}"


def test_dropout2d_same_seed_same_mask_and_a_new_mask_each_call():
    x = data((8, 16, 2, 2))
    a, b = cr.Dropout2d(0.5, rng=7), cr.Dropout2d(0.5, rng=7)
    first = a.forward(x)
    np.testing.assert_array_equal(first, b.forward(x))
    assert not np.array_equal(channel_mask(first), channel_mask(a.forward(x)))


def test_fit_reseeds_dropout2d_like_dropout():
    # fit(seed=...) gives every Dropout (Dropout2d is one) a Generator drawn from the seed:
    # two models that differ only in their Dropout2d's own seed train to the same weights.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 2, 4, 4))
    y = rng.integers(0, 3, 12)

    def trained(dropout_seed: int) -> cr.Layer:
        model = cr.Sequential(cr.Conv2d(2, 4, 3, rng=1), cr.Dropout2d(0.5, rng=dropout_seed),
                              cr.Flatten(), cr.Linear(16, 3, rng=2))
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
               (X, y), epochs=2, batch_size=4, seed=3)
        return model

    a, b = trained(100), trained(200)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key], err_msg=key)


def test_dropout2d_inplace_is_kept_but_never_writes_into_the_input():
    # A Sigmoid keeps its output for its backward: writing the dropout into that array
    # would corrupt the Sigmoid's gradient, so inplace=True computes out of place.
    layer = cr.Dropout2d(0.5, inplace=True, rng=2)
    assert layer.inplace is True
    x = np.ones((3, 4, 2, 2))
    y = layer.forward(x)
    assert y is not x and np.all(x == 1.0) and np.any(y == 0)
    model = cr.Sequential(cr.Conv2d(2, 4, 1, rng=0), cr.Sigmoid(), cr.Dropout2d(0.5, inplace=True,
                                                                                 rng=1))
    err = cr.gradcheck(model, data((3, 2, 2, 2)))
    assert err < 1e-7, f"gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout2d_eval_is_the_identity_and_keeps_no_cache(dtype):
    layer = cr.Dropout2d(0.5, rng=0).eval()
    x = data((3, 4, 2, 2)).astype(dtype)
    assert layer.forward(x) is x
    assert layer._cache is None


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", None, True])
def test_dropout2d_bad_p_is_refused_naming_the_layer(p):
    with pytest.raises(ValueError, match=r"^Dropout2d: p must be a probability in \[0, 1\]"):
        cr.Dropout2d(p)


@pytest.mark.parametrize("inplace", [1, "yes", None])
def test_dropout2d_inplace_must_be_a_bool(inplace):
    with pytest.raises(TypeError, match="Dropout2d: inplace must be True or False"):
        cr.Dropout2d(0.5, inplace=inplace)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 5, 6), (5,)], ids=str)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dropout2d_input_that_is_not_3d_or_4d_is_refused(shape, mode):
    # torch runs these with a deprecation warning ("will result in an error in a future
    # release"); chainrule refuses them now, in both modes.
    layer = cr.Dropout2d(0.5, rng=0).train(mode == "train")
    with pytest.raises(ValueError, match=r"Dropout2d.*\(N, C, H, W\) or \(N, C, L\).*got shape "
                                         + re.escape(str(shape))):
        layer.forward(np.zeros(shape))


def test_dropout_error_still_names_dropout():
    with pytest.raises(ValueError, match=r"^Dropout: p must be"):
        cr.Dropout(2.0)
