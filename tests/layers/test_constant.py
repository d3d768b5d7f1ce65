"""ConstantArithmetic (from_onnx's constant operands): finite differences in float64,
parity with torch's operators in float64 and float32, broadcasting both ways, the
checkpoint and the ONNX export round trip, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.layers.constant import OPS, ConstantArithmetic
from tests.helpers import assert_gradcheck, assert_torch_parity, each_dtype

torch = pytest.importorskip("torch")

# (input shape without the batch, constant shape): per channel, a full map, a scalar,
# and a constant with more entries than the input on an axis (the input broadcasts).
SHAPES = {"per_channel": ((3, 4, 5), (3, 1, 1)), "full": ((3, 4, 5), (3, 4, 5)),
          "scalar": ((3, 4), ()), "input_broadcasts": ((3, 1), (1, 3, 4))}


def layer_for(op: str, shape: tuple, seed: int = 0) -> ConstantArithmetic:
    layer = ConstantArithmetic(op, shape, dtype=np.float64)
    rng = np.random.default_rng(seed)
    # away from 0: the divisions are smooth there
    layer.value[...] = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
    return layer


def away_from_zero(shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)


class TorchTwin(torch.nn.Module):
    """The same operation in torch, the constant a buffer."""

    def __init__(self, op: str, value: np.ndarray) -> None:
        super().__init__()
        self.op = op
        self.register_buffer("value", torch.tensor(value))

    def forward(self, x):
        c = self.value
        return {"add": lambda: x + c, "sub": lambda: x - c, "rsub": lambda: c - x,
                "mul": lambda: x * c, "div": lambda: x / c, "rdiv": lambda: c / x}[self.op]()


@pytest.mark.parametrize("shapes", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("op", list(OPS))
def test_gradients_match_finite_differences(op, shapes):
    x_shape, c_shape = shapes
    layer = layer_for(op, c_shape).train()
    assert_gradcheck(layer, away_from_zero((2, *x_shape), seed=1), 1e-8)


@each_dtype
@pytest.mark.parametrize("shapes", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("op", list(OPS))
def test_matches_torch(op, shapes, dtype):
    x_shape, c_shape = shapes
    layer = layer_for(op, c_shape).train()
    twin = TorchTwin(op, layer.value.copy())
    # one elementwise operation: each output is one rounded result (terms 1)
    assert_torch_parity(layer, twin, away_from_zero((2, *x_shape), seed=2), dtype=dtype,
                        copy_weights=False, terms=1)


def test_checkpoint_and_onnx_export_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime
    x = cr.Input((3, 4, 5))
    y = layer_for("rdiv", (3, 1, 1))(x, name="scale")
    y = layer_for("sub", (4, 5), seed=3)(cr.ReLU()(y), name="shift")
    model = cr.Graph(x, y).to(np.float32)
    batch = away_from_zero((2, 3, 4, 5), seed=4).astype(np.float32)

    loaded = cr.load(cr.save(model, tmp_path / "m.safetensors"))
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.forward(batch), model.forward(batch))

    cr.export_onnx(model, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    (got,) = session.run(None, {"input": batch})
    np.testing.assert_allclose(got, model.forward(batch), rtol=1e-6)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"ConstantArithmetic\('pow'\): op must be one of"):
        ConstantArithmetic("pow", (3,))
    layer = ConstantArithmetic("add", (3,))
    with pytest.raises(ValueError, match=r"input of shape \(2, 4\) does not broadcast with the "
                                         r"constant of shape \(3,\)"):
        layer.forward(np.zeros((2, 4), np.float32))
