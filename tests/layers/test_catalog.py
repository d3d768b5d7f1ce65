"""The catalog as a whole: every public layer class is known to each part of the library
that dispatches on layer types (checkpoint descriptions, torch conversion both ways,
ONNX export, explain), and every single-layer interop case runs through `explain` and
the inspect `Recorder`."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule import layers as L
from chainrule import serialize
from chainrule.inspect import Recorder, derivative_of
from chainrule.inspect.explain import _DERIVATIVES
from chainrule.interop import onnx as onnx_export
from tests.interop.cases import ALL_CASES, LAYER_CASES, inputs

# Classes that are not layers of their own: the base class and the containers, which
# each converter treats structurally.
STRUCTURAL = {"Layer", "Sequential", "Residual", "Graph"}
PUBLIC = [name for name in L.__all__ if name not in STRUCTURAL]


def public_class(name: str) -> type:
    return getattr(L, name)


def test_every_public_layer_is_exported_by_chainrule():
    for name in L.__all__:
        assert getattr(cr, name) is getattr(L, name), name
        assert name in cr.__all__, name


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_layer_can_be_described_for_a_checkpoint(name):
    assert name in serialize.LAYER_TYPES, f"{name} is missing from serialize._LEAVES"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_layer_has_an_explain_entry(name):
    cls = public_class(name)
    assert any(klass in _DERIVATIVES for klass in cls.__mro__), \
        f"{name} has no entry in chainrule.inspect.explain._DERIVATIVES"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_layer_has_an_onnx_converter(name):
    # A converter may still refuse an option ONNX has no exact operator for, with an
    # UnsupportedModuleError naming the layer (tests/interop/test_onnx.py).
    assert public_class(name) in onnx_export._CONVERTERS, f"{name} has no ONNX converter"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_layer_converts_to_torch(name):
    torch = pytest.importorskip("torch")
    from chainrule.interop.torch import _leaf_to_torch
    assert public_class(name) in _leaf_to_torch(torch), f"{name} has no to_torch converter"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_layer_has_an_interop_case(name):
    """The interop cases run each layer through to_torch, from_torch (the round trip
    must give the same class back), ONNX Runtime, explain and the recorder; the layers
    of several inputs or outputs are in the graph cases (MODEL_CASES)."""
    covered = {type(m) for _, build, _ in ALL_CASES for m in build().modules()}
    assert public_class(name) in covered, f"{name} has no case in tests/interop/cases.py"


SINGLE_LAYERS = [c for c in LAYER_CASES if not isinstance(c[1](), (cr.Sequential, cr.Residual))]


@pytest.mark.parametrize("name, build, shape", SINGLE_LAYERS, ids=[c[0] for c in SINGLE_LAYERS])
def test_explain_and_recorder_handle_every_layer_case(name, build, shape):
    layer = build().double()
    x = inputs(shape, 3, seed=0).astype(np.float64)
    formula = derivative_of(layer).formula
    assert "see its backward()" not in formula, f"{name}: explain has no formula for {layer!r}"
    if x.ndim != 3:  # explain reads a 3-D array as one (C, H, W) image, not a batch
        text = cr.inspect.explain(layer, x, np.zeros(1), loss_fn=_SumLoss())
        assert formula.split("; ")[0] in text

    recorder = Recorder().attach(layer)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    recorder.on_step()
    recorder.detach()
    # The bare layer is the recorder's one leaf, "model": its output and input gradient.
    stats = recorder.as_dict()["layer_stats"]["model"]
    assert stats["mean"] == [pytest.approx(float(np.mean(y)))], name
    assert stats["grad_input_norm"] == [pytest.approx(float(np.linalg.norm(dx)))], name


class _SumLoss(cr.MSELoss):
    """0.5 * ||y||^2 with a target of zeros shaped like y, for layers of any output."""

    def __call__(self, pred, target):
        return super().__call__(pred, np.zeros_like(pred))


@pytest.mark.parametrize("name, build, shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_every_layer_case_survives_a_checkpoint(name, build, shape, tmp_path):
    """save -> load rebuilds the same architecture (repr, state-dict keys, dtypes) with
    the same weights and buffers, so the loaded model computes the same outputs."""
    layer = build().double()
    x = inputs(shape, 2, seed=1).astype(np.float64)
    layer.forward(x)                             # running statistics move off their start
    layer.eval()
    path = cr.save(layer, tmp_path / "layer.safetensors")
    loaded = cr.load(path).eval()
    assert repr(loaded) == repr(layer)
    state, loaded_state = layer.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    for key in state:
        assert loaded_state[key].dtype == state[key].dtype, key
        np.testing.assert_array_equal(loaded_state[key], state[key], err_msg=key)
    np.testing.assert_array_equal(loaded.forward(x), layer.forward(x))
