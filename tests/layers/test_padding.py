"""ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d: finite differences in
float64, parity with torch.nn (forward and backward) over grids of paddings and shapes,
corners that collect gradient through both axes, negative (cropping) paddings, and
clear errors where torch refuses."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers.padding import _fold, _source_index
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
KINDS = ["zero", "constant", "reflection", "replication"]


def make(kind: str, padding):
    """The chainrule layer and its torch.nn twin."""
    if kind == "zero":
        return cr.ZeroPad2d(padding), torch.nn.ZeroPad2d(padding)
    if kind == "constant":
        return cr.ConstantPad2d(padding, -1.25), torch.nn.ConstantPad2d(padding, -1.25)
    if kind == "reflection":
        return cr.ReflectionPad2d(padding), torch.nn.ReflectionPad2d(padding)
    return cr.ReplicationPad2d(padding), torch.nn.ReplicationPad2d(padding)


def pads4(padding) -> tuple[int, int, int, int]:
    return (padding,) * 4 if isinstance(padding, int) else tuple(padding)


def terms(kind: str, padding) -> int:
    """The most gradients any input element sums: 1 for the constant pads (a copy); for
    reflection up to 3 per axis (itself and one mirror on each side); for replication an
    edge collects its whole border (1 + before + after per axis)."""
    left, right, top, bottom = (max(v, 0) for v in pads4(padding))
    if kind in ("zero", "constant"):
        return 1
    if kind == "reflection":
        return 9
    return (1 + left + right) * (1 + top + bottom)


# (padding, input shape): ints and 4-tuples, asymmetric, zero on some sides, negative
# (cropping) sides, batch 1, odd sizes, 3-D (C, H, W) inputs. Every case is legal for
# every kind (reflection's largest is size - 1: 3 on H=4, 4 on W=5).
CASES = [
    (0, (2, 3, 4, 5)),
    (1, (2, 3, 4, 5)),
    (3, (1, 2, 4, 5)),
    ((1, 2, 0, 3), (2, 3, 4, 5)),
    ((0, 0, 2, 1), (1, 1, 5, 3)),
    ((3, 0, 0, 0), (2, 2, 5, 4)),
    ((4, 4, 3, 3), (1, 2, 4, 5)),            # reflection: size - 1 on both axes
    ((-1, 2, 0, -2), (2, 3, 4, 5)),           # crop left and bottom
    ((2, -3, -1, 1), (1, 3, 4, 5)),
    ((-2, -1, -1, -2), (2, 2, 5, 6)),         # crop only
    ((1, 2, 1, 0), (3, 4, 5)),                # unbatched (C, H, W)
    ((-1, 3, 2, -1), (2, 5, 4)),
    (2, (3, 3, 3)),
]


def case_id(case) -> str:
    padding, shape = case
    return f"pad{padding}-x{'x'.join(map(str, shape))}".replace(" ", "")


def data(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradcheck(kind, case):
    padding, shape = case
    layer, _ = make(kind, padding)
    err = cr.gradcheck(layer, data(shape))
    assert err < 1e-7, f"{layer!r} on {shape}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(kind, case, dtype):
    padding, shape = case
    layer, ref = make(kind, padding)
    assert_torch_parity(layer, ref, data(shape, seed=1), dtype=dtype, terms=terms(kind, padding))


@pytest.mark.parametrize("kind", KINDS)
def test_int_padding_is_four_equal_sides_and_repr_is_torchs(kind):
    layer, ref = make(kind, 2)
    assert layer.padding == (2, 2, 2, 2)
    assert repr(layer) == repr(ref)
    layer, ref = make(kind, [1, -2, 0, 3])
    assert layer.padding == (1, -2, 0, 3) and repr(layer) == repr(ref)
    assert layer.state_dict() == {} and layer.parameters() == []


def test_constant_value_int_and_float_read_like_torch():
    assert repr(cr.ConstantPad2d(1, 2)) == repr(torch.nn.ConstantPad2d(1, 2))
    assert repr(cr.ConstantPad2d((1, 0, 2, 3), 0.5)) == \
        repr(torch.nn.ConstantPad2d((1, 0, 2, 3), 0.5))
    assert cr.ZeroPad2d(1).value == 0.0
    assert cr.ConstantPad2d(1, np.float32(0.5)).value == 0.5
    assert cr.ConstantPad2d(np.int64(2), 1.0).padding == (2, 2, 2, 2)


def test_output_size_formula_in_every_kind():
    x = data((2, 3, 6, 7))
    for kind in KINDS:
        for padding in [(1, 2, 3, 4), (-1, 2, 0, -3), (5, -2, -1, 5)]:
            layer, _ = make(kind, padding)
            left, right, top, bottom = padding
            assert layer.forward(x).shape == (2, 3, 6 + top + bottom, 7 + left + right)


# ----------------------------------------------------------------------------- exact values
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", [(2, 1, 3, 2), (3, 3, 2, 2), (-1, 2, 2, -1), (4, -3, -2, 3)],
                         ids=str)
def test_integer_data_matches_torch_bit_for_bit(kind, padding):
    # Integer values: every copy and every sum in forward and backward is exact, so the
    # result must equal torch's to the last bit (corners and crops included).
    rng = np.random.default_rng(3)
    x = rng.integers(-9, 10, (2, 2, 4, 5)).astype(np.float64)
    layer, ref = make(kind, padding)
    y = layer.forward(x)
    g = rng.integers(-9, 10, y.shape).astype(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(layer.backward(g), xt.grad.numpy())


def test_reflection_values_do_not_repeat_the_edge():
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    y = cr.ReflectionPad2d((2, 2, 0, 0)).forward(x)
    np.testing.assert_array_equal(y[0, 0, 0], [3, 2, 1, 2, 3, 2, 1])
    y = cr.ReplicationPad2d((2, 2, 0, 0)).forward(x)
    np.testing.assert_array_equal(y[0, 0, 0], [1, 1, 1, 2, 3, 3, 3])


def test_reflection_corner_gradient_reaches_its_pixel_through_both_axes():
    layer = cr.ReflectionPad2d(2)
    layer.forward(np.zeros((1, 1, 4, 4)))                   # output (1, 1, 8, 8)
    g = np.zeros((1, 1, 8, 8))
    g[0, 0, 0, 0] = 1.0     # top-left corner: row p = -2 -> 2, column p = -2 -> 2
    g[0, 0, 7, 6] = 10.0    # bottom-right block: row p = 5 -> 2*3 - 5 = 1, column p = 4 -> 2
    g[0, 0, 0, 3] = 100.0   # top border, inside the columns: row -> 2, column p = 1 -> 1
    dx = layer.backward(g)[0, 0]
    expected = np.zeros((4, 4))
    expected[2, 2], expected[1, 2], expected[2, 1] = 1.0, 10.0, 100.0
    np.testing.assert_array_equal(dx, expected)


def test_replication_corner_block_sums_onto_the_corner_pixel():
    left, right, top, bottom = 2, 1, 3, 1
    layer = cr.ReplicationPad2d((left, right, top, bottom))
    layer.forward(np.zeros((1, 1, 3, 4)))
    g = np.ones((1, 1, 3 + top + bottom, 4 + left + right))
    dx = layer.backward(g)[0, 0]
    # Each input pixel collects (1 + its row's border) * (1 + its column's border).
    rows = np.array([1 + top, 1, 1 + bottom])
    cols = np.array([1 + left, 1, 1, 1 + right])
    np.testing.assert_array_equal(dx, np.outer(rows, cols))
    assert dx[0, 0] == (1 + top) * (1 + left)


def test_single_pixel_replication_sums_everything():
    layer = cr.ReplicationPad2d((2, 3, 1, 4))
    y = layer.forward(np.full((2, 1, 1, 1), 7.0))
    assert y.shape == (2, 1, 6, 6) and np.all(y == 7.0)
    dx = layer.backward(np.ones(y.shape))
    np.testing.assert_array_equal(dx, np.full((2, 1, 1, 1), 36.0))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("size, before, after", [(5, 2, 3), (5, 4, 4), (4, -2, 3), (6, 3, -7),
                                                 (5, -3, -2), (1, 0, 0), (3, 2, -4)])
def test_fold_is_the_exact_adjoint_of_the_gather(mode, size, before, after):
    # <gather(x), g> == <x, fold(g)> for random x and g: the backward is the transpose.
    if mode == "reflect" and (before >= size or after >= size):
        pytest.skip("not a legal reflection")
    idx = _source_index(size, before, after, mode)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, size))
    g = rng.standard_normal((3, idx.size))
    np.testing.assert_allclose(np.sum(x[:, idx] * g), np.sum(x * _fold(g, -1, size, before, after,
                                                                       mode)), rtol=1e-13)
    g2 = rng.standard_normal((idx.size, 3))
    np.testing.assert_allclose(np.sum(x.T[idx] * g2), np.sum(x.T * _fold(g2, -2, size, before,
                                                                         after, mode)), rtol=1e-13)


def test_negative_padding_crops_and_the_cropped_elements_get_zero_gradient():
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    layer = cr.ZeroPad2d((-1, -2, 0, -1))
    y = layer.forward(x)
    np.testing.assert_array_equal(y[0, 0], x[0, 0, :3, 1:3])
    dx = layer.backward(np.ones_like(y))
    expected = np.zeros((4, 5))
    expected[:3, 1:3] = 1.0
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_crop_to_an_empty_axis_matches_torch(kind):
    # torch allows an output with no columns (the crop takes the whole width)...
    layer, ref = make(kind, (-3, -2, 1, 0))
    x = data((2, 1, 3, 5))
    y = layer.forward(x)
    assert y.shape == tuple(ref(torch.tensor(x)).shape) == (2, 1, 4, 0)
    assert layer.backward(np.zeros(y.shape)).shape == x.shape


@pytest.mark.parametrize("kind", ["reflection", "replication"])
def test_crop_to_nothing_on_both_axes_is_refused_as_torch_does(kind):
    # ...but reflection and replication refuse an output with neither rows nor columns.
    layer, ref = make(kind, (-3, -2, -2, -1))
    x = data((1, 1, 3, 5))
    with pytest.raises(RuntimeError):
        ref(torch.tensor(x))
    with pytest.raises(ValueError, match=r"crops more than.*\(1, 1, 3, 5\)"):
        layer.forward(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS)
def test_dtype_is_kept_and_integers_become_float32(kind, dtype):
    layer, _ = make(kind, (1, 0, 2, 1))
    y = layer.forward(np.ones((1, 2, 3, 3), dtype=dtype))
    assert y.dtype == dtype
    assert layer.backward(np.ones(y.shape, dtype=dtype)).dtype == dtype
    assert layer.forward(np.ones((1, 2, 3, 3), dtype=np.uint8)).dtype == np.float32


def test_constant_value_is_cast_to_the_input_dtype_as_torch_does():
    layer, ref = cr.ConstantPad2d(1, 0.1), torch.nn.ConstantPad2d(1, 0.1)
    x = np.zeros((1, 1, 2, 2), np.float32)
    np.testing.assert_array_equal(layer.forward(x), ref(torch.tensor(x)).numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_eval_keeps_no_cache_and_gradients_in_eval_allow_backward(kind):
    layer, _ = make(kind, 1)
    layer.eval()
    layer.forward(data((1, 1, 3, 3)))
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="backward called without a cached forward"):
        layer.backward(np.ones((1, 1, 5, 5)))
    layer.gradients_in_eval()
    layer.forward(data((1, 1, 3, 3)))
    assert layer.backward(np.ones((1, 1, 5, 5))).shape == (1, 1, 3, 3)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("padding", [1.5, True, (1, 2, 3), (1, 2), (1, 2, 3, 4, 5), "1",
                                     (1, 2, 3, 4.0), (1, 2, 3, False), None], ids=repr)
def test_bad_padding_is_a_type_error_naming_the_layer(kind, padding):
    cls = type(make(kind, 0)[0])
    args = (padding, 0.0) if kind == "constant" else (padding,)
    with pytest.raises(TypeError, match=rf"^{cls.__name__}\(padding=.*padding must be an int or "
                                        r"a tuple of four ints"):
        cls(*args)


@pytest.mark.parametrize("value, error", [("0", TypeError), (None, TypeError), (True, TypeError),
                                          (float("inf"), ValueError), (float("nan"), ValueError)])
def test_bad_constant_value(value, error):
    with pytest.raises(error, match="ConstantPad2d: value must be"):
        cr.ConstantPad2d(1, value)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(4, 5), (1, 2, 3, 4, 5), (5,)], ids=str)
def test_wrong_ndim_names_the_expected_and_the_given_shape(kind, shape):
    layer, _ = make(kind, 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\).*got shape " +
                       str(shape).replace("(", r"\(").replace(")", r"\)")):
        layer.forward(np.zeros(shape))


@pytest.mark.parametrize("padding", [(5, 0, 0, 0), (0, 5, 0, 0), (0, 0, 4, 1), (1, 1, 1, 7)],
                         ids=str)
def test_reflection_wider_than_the_input_is_refused_like_torch(padding):
    x = data((2, 3, 4, 5))
    with pytest.raises(RuntimeError, match="Padding size should be less"):
        torch.nn.ReflectionPad2d(padding)(torch.tensor(x))
    with pytest.raises(ValueError, match=r"ReflectionPad2d.*must be smaller than the input "
                                         r"(width 5|height 4).*\(2, 3, 4, 5\)"):
        cr.ReflectionPad2d(padding).forward(x)
    # replication has no such limit
    cr.ReplicationPad2d(padding).forward(x)


@pytest.mark.parametrize("kind", KINDS)
def test_crop_larger_than_the_input_is_refused(kind):
    layer, ref = make(kind, (-4, -2, 0, 0))
    x = data((1, 1, 3, 5))
    with pytest.raises(RuntimeError):
        ref(torch.tensor(x))
    with pytest.raises(ValueError, match=r"crops more than.*\(1, 1, 3, 5\)"):
        layer.forward(x)


def test_constant_pad_crops_before_padding_as_torch_does():
    # torch crops the negative side first: a crop of 6 on a width of 5 fails even though
    # the other side's padding of 1 would bring the output width back to 0...
    x = data((1, 1, 3, 5))
    with pytest.raises(RuntimeError):
        torch.nn.ZeroPad2d((-6, 1, 0, 0))(torch.tensor(x))
    with pytest.raises(ValueError, match="crops more than the input has"):
        cr.ZeroPad2d((-6, 1, 0, 0)).forward(x)
    # ...while reflection and replication pad first and crop the padded result.
    for kind in ("reflection", "replication"):
        layer, ref = make(kind, (-6, 1, 0, 0))
        assert layer.forward(x).shape == tuple(ref(torch.tensor(x)).shape) == (1, 1, 3, 0)


@pytest.mark.parametrize("kind", ["reflection", "replication"])
@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 0, 3, 4), (0, 3, 4)], ids=str)
def test_reflection_and_replication_need_non_empty_inputs(kind, shape):
    layer, ref = make(kind, 1)
    with pytest.raises(RuntimeError):
        ref(torch.zeros(shape))
    with pytest.raises(ValueError, match="non-empty"):
        layer.forward(np.zeros(shape))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_passes_as_in_torch(kind):
    layer, ref = make(kind, (1, 2, 0, 1))
    y = layer.forward(np.zeros((0, 2, 3, 4)))
    assert y.shape == tuple(ref(torch.zeros((0, 2, 3, 4))).shape)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_checks_the_gradient_shape(kind):
    layer, _ = make(kind, 1)
    layer.forward(np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"expected a gradient of shape \(1, 2, 5, 5\)"):
        layer.backward(np.zeros((1, 2, 3, 3)))


@pytest.mark.parametrize("kind", KINDS)
def test_in_a_network_gradcheck(kind):
    layer, _ = make(kind, (1, 2, 2, 0))
    model = cr.Sequential(cr.Conv2d(2, 3, 3, rng=0), layer, cr.Tanh(), cr.Conv2d(3, 2, 2, rng=1))
    err = cr.gradcheck(model, data((2, 2, 5, 5)))
    assert err < 1e-7, f"gradcheck relative error {err:.3g}"


def test_onnx_export_of_crops_matches_torch(tmp_path):
    """Reflection with a crop on the side opposite a padding: ONNX Runtime crops before it
    pads, torch after (the reflection reads columns the crop removes), so the export pads
    first and slices after."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    layer = cr.ReflectionPad2d((-3, 2, 3, -4))
    x = data((2, 3, 5, 5)).astype(np.float32)
    cr.export_onnx(layer, tmp_path / "pad.onnx", (3, 5, 5))
    session = ort.InferenceSession(str(tmp_path / "pad.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(["output"], {"input": x})[0]
    expected = torch.nn.ReflectionPad2d((-3, 2, 3, -4))(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("module, message", [
    (torch.nn.ZeroPad2d((1, 2)), r"torch\.nn\.ZeroPad2d\(padding=\(1, 2\)\) is not supported"),
    (torch.nn.ReflectionPad2d((1, 2, 3, 4, 5, 6)), r"torch\.nn\.ReflectionPad2d\(padding="),
    (torch.nn.ConstantPad2d(1, float("-inf")), r"torch\.nn\.ConstantPad2d\(value=-inf\)"),
])
def test_from_torch_refuses_what_chainrule_cannot_pad_exactly(module, message):
    # torch pads fewer (or more) axes for a 2- (or 6-) tuple; chainrule's value is finite.
    from chainrule.interop import UnsupportedModuleError, from_torch
    with pytest.raises(UnsupportedModuleError, match=r"^1: " + message):
        from_torch(torch.nn.Sequential(torch.nn.ReLU(), module))


@pytest.mark.parametrize("kind", KINDS)
def test_torch_round_trip_keeps_the_class_and_padding(kind):
    from chainrule.interop import from_torch, to_torch
    layer, ref = make(kind, (1, -2, 0, 3))
    back = from_torch(to_torch(layer))
    assert type(back) is type(layer) and repr(back) == repr(layer) == repr(ref)
    assert repr(from_torch(ref)) == repr(layer)
