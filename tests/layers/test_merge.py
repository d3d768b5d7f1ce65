"""Add, Multiply, Concat, Split, Chunk, Reshape, Permute and Mean: finite differences in
float64, parity with torch (forward and every input gradient) in float64 and float32,
the conventions graphs rely on (lists in, lists out, None gradients), every error
message, and their torch and ONNX converters."""

from __future__ import annotations

import re

import numpy as np
import pytest

import chainrule as cr
from chainrule import serialize
from tests.helpers import (WORST_PARITY, assert_gradcheck, each_dtype, float32_tolerance,
                           rel_error)

torch = pytest.importorskip("torch")


def _dims(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _randn(shapes, seed: int, dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _tolerance(dtype, terms: int) -> float:
    return 1e-9 if np.dtype(dtype) == np.float64 else float32_tolerance(terms)


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def assert_parity(layer, torch_fn, xs, dtype, terms: int, drop: tuple[int, ...] = (),
                  seed: int = 0) -> dict[str, float]:
    """Forward outputs and input gradients of ``layer`` against ``torch_fn`` (tensors in,
    a tensor or a tuple out) under random upstream gradients; ``xs`` is one array or a
    list (a multi-input layer); outputs listed in ``drop`` get no gradient (None)."""
    several = isinstance(xs, list)
    xs = [np.asarray(x, dtype=dtype) for x in _listed(xs)]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    outs_t = _listed(torch_fn(*ts))
    rng = np.random.default_rng(seed)
    ups = [None if k in drop else rng.standard_normal(tuple(o.shape)).astype(dtype)
           for k, o in enumerate(outs_t)]
    kept = [(o, torch.tensor(u)) for o, u in zip(outs_t, ups) if u is not None]
    torch.autograd.backward([o for o, _ in kept], [u for _, u in kept])

    out = layer.forward(xs if several else xs[0])
    multi_out = isinstance(out, list)
    dx = layer.backward(ups if multi_out else ups[0])
    dxs = dx if several else [dx]
    assert len(_listed(out)) == len(outs_t) and len(dxs) == len(xs)
    errors = {}
    for k, (y, yt) in enumerate(zip(_listed(out), outs_t)):
        assert y.dtype == dtype, f"output {k} is {y.dtype}, not {np.dtype(dtype)}"
        errors[f"forward {k}"] = rel_error(y, yt.detach().numpy())
    for i, (d, t) in enumerate(zip(dxs, ts)):
        assert d.shape == xs[i].shape and d.dtype == dtype, (d.shape, d.dtype)
        expected = t.grad.numpy() if t.grad is not None else np.zeros_like(xs[i])
        errors[f"input_grad {i}"] = rel_error(d, expected)
    WORST_PARITY.record(layer, dtype, errors)
    tol = _tolerance(dtype, terms)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{layer!r} differs from torch beyond {tol} ({np.dtype(dtype)}): {errors}"
    return errors


def assert_finite_differences(layer, xs, drop: tuple[int, ...] = (), seed: int = 0,
                              eps: float = 1e-6, tol: float = 1e-7) -> float:
    """Central differences in float64 of ``f = sum_k <y_k, g_k>`` over every input
    element, for random upstream gradients ``g_k`` (none for the outputs in ``drop``),
    against the layer's backward; returns the worst relative error."""
    several = isinstance(xs, list)
    xs = [np.array(x, dtype=np.float64) for x in _listed(xs)]
    layer = layer.copy().train()

    def run():
        return _listed(layer.forward(xs if several else xs[0]))

    outs = run()
    rng = np.random.default_rng(seed)
    ups = [None if k in drop else rng.standard_normal(o.shape) for k, o in enumerate(outs)]
    dx = layer.backward(ups if len(outs) > 1 or isinstance(layer, cr.layers.merge._SplitLayer)
                        else ups[0])
    analytic = dx if several else [dx]

    def f() -> float:
        return float(sum(np.sum(o * u) for o, u in zip(run(), ups) if u is not None))

    worst = 0.0
    for x, a in zip(xs, analytic):
        numeric = np.empty(x.size)
        flat = x.reshape(-1)
        for i in range(flat.size):
            v = flat[i]
            flat[i] = v + eps
            plus = f()
            flat[i] = v - eps
            minus = f()
            flat[i] = v
            numeric[i] = (plus - minus) / (2 * eps)
        worst = max(worst, rel_error(a.reshape(-1), numeric))
    assert worst < tol, f"{layer!r}: finite-difference relative error {worst:.2e}"
    return worst


# ------------------------------------------------------------------------------ Add, Multiply

# input shapes: equal, three inputs, a channel bias, axes broadcast on both sides, a 0-D
# input, four inputs of different ranks.
BROADCAST_CASES = {
    "same": [(2, 3, 4, 4), (2, 3, 4, 4)],
    "three": [(2, 3, 4), (2, 3, 4), (2, 3, 4)],
    "channel_bias": [(2, 3, 4, 4), (3, 1, 1)],
    "both_broadcast": [(1, 3, 1, 5), (2, 1, 4, 1)],
    "scalar": [(2, 3), ()],
    "four_ranks": [(2, 1, 4), (1, 3, 1), (2, 3, 4), (4,)],
    "se_gate": [(2, 3, 1, 1), (2, 3, 5, 5)],
}
BROADCAST = [pytest.param(shapes, id=name) for name, shapes in BROADCAST_CASES.items()]


def _broadcast_terms(shapes) -> int:
    """The most terms a backward sum adds (elements folded into one) or a forward chain
    combines (the number of inputs)."""
    out = np.broadcast_shapes(*shapes)
    size = int(np.prod(out))
    return max(len(shapes), *(size // max(int(np.prod(s)), 1) for s in shapes))


def _torch_chain(op):
    def fn(*ts):
        out = ts[0]
        for t in ts[1:]:
            out = op(out, t)
        return out
    return fn


@pytest.mark.parametrize("shapes", BROADCAST)
@pytest.mark.parametrize("cls", [cr.Add, cr.Multiply])
def test_merge_finite_differences(cls, shapes):
    assert_finite_differences(cls(), _randn(shapes, 1))


@each_dtype
@pytest.mark.parametrize("shapes", BROADCAST)
@pytest.mark.parametrize("cls, op", [(cr.Add, torch.add), (cr.Multiply, torch.mul)],
                         ids=["Add", "Multiply"])
def test_merge_matches_torch(cls, op, shapes, dtype):
    assert_parity(cls(), _torch_chain(op), _randn(shapes, 2), dtype, _broadcast_terms(shapes))


def test_add_gives_each_input_its_summed_gradient():
    layer = cr.Add()
    y = layer.forward([np.ones((2, 3, 4)), np.ones((3, 1)), np.ones(())])
    assert y.shape == (2, 3, 4)
    da, db, dc = layer.backward(np.ones((2, 3, 4)))
    np.testing.assert_array_equal(da, np.ones((2, 3, 4)))
    np.testing.assert_array_equal(db, np.full((3, 1), 8.0))      # summed over N and W
    assert dc.shape == () and dc == 24.0


def test_multiply_is_exact_where_inputs_are_zero():
    a = np.array([[0.0, 2.0, 0.0], [1.5, 0.0, -3.0]])
    b = np.array([[0.0, 0.5, 4.0], [0.0, 0.0, 2.0]])
    c = np.array([3.0, 0.0, -1.0])
    layer = cr.Multiply()
    layer.forward([a, b, c])
    grad = np.array([[1.0, -2.0, 0.5], [2.0, 1.0, -1.0]])
    da, db, dc = layer.backward(grad)
    np.testing.assert_array_equal(da, grad * b * c)
    np.testing.assert_array_equal(db, grad * a * c)
    np.testing.assert_array_equal(dc, (grad * a * b).sum(axis=0))
    assert np.all(np.isfinite(da)) and np.all(np.isfinite(db)) and np.all(np.isfinite(dc))


def test_squeeze_excitation_gate_gradient_is_the_spatial_sum():
    gate, fmap = _randn([(2, 3, 1, 1), (2, 3, 5, 5)], 3)
    layer = cr.Multiply()
    y = layer.forward([gate, fmap])
    grad = np.ones_like(y)
    dgate, dmap = layer.backward(grad)
    np.testing.assert_allclose(dgate, fmap.sum(axis=(2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(dmap, np.broadcast_to(gate, fmap.shape))


# ------------------------------------------------------------------------------ Concat

CONCAT_CASES = {
    "channels": (1, [(2, 3, 4), (2, 5, 4)]),
    "last_three": (-1, [(2, 3, 4), (2, 3, 1), (2, 3, 2)]),
    "batch": (0, [(2, 3), (1, 3)]),
    "height": (2, [(2, 3, 4, 5), (2, 3, 2, 5)]),
    "one_input": (1, [(2, 3, 4)]),
    "empty_piece": (1, [(2, 0, 4), (2, 3, 4)]),
    "negative_first": (-3, [(2, 3, 4), (1, 3, 4)]),
}
CONCAT = [pytest.param(dim, shapes, id=name) for name, (dim, shapes) in CONCAT_CASES.items()]


@pytest.mark.parametrize("dim, shapes", CONCAT)
def test_concat_finite_differences(dim, shapes):
    assert_finite_differences(cr.Concat(dim), _randn(shapes, 4))


@each_dtype
@pytest.mark.parametrize("dim, shapes", CONCAT)
def test_concat_matches_torch(dim, shapes, dtype):
    assert_parity(cr.Concat(dim), lambda *ts: torch.cat(ts, dim), _randn(shapes, 5), dtype, 1)


# ------------------------------------------------------------------------------ Split, Chunk

SPLIT_CASES = {
    "size_2": (2, 1, (2, 5, 3)),
    "size_covers_all": (5, 1, (2, 5, 3)),                # one output
    "sections": ([1, 4], 1, (2, 5, 3)),
    "sections_with_empty_last_axis": ([2, 0, 3], -1, (2, 3, 5)),
    "size_1_height": (1, 2, (2, 3, 4)),
    "batch": (3, 0, (7, 2)),
    "one_section": ([4], 1, (2, 4)),
}
SPLIT = [pytest.param(arg, dim, shape, id=name) for name, (arg, dim, shape) in SPLIT_CASES.items()]

CHUNK_CASES = {
    "5_in_4_gives_3": (4, 1, (2, 5, 3)),
    "even": (2, -1, (2, 3, 6)),
    "as_many_as_size": (3, 1, (2, 3)),
    "more_than_size": (5, 1, (2, 3, 2)),
    "one": (1, 2, (2, 3, 4)),
    "6_in_4_gives_3": (4, 1, (2, 6)),
}
CHUNK = [pytest.param(arg, dim, shape, id=name) for name, (arg, dim, shape) in CHUNK_CASES.items()]


@pytest.mark.parametrize("arg, dim, shape", SPLIT)
def test_split_finite_differences(arg, dim, shape):
    assert_finite_differences(cr.Split(arg, dim), _randn([shape], 6)[0])


@pytest.mark.parametrize("arg, dim, shape", CHUNK)
def test_chunk_finite_differences(arg, dim, shape):
    assert_finite_differences(cr.Chunk(arg, dim), _randn([shape], 7)[0])


@pytest.mark.parametrize("cls", [cr.Split, cr.Chunk])
def test_split_and_chunk_finite_differences_with_none_gradients(cls):
    x = _randn([(2, 7, 3)], 8)[0]
    assert_finite_differences(cls(3, 1), x, drop=(1,))      # pieces 3, 3, 1 / 3, 3, 1
    assert_finite_differences(cls(3, 1), x, drop=(0, 2))


@each_dtype
@pytest.mark.parametrize("arg, dim, shape", SPLIT)
def test_split_matches_torch(arg, dim, shape, dtype):
    assert_parity(cr.Split(arg, dim), lambda t: torch.split(t, arg, dim),
                  _randn([shape], 9)[0], dtype, 1)


@each_dtype
@pytest.mark.parametrize("arg, dim, shape", CHUNK)
def test_chunk_matches_torch(arg, dim, shape, dtype):
    assert_parity(cr.Chunk(arg, dim), lambda t: torch.chunk(t, arg, dim),
                  _randn([shape], 10)[0], dtype, 1)


@each_dtype
@pytest.mark.parametrize("drop", [(0,), (1, 2), (2,)], ids=lambda d: f"none{d}")
@pytest.mark.parametrize("cls, fn", [(cr.Split, torch.split), (cr.Chunk, torch.chunk)],
                         ids=["Split", "Chunk"])
def test_none_gradients_match_torch_with_those_outputs_unused(cls, fn, drop, dtype):
    assert_parity(cls(3, -1), lambda t: fn(t, 3, -1), _randn([(2, 3, 8)], 11)[0], dtype, 1,
                  drop=drop)


def test_split_backward_with_no_gradient_at_all_is_zeros():
    layer = cr.Split([1, 2])
    layer.forward(np.ones((2, 3), np.float32))
    dx = layer.backward([None, None])
    assert dx.dtype == np.float32
    np.testing.assert_array_equal(dx, np.zeros((2, 3)))


@pytest.mark.parametrize("size", range(0, 10))
def test_chunk_sizes_match_torch_over_a_grid(size):
    x = np.zeros((2, size))
    for chunks in range(1, 8):
        ours = [p.shape for p in cr.Chunk(chunks).forward(x)]
        theirs = [tuple(t.shape) for t in torch.chunk(torch.zeros(2, size), chunks, 1)]
        assert ours == theirs, (size, chunks)
        for split_size in range(1, 8):
            ours = [p.shape for p in cr.Split(split_size).forward(x)]
            theirs = [tuple(t.shape) for t in torch.split(torch.zeros(2, size), split_size, 1)]
            assert ours == theirs, (size, split_size)


# ------------------------------------------------------------------- Reshape, Permute, Mean

RESHAPE_CASES = {
    "flat": ((12,), (2, 3, 4)),
    "inferred": ((4, -1), (2, 3, 4)),
    "inferred_only": ((-1,), (2, 3, 4)),
    "unflatten": ((3, 2, 2), (2, 12)),
    "scalar_samples": ((), (3, 1)),
    "unit_axes": ((1, -1, 1), (2, 6)),
}
PERMUTE_CASES = {
    "nhwc": ((0, 2, 3, 1), (2, 3, 4, 5)),
    "nwch": ((0, 3, 1, 2), (2, 3, 4, 5)),
    "negative": ((0, -1, 1), (2, 3, 4)),
    "batch_only": ((0,), (5,)),
    "identity": ((0, 1), (2, 3)),
    "unit_axis": ((0, 2, 1), (2, 1, 4)),
}
MEAN_CASES = {
    "spatial": ((2, 3), False, (2, 3, 4, 5)),
    "spatial_keepdim": ((2, 3), True, (2, 3, 4, 5)),
    "channels": (1, False, (2, 3, 4)),
    "last_keepdim": (-1, True, (2, 3, 4)),
    "unsorted_negative": ((-2, 1), False, (2, 3, 4, 5)),
    "whole_sample": ([1, 2, 3], False, (2, 3, 4, 5)),
    "features": (1, False, (2, 6)),
}


def _single_cases():
    """(id, layer factory, torch function, input shape, float32 terms) for the three
    single-input layers."""
    for name, (shape, x_shape) in RESHAPE_CASES.items():
        yield (f"Reshape-{name}", lambda s=shape: cr.Reshape(s),
               lambda t, s=shape: t.reshape(t.shape[0], *s), x_shape, 1)
    for name, (dims, x_shape) in PERMUTE_CASES.items():
        yield (f"Permute-{name}", lambda d=dims: cr.Permute(d), lambda t, d=dims: t.permute(d),
               x_shape, 1)
    for name, (dims, keep, x_shape) in MEAN_CASES.items():
        axes = [dims] if isinstance(dims, int) else dims
        count = int(np.prod([x_shape[a] for a in axes]))
        yield (f"Mean-{name}", lambda d=dims, k=keep: cr.Mean(d, keepdim=k),
               lambda t, d=dims, k=keep: t.mean(dim=d, keepdim=k), x_shape, count)


SINGLE = [pytest.param(build, fn, shape, terms, id=name)
          for name, build, fn, shape, terms in _single_cases()]


@pytest.mark.parametrize("build, fn, shape, terms", SINGLE)
def test_shape_layers_gradcheck(build, fn, shape, terms):
    x = _randn([shape], 12)[0]
    assert build().forward(x).shape == tuple(fn(torch.tensor(x)).shape)
    assert_gradcheck(build(), x, 1e-7)


@each_dtype
@pytest.mark.parametrize("build, fn, shape, terms", SINGLE)
def test_shape_layers_match_torch(build, fn, shape, terms, dtype):
    assert_parity(build(), fn, _randn([shape], 13)[0], dtype, terms)


def test_mean_backward_spreads_the_gradient_evenly():
    layer = cr.Mean((2, 3))
    layer.forward(np.zeros((1, 2, 2, 5)))
    dx = layer.backward(np.array([[10.0, -20.0]]))
    np.testing.assert_array_equal(dx[0, 0], np.full((2, 5), 1.0))
    np.testing.assert_array_equal(dx[0, 1], np.full((2, 5), -2.0))
    assert dx.flags.writeable


def test_permute_backward_is_the_inverse_permutation():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    layer = cr.Permute((0, 3, 1, 2))
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.backward(y), x)


# ------------------------------------------------------------------------------ conventions

ALL_LAYERS = {
    "Add": (cr.Add, [(2, 3), (2, 3)]),
    "Multiply": (cr.Multiply, [(2, 3), (1, 3)]),
    "Concat": (lambda: cr.Concat(1), [(2, 3), (2, 2)]),
    "Split": (lambda: cr.Split(2), (2, 3)),
    "Chunk": (lambda: cr.Chunk(2), (2, 3)),
    "Reshape": (lambda: cr.Reshape((3, 1)), (2, 3)),
    "Permute": (lambda: cr.Permute((0, 2, 1)), (2, 3, 4)),
    "Mean": (lambda: cr.Mean(1), (2, 3)),
}
ALL = [pytest.param(build, shapes, id=name) for name, (build, shapes) in ALL_LAYERS.items()]


def _inputs_for(shapes, dtype=np.float32, seed=14):
    if isinstance(shapes, list):
        return _randn(shapes, seed, dtype)
    return _randn([shapes], seed, dtype)[0]


def _ones_like_output(out):
    return [np.ones_like(o) for o in out] if isinstance(out, list) else np.ones_like(out)


@pytest.mark.parametrize("build, shapes", ALL)
def test_float32_stays_float32_and_gradients_keep_input_shapes(build, shapes):
    layer = build()
    xs = _inputs_for(shapes)
    out = layer.forward(xs)
    assert all(o.dtype == np.float32 for o in _listed(out))
    dx = layer.backward(_ones_like_output(out))
    if isinstance(xs, list):
        assert isinstance(dx, list) and len(dx) == len(xs)
        assert [(d.shape, d.dtype) for d in dx] == [(x.shape, x.dtype) for x in xs]
    else:
        assert dx.shape == xs.shape and dx.dtype == np.float32


@pytest.mark.parametrize("build, shapes", ALL)
def test_second_backward_without_forward_raises(build, shapes):
    layer = build()
    out = layer.forward(_inputs_for(shapes))
    layer.backward(_ones_like_output(out))
    with pytest.raises(RuntimeError, match=r"backward called without a cached forward pass"):
        layer.backward(_ones_like_output(out))


@pytest.mark.parametrize("build, shapes", ALL)
def test_eval_mode_keeps_no_cache_unless_gradients_are_asked_for(build, shapes):
    layer = build().eval()
    out = layer.forward(_inputs_for(shapes))
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="without a cached forward pass"):
        layer.backward(_ones_like_output(out))
    layer.gradients_in_eval()
    out = layer.forward(_inputs_for(shapes))
    layer.backward(_ones_like_output(out))


def test_mixed_dtypes_promote_and_each_gradient_keeps_its_inputs_dtype():
    a = np.ones((2, 3), np.float32)
    b = np.ones((2, 3), np.float64)
    for layer in (cr.Add(), cr.Multiply(), cr.Concat(1)):
        out = layer.forward([a, b])
        assert out.dtype == np.float64
        da, db = layer.backward(np.ones_like(out))
        assert (da.dtype, db.dtype) == (np.float32, np.float64), layer


def test_integer_inputs_become_float32():
    ints = [np.arange(6).reshape(2, 3), np.ones((2, 3), np.uint8)]
    assert cr.Add().forward(ints).dtype == np.float32
    assert cr.Concat(0).forward(ints).dtype == np.float32
    assert cr.Mean(1).forward(ints[0]).dtype == np.float32
    assert all(p.dtype == np.float32 for p in cr.Split(1).forward(ints[0]))


@pytest.mark.parametrize("layer, text", [
    (cr.Add(), "Add()"), (cr.Multiply(), "Multiply()"), (cr.Concat(), "Concat(dim=1)"),
    (cr.Split([1, 2], -1), "Split(split_size_or_sections=(1, 2), dim=-1)"),
    (cr.Chunk(3), "Chunk(chunks=3, dim=1)"), (cr.Reshape([4, -1]), "Reshape(shape=(4, -1))"),
    (cr.Permute([0, 2, 1]), "Permute(dims=(0, 2, 1))"), (cr.Mean(2), "Mean(dims=2)"),
    (cr.Mean((2, 3), keepdim=True), "Mean(dims=(2, 3), keepdim=True)"),
])
def test_repr(layer, text):
    assert repr(layer) == text


# ------------------------------------------------------------------------------ errors

def test_merge_layers_want_a_list_of_enough_inputs():
    for layer in (cr.Add(), cr.Multiply(), cr.Concat()):
        name = re.escape(repr(layer))
        with pytest.raises(TypeError, match=rf"^{name}: forward expects a list or tuple of "
                                            r"ndarrays \(one per input\), got ndarray"):
            layer.forward(np.zeros((2, 3)))
    for layer in (cr.Add(), cr.Multiply()):
        with pytest.raises(ValueError, match=rf"^{re.escape(repr(layer))}: forward expects at "
                                             "least 2 inputs, got 1"):
            layer.forward([np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"^Concat\(dim=1\): forward expects at least 1 input, "
                                         "got 0"):
        cr.Concat().forward([])


@pytest.mark.parametrize("cls", [cr.Add, cr.Multiply])
def test_inputs_that_do_not_broadcast_are_named(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\(\): input 2 of shape \(2, 4\) does "
                                         r"not broadcast with the inputs before it \(shapes "
                                         r"\(2, 3\), \(1, 3\), together \(2, 3\)\)"):
        cls().forward([np.zeros((2, 3)), np.zeros((1, 3)), np.zeros((2, 4))])


def test_concat_mismatch_names_the_input_both_shapes_and_the_dim():
    with pytest.raises(ValueError, match=r"^Concat\(dim=1\): input 2 of shape \(2, 3, 5\) does "
                                         r"not fit input 0 of shape \(2, 3, 4\): every axis "
                                         r"but dim=1 \(axis 1\) must match"):
        cr.Concat(1).forward([np.zeros((2, 3, 4)), np.zeros((2, 1, 4)), np.zeros((2, 3, 5))])
    with pytest.raises(ValueError, match=r"^Concat\(dim=-1\): input 1 of shape \(2, 3\) does "
                                         r"not fit input 0 of shape \(2, 3, 4\)"):
        cr.Concat(-1).forward([np.zeros((2, 3, 4)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"^Concat\(dim=3\): dim=3 is out of range for input of "
                                         r"shape \(2, 3, 4\) \(expected a dim in \[-3, 2\]\)"):
        cr.Concat(3).forward([np.zeros((2, 3, 4))] * 2)
    with pytest.raises(ValueError, match=r"^Concat\(dim=1\): input 0 is 0-D"):
        cr.Concat().forward([np.zeros(()), np.zeros(())])


def test_split_sections_that_do_not_sum_to_the_size_are_refused():
    with pytest.raises(ValueError, match=r"^Split\(split_size_or_sections=\(2, 2\), dim=1\): the "
                                         r"sections \[2, 2\] sum to 4, not to the size 5 of "
                                         r"dim=1 of input of shape \(2, 5\)"):
        cr.Split([2, 2]).forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"^Split\(split_size_or_sections=2, dim=2\): dim=2 is "
                                         "out of range"):
        cr.Split(2, dim=2).forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"^Chunk\(chunks=2, dim=1\): expected an input with at "
                                         r"least one axis, got shape \(\)"):
        cr.Chunk(2).forward(np.zeros(()))


@pytest.mark.parametrize("args, error, message", [
    ((0,), ValueError, "Split(0): split_size_or_sections must be >= 1, got 0"),
    ((2.0,), TypeError, "Split(2.0): split_size_or_sections must be a positive int or a list of "
                        "ints, got 2.0"),
    ((True,), TypeError, "Split(True): split_size_or_sections must be a positive int"),
    (([],), ValueError, "Split([]): split_size_or_sections must not be an empty list"),
    (([2, -1],), ValueError, "Split([2, -1]): split_size_or_sections must hold ints >= 0, got "
                             "[2, -1]"),
    (([2, 1.5],), TypeError, "Split([2, 1.5]): split_size_or_sections must be a tuple or list of "
                             "ints"),
    ((2, "1"), TypeError, "Split(2): dim must be an int, got '1'"),
])
def test_split_bad_arguments(args, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        cr.Split(*args)


@pytest.mark.parametrize("args, error, message", [
    ((0,), ValueError, "Chunk(0): chunks must be >= 1, got 0"),
    ((2.5,), TypeError, "Chunk(2.5): chunks must be a positive int, got 2.5"),
    ((2, 1.0), TypeError, "Chunk(2): dim must be an int, got 1.0"),
])
def test_chunk_bad_arguments(args, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        cr.Chunk(*args)


def test_concat_bad_dim():
    with pytest.raises(TypeError, match=r"^Concat: dim must be an int, got None"):
        cr.Concat(None)


@pytest.mark.parametrize("build", [lambda: cr.Split(2), lambda: cr.Chunk(3)],
                         ids=["Split", "Chunk"])
def test_split_backward_checks_its_gradients(build):
    layer = build()
    layer.forward(np.zeros((2, 5)))                      # pieces (2, 2), (2, 2), (2, 1)
    name = re.escape(repr(layer))
    with pytest.raises(TypeError, match=rf"^{name}: backward expects a list or tuple with one "
                                        r"gradient \(or None\) per output, got ndarray"):
        layer.backward(np.zeros((2, 5)))
    layer.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=rf"^{name}: backward expects 3 gradients \(one per "
                                         r"output, None for none\), got 2"):
        layer.backward([None, None])
    layer.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=rf"^{name}: backward expected the gradient of output 2 "
                                         r"to have shape \(2, 1\) \(the shape of that output\), "
                                         r"got \(2, 2\)"):
        layer.backward([None, np.zeros((2, 2)), np.zeros((2, 2))])
    layer.forward(np.zeros((2, 5)))
    with pytest.raises(TypeError, match=rf"^{name}: backward expects an ndarray or None for "
                                        "output 0, got list"):
        layer.backward([[0.0], None, None])


@pytest.mark.parametrize("build, shapes", ALL)
def test_backward_checks_the_gradient_shape(build, shapes):
    layer = build()
    out = layer.forward(_inputs_for(shapes))
    if isinstance(out, list):
        return                                           # test_split_backward_checks_its_gradients
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(layer))}: backward expected a "
                                         rf"gradient of shape {re.escape(str(out.shape))}"):
        layer.backward(np.zeros(out.shape + (1,), np.float32))


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"^Reshape\(shape=\(4, 4\)\): cannot reshape a sample of "
                                         r"shape \(3, 4\) \(12 elements\) into \(4, 4\) \(16 "
                                         r"elements; input shape \(2, 3, 4\)\)"):
        cr.Reshape((4, 4)).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^Reshape\(shape=\(5, -1\)\): cannot reshape a sample "
                                         r"of shape \(3, 4\) \(12 elements\) into \(5, -1\)"):
        cr.Reshape((5, -1)).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^Reshape\(shape=\(3,\)\): expected an input with a "
                                         r"batch axis, got shape \(\)"):
        cr.Reshape((3,)).forward(np.zeros(()))


