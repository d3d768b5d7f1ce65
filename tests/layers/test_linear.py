"""Linear, Flatten and Unflatten: finite differences in float64, parity with torch.nn, and
the errors where torch refuses an axis or a size."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_gradcheck, assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]

# (in_features, out_features, bias, input shape): batch 1, odd sizes, 3-D (N, L, in).
LINEAR_CASES = [
    (4, 3, True, (2, 4)),
    (1, 1, True, (1, 1)),
    (7, 5, False, (3, 7)),
    (5, 9, True, (1, 5)),
    (6, 2, True, (2, 3, 6)),
    (3, 4, False, (1, 5, 3)),
]


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _linear_id(case) -> str:
    fin, fout, bias, shape = case
    return f"{fin}->{fout}-bias{int(bias)}-x{_dims(shape)}"


@pytest.mark.parametrize("case", LINEAR_CASES, ids=_linear_id)
def test_linear_gradcheck(case):
    fin, fout, bias, shape = case
    layer = cr.Linear(fin, fout, bias=bias, dtype=np.float64, rng=1)
    assert_gradcheck(layer, np.random.default_rng(2).standard_normal(shape), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", LINEAR_CASES, ids=_linear_id)
def test_linear_matches_torch(case, dtype):
    fin, fout, bias, shape = case
    torch.manual_seed(0)
    ref = torch.nn.Linear(fin, fout, bias=bias)
    layer = cr.Linear(fin, fout, bias=bias)
    x = np.random.default_rng(3).standard_normal(shape)
    assert_torch_parity(layer, ref, x, dtype=dtype)


def test_linear_without_bias_has_only_a_weight():
    layer = cr.Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert list(layer.state_dict()) == ["weight"]
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(layer.forward(x), x @ layer.weight.data.T)


def test_linear_init_is_seeded_and_within_torch_bound():
    a = cr.Linear(50, 20, rng=4)
    b = cr.Linear(50, 20, rng=4)
    c = cr.Linear(50, 20, rng=5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    bound = 1 / math.sqrt(50)
    assert np.abs(a.weight.data).max() <= bound and np.abs(a.bias.data).max() <= bound
    # Kaiming-uniform spread, not a degenerate constant: the std of U(-b, b) is b/sqrt(3).
    assert abs(a.weight.data.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert a.weight.dtype == np.float32


def test_linear_gradients_accumulate_across_backwards():
    layer = cr.Linear(3, 2, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    g = np.random.default_rng(1).standard_normal((4, 2))
    layer.forward(x)
    layer.backward(g)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-12)


# (start_dim, end_dim, input shape)
FLATTEN_CASES = [
    (1, -1, (2, 3, 4, 5)),
    (1, -1, (1, 3, 1, 1)),
    (0, -1, (2, 3, 4)),
    (1, 2, (2, 3, 4, 5)),
    (2, 3, (1, 3, 4, 5)),
    (-3, -2, (2, 3, 4, 5)),
    (1, 1, (3, 5, 2)),
    (0, -1, (5,)),                 # 1-D: nothing to merge
    (-1, -1, (5,)),
    (0, 0, ()),                    # 0-D: torch counts it as 1-D and returns shape (1,)
    (0, -1, ()),
    (-1, 0, ()),
    (-4, 3, (2, 3, 4, 5)),         # the extreme dims of either sign
]


def check_shape_and_gradcheck(layer, torch_module, x: np.ndarray, tol: float) -> None:
    """The output has torch's shape, and finite differences agree below ``tol``."""
    assert layer.forward(x).shape == tuple(torch_module(torch.tensor(x)).shape)
    assert_gradcheck(layer, x, tol)


def _flatten_id(case) -> str:
    start, end, shape = case
    return f"{start}..{end}-x{_dims(shape)}"


@pytest.mark.parametrize("case", FLATTEN_CASES, ids=_flatten_id)
def test_flatten_shape_and_gradcheck(case):
    start, end, shape = case
    check_shape_and_gradcheck(cr.Flatten(start, end), torch.nn.Flatten(start, end),
                              np.random.default_rng(5).standard_normal(shape), 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", FLATTEN_CASES, ids=_flatten_id)
def test_flatten_matches_torch(case, dtype):
    start, end, shape = case
    x = np.random.default_rng(6).standard_normal(shape)
    assert_torch_parity(cr.Flatten(start, end), torch.nn.Flatten(start, end), x, dtype=dtype)


def test_flatten_backward_restores_the_input_layout():
    layer = cr.Flatten()
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.backward(y), x)


