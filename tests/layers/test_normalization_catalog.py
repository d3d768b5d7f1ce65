"""GroupNorm, LayerNorm, InstanceNorm2d and LocalResponseNorm: finite differences, parity
with torch over grids of shapes and options, running statistics, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr
from chainrule import serialize
from tests.helpers import assert_gradcheck, assert_torch_parity, copy_torch_weights, rel_error

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
DTYPE_IDS = [np.dtype(d).name for d in DTYPES]


def data(shape, seed: int) -> np.ndarray:
    """A non-zero mean and a non-unit scale, so that normalizing does something. Seeds
    start at 10: the parity helper draws its upstream gradient from seed 0."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 2.0 + 0.7


def randomize(module, seed: int):
    """Random affine parameters and running statistics on a torch module, so that a
    wrong use of any of them shows."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, t in module.named_parameters():
            values = (rng.uniform(0.5, 1.5, t.shape) if name == "weight"
                      else rng.standard_normal(t.shape))
            t.copy_(torch.tensor(values))
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.copy_(torch.tensor(rng.standard_normal(module.running_mean.shape)))
            module.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, module.running_var.shape)))
    return module


def ours_like(ours, ref):
    """``ours`` in float64 with ``ref``'s parameters and buffers (for gradcheck)."""
    copy_torch_weights(ours.to(np.float64), ref)
    return ours


def check_matches_torch(ours, ref, x, dtype, terms: int) -> None:
    """``assert_torch_parity``, then the state dict (the same keys in torch's order, the
    same values: copied parameters, and running statistics that the one forward moved in
    training or left in eval alike) and the repr of torch's module."""
    assert_torch_parity(ours, ref, x, dtype=dtype, terms=terms)
    tol = 1e-13 if dtype == np.float64 else 1e-6
    state = ours.state_dict()
    assert list(state) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert rel_error(state[key], value.numpy()) <= tol, key
    assert repr(ours) == repr(ref)


# ---------------------------------------------------------------------------- GroupNorm
# (input shape, num_groups): groups 1, C and between; batch 1; 2-D, 3-D, 4-D, 5-D inputs.
GN_CASES = [((2, 6, 3, 5), 1), ((2, 6, 3, 5), 3), ((2, 6, 3, 5), 6), ((1, 4, 3, 3), 2),
            ((1, 4, 3, 3), 4), ((3, 6), 2), ((2, 4, 7), 2), ((2, 6, 2, 3, 2), 3)]
GN_OPTIONS = [dict(affine=True), dict(affine=False), dict(affine=True, bias=False)]


def gn_id(case):
    return f"{'x'.join(map(str, case[0]))}-G{case[1]}"


def opt_id(options):
    parts = [f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in options.items()]
    return "-".join(parts) or "default"


def gn_pair(shape, groups, options, seed=1):
    ref = randomize(torch.nn.GroupNorm(groups, shape[1], dtype=torch.float64, **options), seed)
    return cr.GroupNorm(groups, shape[1], **options), ref