@pytest.mark.parametrize("shape, error, message", [
    (3, TypeError, "Reshape(3): shape must be a tuple or list of ints, got 3"),
    ((2, 1.0), TypeError, "Reshape((2, 1.0)): shape must be a tuple or list of ints"),
    ((2, -2), ValueError, "Reshape((2, -2)): shape must hold ints >= -1, got (2, -2)"),
    ((-1, -1), ValueError, "Reshape((-1, -1)): shape may hold at most one -1 (inferred), got "
                           "(-1, -1)"),
])
def test_reshape_bad_arguments(shape, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        cr.Reshape(shape)


@pytest.mark.parametrize("dims, error, message", [
    ((1, 0, 2), ValueError, "Permute((1, 0, 2)): dims[0] must be 0, the batch axis staying "
                            "first, got 1"),
    ((-3, 1, 2), ValueError, "Permute((-3, 1, 2)): dims[0] must be 0"),
    ((0, 1, 1), ValueError, "Permute((0, 1, 1)): dims must be a permutation of 0 .. 2 (negative "
                            "entries count from the end), got (0, 1, 1)"),
    ((0, 3, 1), ValueError, "Permute((0, 3, 1)): dims must be a permutation of 0 .. 2"),
    ((0, -4, 1), ValueError, "Permute((0, -4, 1)): dims must hold ints >= -3"),
    ((), ValueError, "Permute(()): dims must not be empty"),
    (2, TypeError, "Permute(2): dims must be a tuple or list of ints, got 2"),
])
def test_permute_bad_arguments(dims, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        cr.Permute(dims)


def test_permute_needs_one_dim_per_input_axis():
    with pytest.raises(ValueError, match=r"^Permute\(dims=\(0, 2, 1\)\): dims has 3 entries but "
                                         r"the input has 4 axes \(shape \(2, 3, 4, 5\)\); dims "
                                         "counts the batch axis"):
        cr.Permute((0, 2, 1)).forward(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("args, error, message", [
    ((0,), ValueError, "Mean(0): dims must not hold 0, the batch axis"),
    (((1, 0),), ValueError, "Mean((1, 0)): dims must not hold 0, the batch axis"),
    (((),), ValueError, "Mean(()): dims must not be empty (torch would average over every axis, "
                        "the batch included)"),
    (((1, 1),), ValueError, "Mean((1, 1)): dims must not repeat an axis, got (1, 1)"),
    ((None,), TypeError, "Mean(None): dims must be an int or a tuple of ints, got None"),
    (((1, 2.0),), TypeError, "Mean((1, 2.0)): dims must be a tuple or list of ints"),
    ((1, 1), TypeError, "Mean(1): keepdim must be a bool, got 1"),
])
def test_mean_bad_arguments(args, error, message):
    with pytest.raises(error, match="^" + re.escape(message)):
        cr.Mean(*args)


def test_mean_dims_that_reach_the_batch_or_repeat_at_forward_are_refused():
    with pytest.raises(ValueError, match=r"^Mean\(dims=-3\): dims -3 reach axis 0, the batch "
                                         r"axis, of input of shape \(2, 3, 4\)"):
        cr.Mean(-3).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^Mean\(dims=\(1, -2\)\): dims \(1, -2\) name the same "
                                         r"axis twice for input of shape \(2, 3, 4\)"):
        cr.Mean((1, -2)).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"^Mean\(dims=3\): dims=3 is out of range for input of "
                                         r"shape \(2, 3, 4\)"):
        cr.Mean(3).forward(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------------------ registries

CONVERTED = [
    ("Add", cr.Add(), [(2, 3, 4), (3, 1)]),
    ("Multiply", cr.Multiply(), [(2, 3, 1, 1), (2, 3, 4, 4), (4,)]),
    ("Concat", cr.Concat(-1), [(2, 3, 4), (2, 3, 2)]),
    ("Split", cr.Split([1, 3], 1), (2, 4, 3)),
    ("Chunk", cr.Chunk(4, -1), (2, 3, 5)),
    ("Reshape", cr.Reshape((-1, 2)), (2, 3, 4)),
    ("Permute", cr.Permute((0, 3, 1, 2)), (2, 3, 4, 5)),
    ("Mean", cr.Mean((-1, 2), keepdim=True), (2, 3, 4, 5)),
]


@each_dtype
@pytest.mark.parametrize("name, layer, shapes", CONVERTED, ids=[c[0] for c in CONVERTED])
def test_torch_round_trip_keeps_the_layer_and_its_outputs(name, layer, shapes, dtype):
    from chainrule.interop.torch import from_torch, to_torch
    import chainrule.interop.torch as interop_torch
    module = to_torch(layer.copy().eval())
    assert type(module) is getattr(interop_torch, f"Torch{name}") and not module.training
    back = from_torch(module)
    assert type(back) is type(layer) and repr(back) == repr(layer) and not back.training
    xs = _inputs_for(shapes, dtype, seed=15)
    with torch.no_grad():
        theirs = module(*[torch.from_numpy(x) for x in _listed(xs)])
    # The same operations in the same order: equal, but for the sums of Mean.
    terms = int(np.prod([xs.shape[a] for a in layer.dims])) if isinstance(layer, cr.Mean) else 1
    for y, t in zip(_listed(back.forward(xs)), _listed(theirs)):
        assert y.dtype == dtype and rel_error(y, t.numpy()) <= _tolerance(dtype, terms)
        if terms == 1:
            np.testing.assert_array_equal(y, t.numpy())


@pytest.mark.parametrize("name, layer, shapes", CONVERTED, ids=[c[0] for c in CONVERTED])
def test_architecture_description_round_trip(name, layer, shapes):
    desc = serialize.describe(layer)
    assert desc["type"] == name
    assert repr(serialize.build(desc)) == repr(layer)


def test_torch_modules_pickle_by_their_public_names():
    import pickle

    from chainrule.interop.torch import to_torch
    module = pickle.loads(pickle.dumps(to_torch(cr.Split([1, 2], -1))))
    assert type(module).__qualname__ == "TorchSplit"
    assert [t.shape[-1] for t in module(torch.zeros(2, 3))] == [1, 2]


def _run_converter(layer, xs: list[np.ndarray] | np.ndarray, dtype) -> list[np.ndarray]:
    """The layer's ONNX converter on a hand-built graph: the inputs declared with a
    dynamic batch axis (those of the full rank and the batch's size), run by ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from chainrule.interop import onnx as onnx_export
    onnx = onnx_export._import_onnx()
    helper = onnx.helper
    several = isinstance(xs, list)
    arrays = _listed(xs)
    batch, rank = arrays[0].shape[0], max(a.ndim for a in arrays)
    g = onnx_export._Graph(onnx, np.dtype(dtype))
    names = [f"x{i}" for i in range(len(arrays))]
    g._names.update(names)
    shapes = [((1, *a.shape[1:]) if a.ndim == rank and a.shape[0] == batch else a.shape)
              for a in arrays]
    convert = onnx_export._CONVERTERS[type(layer)]
    out = convert(g, layer, names if several else names[0], shapes if several else shapes[0],
                  "merge")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info(n, elem, ["N", *a.shape[1:]] if s[0] == 1 and
                                            a.ndim == rank else list(a.shape))
              for n, a, s in zip(names, arrays, shapes)]
    dynamic = any(s[0] == 1 and a.ndim == rank for a, s in zip(arrays, shapes))
    expected = [y.shape for y in _listed(layer.copy().forward(xs))]
    outputs = [helper.make_tensor_value_info(o, elem, ["N" if dynamic else y[0], *y[1:]])
               for o, y in zip(_listed(out), expected)]
    graph = helper.make_graph(g.nodes, "merge", inputs, outputs, initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_export.OPSET)],
                              ir_version=onnx_export.IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, arrays)))


ONNX_CASES = CONVERTED + [
    ("Add-three", cr.Add(), [(3, 2, 4), (3, 2, 4), (1, 2, 1)]),
    ("Concat-channels-three", cr.Concat(1), [(3, 2, 4), (3, 1, 4), (3, 5, 4)]),
    ("Chunk-5-in-4", cr.Chunk(4), (3, 5, 2)),
    ("Split-size", cr.Split(2, -1), (3, 2, 5)),
    ("Mean-no-keepdim", cr.Mean(1), (3, 6, 2)),
    ("Reshape-flat", cr.Reshape([24]), (3, 2, 3, 4)),
]


@pytest.mark.parametrize("name, layer, shapes", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_converter_agrees_with_forward(name, layer, shapes):
    xs = _inputs_for(shapes, np.float32, seed=16)
    ours = _listed(layer.forward(xs))
    theirs = _run_converter(layer, xs, np.float32)
    assert len(theirs) == len(ours)
    terms = int(np.prod([np.shape(xs)[a] for a in ((layer.dims,) if isinstance(layer.dims, int)
                                                   else layer.dims)])) \
        if isinstance(layer, cr.Mean) else 1
    for y, t in zip(ours, theirs):
        assert t.shape == y.shape
        assert rel_error(t, y) <= float32_tolerance(terms), name


def test_onnx_split_of_the_batch_axis_is_refused():
    from chainrule.interop import UnsupportedModuleError
    with pytest.raises(UnsupportedModuleError, match=r"Split\(.*dim=0\) cuts the batch axis"):
        _run_converter(cr.Split(1, dim=0), np.zeros((2, 3), np.float32), np.float32)


def test_explain_names_each_layer_in_its_formula():
    from chainrule.inspect import derivative_of
    for name, layer, _ in CONVERTED:
        assert derivative_of(layer).formula.startswith(f"{name}: dL/dx")