def test_flatten_rejects_reversed_axes():
    with pytest.raises(ValueError, match=r"Flatten.*\(2, 3, 4\)"):
        cr.Flatten(2, 1).forward(np.zeros((2, 3, 4)))


def test_flatten_has_torchs_defaults():
    import inspect
    ours = inspect.signature(cr.Flatten).parameters
    theirs = inspect.signature(torch.nn.Flatten).parameters
    assert [(p.name, p.default) for p in ours.values()] == \
        [(p.name, p.default) for p in theirs.values()]
    assert repr(cr.Flatten()) == repr(torch.nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"


# (start_dim, end_dim, input shape) that torch refuses with "Dimension out of range"
FLATTEN_OUT_OF_RANGE = [
    (5, -1, (2, 3, 4, 5)),
    (4, -1, (2, 3, 4, 5)),
    (1, 5, (2, 3, 4, 5)),
    (-5, -1, (2, 3, 4, 5)),
    (1, -1, (3,)),                 # the default on a 1-D input
    (0, 1, ()),
    (-2, -1, ()),
]


@pytest.mark.parametrize("case", FLATTEN_OUT_OF_RANGE, ids=_flatten_id)
def test_flatten_out_of_range_dims_raise_like_torch_instead_of_wrapping(case):
    start, end, shape = case
    with pytest.raises(IndexError, match="Dimension out of range"):
        torch.nn.Flatten(start, end)(torch.zeros(shape))
    name = "start_dim" if not -max(len(shape), 1) <= start < max(len(shape), 1) else "end_dim"
    with pytest.raises(ValueError, match=rf"Flatten.*{name}=-?\d+ is out of range for input of "
                                         rf"shape {re.escape(str(shape))}"):
        cr.Flatten(start, end).forward(np.zeros(shape))


@pytest.mark.parametrize("start, end", [(2, 1), (-1, 1), (3, -2), (-1, -2)])
def test_flatten_start_after_end_after_normalization_is_refused_like_torch(start, end):
    shape = (2, 3, 4, 5)
    with pytest.raises(RuntimeError, match="start_dim cannot come after end_dim"):
        torch.nn.Flatten(start, end)(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"Flatten.*start_dim comes after end_dim.*\(2, 3, 4, 5\)"):
        cr.Flatten(start, end).forward(np.zeros(shape))


@pytest.mark.parametrize("bad", [1.0, "1", True, None])
def test_flatten_dims_must_be_ints(bad):
    with pytest.raises(TypeError, match="Flatten: start_dim must be an int"):
        cr.Flatten(bad)
    with pytest.raises(TypeError, match="Flatten: end_dim must be an int"):
        cr.Flatten(1, bad)
    assert cr.Flatten(np.int64(2)).start_dim == 2


# ----------------------------------------------------------------------------- Unflatten
# (dim, unflattened_size, input shape): negative dims, an inferred -1 in any position,
# the batch axis, a single size, 1-D and 4-D inputs, a size-1 axis.
UNFLATTEN_CASES = [
    (1, (2, 3), (4, 6)),
    (-1, (2, 3), (4, 6)),
    (1, (-1, 3), (4, 6)),
    (1, (2, -1), (4, 6)),
    (0, (2, 2), (4, 6)),
    (1, (6,), (4, 6)),
    (1, (1, 6), (4, 6)),
    (1, (1, -1, 1), (1, 5)),
    (2, (2, 2, 2), (2, 3, 8, 5)),
    (-2, (4, -1), (2, 3, 8, 5)),
    (-4, (1, 2), (2, 3, 8, 5)),
    (0, (2, 3), (6,)),
    (1, [3, 4, 4], (2, 48)),
]


def _unflatten_id(case) -> str:
    dim, sizes, shape = case
    return f"dim{dim}-{_dims(sizes)}-of-{_dims(shape)}"


@pytest.mark.parametrize("case", UNFLATTEN_CASES, ids=_unflatten_id)
def test_unflatten_shape_and_gradcheck(case):
    dim, sizes, shape = case
    check_shape_and_gradcheck(cr.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes),
                              np.random.default_rng(7).standard_normal(shape), 1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", UNFLATTEN_CASES, ids=_unflatten_id)
def test_unflatten_matches_torch(case, dtype):
    dim, sizes, shape = case
    x = np.random.default_rng(8).standard_normal(shape)
    # a reshape adds nothing: exact in any dtype
    assert_torch_parity(cr.Unflatten(dim, sizes), torch.nn.Unflatten(dim, sizes), x, dtype=dtype,
                        terms=1)


def test_unflatten_inverts_flatten_and_reads_like_torch():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    model = cr.Sequential(cr.Flatten(), cr.Unflatten(1, (3, 4, 5)))
    np.testing.assert_array_equal(model.forward(x), x)
    np.testing.assert_array_equal(model.backward(x), x)
    layer = cr.Unflatten(1, [3, -1])
    assert layer.unflattened_size == (3, -1)
    assert repr(layer) == repr(torch.nn.Unflatten(1, (3, -1))) == \
        "Unflatten(dim=1, unflattened_size=(3, -1))"
    assert layer.state_dict() == {}


@pytest.mark.parametrize("dim, sizes, shape, message", [
    (1, (4, 3), (4, 6), r"multiply to 12, not to the size 6 of axis 1 of input of shape \(4, 6\)"),
    (1, (2, 0), (4, 6), r"multiply to 0, not to the size 6"),
    (1, (4, -1), (4, 6), r"cannot split an axis of size 6 into \(4, -1\).*\(4, 6\)"),
    (1, (0, -1), (4, 0), r"cannot split an axis of size 0 into \(0, -1\)"),
    (2, (2, 3), (4, 6), r"dim=2 is out of range for input of shape \(4, 6\).*\[-2, 1\]"),
    (-3, (2, 3), (4, 6), r"dim=-3 is out of range"),
    (0, (1,), (), r"at least one axis, got shape \(\)"),
])
def test_unflatten_input_that_does_not_fit_is_refused_where_torch_refuses(dim, sizes, shape,
                                                                          message):
    with pytest.raises((RuntimeError, IndexError)):
        torch.nn.Unflatten(dim, sizes)(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"^Unflatten\(dim=.*" + message):
        cr.Unflatten(dim, sizes).forward(np.zeros(shape))


@pytest.mark.parametrize("dim, sizes, error, message", [
    (1.0, (2, 3), TypeError, "dim must be an int"),
    (True, (2, 3), TypeError, "dim must be an int"),
    ("a", (2, 3), TypeError, "dim must be an int"),
    (1, 3, TypeError, "unflattened_size must be a tuple or list of ints"),
    (1, (2.0, 3), TypeError, "unflattened_size must be a tuple or list of ints"),
    (1, (True, 3), TypeError, "unflattened_size must be a tuple or list of ints"),
    (1, (), ValueError, "unflattened_size must not be empty"),
    (1, (-1, -1), ValueError, "at most one -1"),
    (1, (2, -2), ValueError, "sizes >= 0"),
])
def test_unflatten_bad_arguments_name_the_layer(dim, sizes, error, message):
    with pytest.raises(error, match=r"^Unflatten\(dim=.*" + re.escape(message)):
        cr.Unflatten(dim, sizes)


def test_unflatten_backward_checks_the_gradient_shape():
    layer = cr.Unflatten(1, (2, 3))
    layer.forward(np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(4, 2, 3\)"):
        layer.backward(np.zeros((4, 6)))


def test_unflatten_of_the_batch_axis_is_not_exported_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    from chainrule.interop import UnsupportedModuleError
    with pytest.raises(UnsupportedModuleError, match=r"^1: Unflatten.*batch axis"):
        cr.export_onnx(cr.Sequential(cr.ReLU(), cr.Unflatten(0, (1, -1))), tmp_path / "m.onnx",
                       (3, 4))
    with pytest.raises(UnsupportedModuleError, match=r"^0: Unflatten.*batch axis"):
        cr.export_onnx(cr.Sequential(cr.Unflatten(-3, (1, -1))), tmp_path / "m.onnx", (3, 4))