def gn_terms(shape, groups) -> int:
    n, c, spatial = shape[0], shape[1], math.prod(shape[2:])
    return max(c // groups * spatial, n * spatial)   # a group's statistics; dweight, dbias


@pytest.mark.parametrize("options", GN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("case", GN_CASES, ids=gn_id)
def test_groupnorm_gradcheck(case, options):
    shape, groups = case
    ours, ref = gn_pair(shape, groups, options)
    assert_gradcheck(ours_like(ours, ref), data(shape, seed=10), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", GN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("case", GN_CASES, ids=gn_id)
def test_groupnorm_matches_torch(case, options, dtype):
    shape, groups = case
    ours, ref = gn_pair(shape, groups, options)
    check_matches_torch(ours, ref, data(shape, seed=11), dtype, gn_terms(*case))


def test_groupnorm_same_in_eval():
    ours, ref = gn_pair((2, 6, 3, 5), 3, dict(affine=True))
    ours.eval().gradients_in_eval()
    ref.eval()
    assert_torch_parity(ours, ref, data((2, 6, 3, 5), seed=12))


def test_groupnorm_errors():
    with pytest.raises(ValueError, match=r"GroupNorm\(4, 6\): num_channels \(6\) must be divisible "
                                         r"by num_groups \(4\)"):
        cr.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        cr.GroupNorm(0, 6)
    with pytest.raises(TypeError, match="num_channels must be a positive int"):
        cr.GroupNorm(2, 4.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        cr.GroupNorm(2, 4, eps=0.0)
    with pytest.raises(TypeError, match="eps must be a number"):
        cr.GroupNorm(2, 4, eps="1e-5")
    with pytest.raises(TypeError, match="dtype"):
        cr.GroupNorm(2, 4, dtype=np.int32)
    gn = cr.GroupNorm(2, 4)
    for bad in (np.ones((2, 6, 3)), np.ones(4), np.ones((2, 3, 4, 4))):
        with pytest.raises(ValueError, match=r"GroupNorm\(2, 4.*expected input of shape "
                                             r"\(N, 4, \*\).*got shape " + re_shape(bad.shape)):
            gn.forward(bad)
    # torch refuses one value per channel (N = 1, one channel per group, no positions) alone.
    with pytest.raises(ValueError):
        torch.nn.GroupNorm(4, 4)(torch.ones(1, 4, 1))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4, 1\)"):
        cr.GroupNorm(4, 4).forward(np.ones((1, 4, 1)))
    assert cr.GroupNorm(4, 4).forward(np.ones((2, 4))).shape == (2, 4)


def re_shape(shape) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


# ---------------------------------------------------------------------------- LayerNorm
# (input shape, normalized_shape): 1, 2 and 3 trailing axes; batch 1; an input that is one
# sample of exactly normalized_shape; an int and a list.
LN_CASES = [((3, 5), (5,)), ((1, 7), 7), ((5,), (5,)), ((2, 3, 4, 5), (5,)),
            ((2, 3, 4, 5), (4, 5)), ((2, 3, 4, 5), (3, 4, 5)), ((2, 3, 4), [3, 4])]
LN_OPTIONS = [dict(), dict(bias=False), dict(elementwise_affine=False)]


def ln_id(case):
    return f"{'x'.join(map(str, case[0]))}-over{case[1]}".replace(" ", "")


def ln_pair(normalized_shape, options, seed=2):
    ref = randomize(torch.nn.LayerNorm(normalized_shape, dtype=torch.float64, **options), seed)
    return cr.LayerNorm(normalized_shape, **options), ref


def ln_terms(shape, normalized_shape) -> int:
    n = math.prod(np.atleast_1d(normalized_shape))
    return max(n, math.prod(shape) // n)


@pytest.mark.parametrize("options", LN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("case", LN_CASES, ids=ln_id)
def test_layernorm_gradcheck(case, options):
    shape, normalized_shape = case
    ours, ref = ln_pair(normalized_shape, options)
    assert_gradcheck(ours_like(ours, ref), data(shape, seed=13), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", LN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("case", LN_CASES, ids=ln_id)
def test_layernorm_matches_torch(case, options, dtype):
    shape, normalized_shape = case
    ours, ref = ln_pair(normalized_shape, options)
    check_matches_torch(ours, ref, data(shape, seed=14), dtype, ln_terms(*case))


def test_layernorm_errors():
    for bad in ([], 0, [3, 0], -2):
        with pytest.raises(ValueError, match="LayerNorm.*normalized_shape must hold at least one"):
            cr.LayerNorm(bad)
    for bad in ("5", 2.0, [2.0, 3], True, None):
        with pytest.raises(TypeError, match="LayerNorm.*normalized_shape must be an int or a seq"):
            cr.LayerNorm(bad)
    with pytest.raises(ValueError, match="eps must be > 0"):
        cr.LayerNorm(4, eps=-1e-5)
    ln = cr.LayerNorm((3, 4))
    for bad in ((2, 4, 3), (4,), (2, 3, 5), (3,)):
        with pytest.raises(ValueError, match=r"LayerNorm\(\(3, 4\).*expected input of shape "
                                             r"\(\*, 3, 4\).*got shape " + re_shape(bad)):
            ln.forward(np.ones(bad))
    assert ln.forward(np.ones((3, 4))).shape == (3, 4)


# ---------------------------------------------------------------------------- InstanceNorm2d
IN_SHAPES = [(2, 3, 4, 5), (1, 2, 3, 3), (3, 4, 5), (4, 2, 1, 3)]
IN_OPTIONS = [dict(), dict(affine=True), dict(track_running_stats=True),
              dict(affine=True, track_running_stats=True, momentum=0.5),
              dict(affine=True, track_running_stats=True, momentum=None),
              dict(affine=True, bias=False, eps=1e-3)]


def in_pair(channels, options, seed=3):
    ref = randomize(torch.nn.InstanceNorm2d(channels, dtype=torch.float64, **options), seed)
    return cr.InstanceNorm2d(channels, **options), ref


def channels_of(shape) -> int:
    return shape[-3]


def in_terms(shape) -> int:
    n = shape[0] if len(shape) == 4 else 1
    return n * shape[-1] * shape[-2]        # dweight, dbias; a channel's statistics: H*W


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("options", IN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instancenorm_gradcheck(shape, options, mode):
    ours, ref = in_pair(channels_of(shape), options)
    ours_like(ours, ref).train(mode == "train")
    assert_gradcheck(ours, data(shape, seed=15), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("options", IN_OPTIONS, ids=opt_id)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instancenorm_matches_torch(shape, options, mode, dtype):
    ours, ref = in_pair(channels_of(shape), options)
    if mode == "eval":
        ours.eval().gradients_in_eval()
        ref.eval()
    check_matches_torch(ours, ref, data(shape, seed=16), dtype, in_terms(shape))


@pytest.mark.parametrize("momentum", [0.1, 0.5, None], ids=lambda m: f"momentum{m}")
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (2, 4, 3)], ids=str)
def test_instancenorm_running_statistics_equal_torch_after_three_steps(shape, momentum):
    ours, ref = in_pair(channels_of(shape), dict(track_running_stats=True, momentum=momentum))
    ours_like(ours, ref)
    start = ours.state_dict()
    for step in range(3):
        x = data(shape, seed=20 + step) * (step + 1)  # batches with different statistics
        ours.forward(x)
        ref(torch.tensor(x))
    for key in ("running_mean", "running_var"):
        err = rel_error(getattr(ours, key), getattr(ref, key).numpy())
        assert err < 1e-13, f"{key} after 3 steps (momentum={momentum}): rel error {err:.3g}"
        if momentum is None:   # torch's InstanceNorm passes momentum 0: nothing moves
            np.testing.assert_array_equal(getattr(ours, key), start[key])
    # torch's InstanceNorm never counts its batches
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 0
    assert ours.state_dict()["num_batches_tracked"].dtype == np.int64


def test_instancenorm_running_statistics_average_the_samples():
    layer = cr.InstanceNorm2d(2, momentum=0.25, track_running_stats=True, dtype=np.float64)
    x = data((3, 2, 4, 4), seed=24)
    layer.forward(x)
    means = x.mean(axis=(2, 3)).mean(axis=0)
    variances = x.var(axis=(2, 3), ddof=1).mean(axis=0)       # unbiased per instance
    np.testing.assert_allclose(layer.running_mean, 0.25 * means, rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, 0.75 + 0.25 * variances, rtol=1e-13)


def test_instancenorm_without_running_statistics_uses_the_input_statistics_in_eval():
    layer = cr.InstanceNorm2d(3, dtype=np.float64).eval()
    y = layer.forward(data((2, 3, 4, 4), seed=25))
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=(2, 3)), 1, rtol=1e-4)   # eps=1e-5 against var ~4


def test_instancenorm_channel_count_mismatch_is_refused_or_warned_as_torch():
    x = data((2, 5, 3, 3), seed=26)
    for options in (dict(affine=True), dict(track_running_stats=True)):
        with pytest.raises(ValueError, match=r"InstanceNorm2d\(3.*expected 3 channels \(axis 1\)"
                                             r".*\(2, 5, 3, 3\)"):
            cr.InstanceNorm2d(3, **options).forward(x)
    with pytest.raises(ValueError, match=r"expected 3 channels \(axis 0\)"):
        cr.InstanceNorm2d(3, affine=True).forward(x[0])
    # neither affine parameters nor running statistics: torch warns and normalizes anyway
    with pytest.warns(UserWarning, match="does not match num_features"):
        expected = torch.nn.InstanceNorm2d(3)(torch.tensor(x)).numpy()
    with pytest.warns(UserWarning, match=r"InstanceNorm2d\(3.*5 channels.*num_features=3"):
        y = cr.InstanceNorm2d(3).forward(x)
    assert rel_error(y, expected) < 1e-13


def test_instancenorm_input_errors():
    layer = cr.InstanceNorm2d(2)
    for bad in ((2, 2, 3, 3, 3), (2, 3), (4,)):
        with pytest.raises(ValueError, match=r"expected input of shape \(N, C, H, W\) or "
                                             r"\(C, H, W\)"):
            layer.forward(np.ones(bad))
    x = data((2, 2, 1, 1), seed=27)
    with pytest.raises(ValueError):
        torch.nn.InstanceNorm2d(2)(torch.tensor(x))
    with pytest.raises(ValueError, match=r"more than 1 spatial element.*\(2, 2, 1, 1\)"):
        layer.forward(x)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        layer.eval().forward(x)         # no running statistics: the input's own, in eval too
    # with running statistics, eval normalizes single positions, as torch does
    tracked, ref = in_pair(2, dict(track_running_stats=True))
    ours_like(tracked, ref).eval()
    ref.eval()
    assert rel_error(tracked.forward(x), ref(torch.tensor(x)).numpy()) < 1e-13
    with pytest.raises(ValueError, match="momentum must be in"):
        cr.InstanceNorm2d(2, momentum=1.5)
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        cr.InstanceNorm2d(0)


# ---------------------------------------------------------------------------- LocalResponseNorm
LRN_SHAPES = [(2, 6, 7), (2, 5, 3, 4), (1, 4, 2, 3, 2)]
LRN_SIZES = [1, 2, 3, 5, 8]          # 2 and 8: even, the window reaches further back
LRN_PARAMS = [dict(alpha=0.5), dict(alpha=2.0, beta=0.3, k=0.5)]


@pytest.mark.parametrize("params", LRN_PARAMS, ids=opt_id)
@pytest.mark.parametrize("size", LRN_SIZES, ids=lambda s: f"size{s}")
@pytest.mark.parametrize("shape", LRN_SHAPES, ids=str)
def test_lrn_gradcheck(shape, size, params):
    assert_gradcheck(cr.LocalResponseNorm(size, **params), data(shape, seed=30), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("params", LRN_PARAMS + [dict()], ids=opt_id)
@pytest.mark.parametrize("size", LRN_SIZES, ids=lambda s: f"size{s}")
@pytest.mark.parametrize("shape", LRN_SHAPES, ids=str)
def test_lrn_matches_torch(shape, size, params, dtype):
    ours, ref = cr.LocalResponseNorm(size, **params), torch.nn.LocalResponseNorm(size, **params)
    check_matches_torch(ours, ref, data(shape, seed=31), dtype, size)


def test_lrn_window_is_torchs_asymmetric_one_for_an_even_size():
    # size 2: s_c = k + alpha/2 * (x_{c-1}^2 + x_c^2), the channel before and itself.
    x = np.zeros((1, 4, 1))
    x[0, 1, 0] = 1.0
    y = cr.LocalResponseNorm(2, alpha=2.0, beta=1.0, k=1.0).forward(x + 0.0)
    expected = torch.nn.LocalResponseNorm(2, alpha=2.0, beta=1.0, k=1.0)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(y, expected)
    assert y[0, 1, 0] == 0.5                     # its own square counted once: 1 / (1 + 1)


def test_lrn_gradient_at_zero_input_matches_torch_exactly():
    # x = 0: s = k exactly, every term through the squares vanishes, dx = g / k^beta.
    x = np.zeros((2, 5, 3))
    g = np.random.default_rng(32).standard_normal(x.shape)
    layer = cr.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=2.0)
    layer.forward(x)
    dx = layer.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=2.0)(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_lrn_errors():
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"LocalResponseNorm.*size must be >= 1"):
            cr.LocalResponseNorm(bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match=r"LocalResponseNorm.*size must be a positive int"):
            cr.LocalResponseNorm(bad)
    with pytest.raises(TypeError, match=r"alpha must be a number"):
        cr.LocalResponseNorm(3, alpha="0.1")
    with pytest.raises(ValueError, match=r"beta must be finite"):
        cr.LocalResponseNorm(3, beta=float("nan"))
    for bad in ((2, 3), (3,)):
        with pytest.raises(ValueError, match=r"LocalResponseNorm\(3.*expected input of shape \(N, "
                                             r"C, \*\) with at least 3 axes.*" + re_shape(bad)):
            cr.LocalResponseNorm(3).forward(np.ones(bad))


# ---------------------------------------------------------------------------- all four
def constructors():
    return [cr.GroupNorm(2, 4), cr.GroupNorm(2, 4, affine=False), cr.LayerNorm(4),
            cr.LayerNorm([3, 4], elementwise_affine=False), cr.InstanceNorm2d(4),
            cr.InstanceNorm2d(4, affine=True, track_running_stats=True),
            cr.InstanceNorm2d(4, track_running_stats=True, momentum=None),
            cr.LocalResponseNorm(2)]


@pytest.mark.parametrize("layer", constructors(), ids=repr)
def test_backward_needs_a_cached_forward_and_eval_keeps_none(layer):
    x = data((2, 4, 3, 4), seed=40)
    with pytest.raises(RuntimeError, match="without a cached forward"):
        layer.backward(np.ones(x.shape))
    y = layer.forward(x)
    with pytest.raises(ValueError, match="expected a gradient of shape"):
        layer.backward(np.ones((1, *y.shape[1:])))
    layer.forward(x)
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="without a cached forward"):
        layer.backward(np.ones_like(y))        # one backward per forward
    layer.eval().forward(x)
    assert layer._cache is None


@pytest.mark.parametrize("layer", constructors(), ids=repr)
def test_dtypes(layer):
    x = data((2, 4, 3, 4), seed=41)
    if layer.parameters() or list(layer.named_buffers()):
        assert layer.forward(x).dtype == np.float32                  # the layer's dtype
        assert layer.to(np.float64).forward(x.astype(np.float32)).dtype == np.float64
    else:
        assert layer.forward(x).dtype == np.float64                  # a float input's own
        assert layer.forward(x.astype(np.float32)).dtype == np.float32
        assert layer.forward(np.ones((2, 4, 3, 4), np.int64)).dtype == np.float32


def test_the_cache_holds_x_hat_and_inv_std_only():
    layer = cr.GroupNorm(2, 4, dtype=np.float64)
    x = data((3, 4, 5, 5), seed=42)
    layer.forward(x)
    xhat, inv_std = layer._cache[:2]
    assert xhat.size == x.size and inv_std.size == 3 * 2
    # without affine parameters the output is x̂ itself: a copy, so that changing the
    # output cannot change the gradient
    plain = cr.LayerNorm(5, elementwise_affine=False)
    y = plain.forward(x)
    expected = plain.backward(np.ones_like(y) * 0.5)
    plain.forward(x)[...] = 7.0
    np.testing.assert_array_equal(plain.backward(np.ones_like(y) * 0.5), expected)


@pytest.mark.parametrize("make, make_torch", [
    (lambda: cr.GroupNorm(2, 4), lambda: torch.nn.GroupNorm(2, 4, dtype=torch.float64)),
    (lambda: cr.LayerNorm([4, 3, 3]), lambda: torch.nn.LayerNorm([4, 3, 3], dtype=torch.float64)),
    (lambda: cr.InstanceNorm2d(4, affine=True),
     lambda: torch.nn.InstanceNorm2d(4, affine=True, dtype=torch.float64)),
], ids=["GroupNorm", "LayerNorm", "InstanceNorm2d"])
def test_a_constant_group_matches_torch(make, make_torch):
    # var = 0: x̂ = 0 exactly, y = bias, and dx = (ĝ - mean(ĝ)) / sqrt(eps).
    x = np.full((2, 4, 3, 3), 1.5)
    x[1] = data((4, 3, 3), seed=43)                # one constant sample beside a normal one
    ref = randomize(make_torch(), seed=44)
    assert_torch_parity(make(), ref, x)


@pytest.mark.parametrize("layer", constructors() + [
    cr.GroupNorm(3, 6, eps=1e-3, bias=False, dtype=np.float64), cr.LayerNorm(7, bias=False),
    cr.InstanceNorm2d(3, eps=1e-4, momentum=0.3, affine=True, bias=False),
    cr.LocalResponseNorm(5, alpha=0.2, beta=0.5, k=2.0)], ids=repr)
def test_describe_and_build_round_trip(layer):
    desc = serialize.describe(layer)
    built = serialize.build(desc)
    assert type(built) is type(layer) and repr(built) == repr(layer)
    assert list(built.state_dict()) == list(layer.state_dict())
    assert built.dtype == layer.dtype


def test_build_checks_normalized_shape():
    for value in (4, [4], [3, 4]):
        assert serialize.build({"type": "LayerNorm", "args": {"normalized_shape": value}})
    for value in ([], 0, [3, 0], [3.0], "4", True, [True]):
        with pytest.raises(ValueError, match="normalized_shape.*must be a positive int or a "
                                             "non-empty list of positive ints"):
            serialize.build({"type": "LayerNorm", "args": {"normalized_shape": value}})
