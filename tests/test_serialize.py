"""serialize: describe/build round trips for every layer type, and refusals of bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import chainrule as cr
from chainrule.serialize import LAYER_TYPES, build, describe

INPUT_SHAPE = (4, 3, 8, 8)


def merge_graph() -> cr.Graph:
    """A Graph of every merge and shape layer, with a fan-out and a shared layer;
    (N, 8, 8, 8) -> (N, 8, 8, 8)."""
    x = cr.Input((8, 8, 8), name="maps")
    a, b = cr.Split([3, 5], dim=1)(x, name="split")                  # (N, 3|5, 8, 8)
    c1, c2 = cr.Chunk(2, dim=1)(b)                                   # (N, 3|2, 8, 8)
    s = cr.Add()([a, c1])                                            # a fans out
    gate = cr.Mean((2, 3), keepdim=True)(s)                          # (N, 3, 1, 1)
    m = cr.Multiply()([s, gate])
    t = cr.Permute((0, 1, 3, 2))(m)
    r = cr.Reshape((3, 8, 8))(cr.Reshape((3, 64))(t))
    swap = cr.Permute((0, 1, 3, 2))                                  # used twice: shared
    y = cr.Concat(1)([swap(r), c2, swap(a)])                         # (N, 8, 8, 8)
    return cr.Graph(x, y)


def every_layer_model(dtype=np.float32, seed: int = 0) -> cr.Sequential:
    """A model holding every layer type and the unusual options; input (N, 3, 8, 8)."""
    model = cr.Sequential(
        cr.Conv2d(3, 8, 3, padding="same", bias=False),                    # (N, 8, 8, 8)
        cr.Sequential(                                                     # the catalog's layers
            cr.GroupNorm(2, 8), cr.ReLU6(),
            cr.ReflectionPad2d((1, 0, 2, 1)),                              # (N, 8, 11, 9)
            cr.ReplicationPad2d(1),                                        # (N, 8, 13, 11)
            cr.ZeroPad2d((0, -1, -2, 0)),                                  # (N, 8, 11, 10)
            cr.ConstantPad2d(1, 0.5),                                      # (N, 8, 13, 12)
            cr.MaxPool2d(3, stride=2, ceil_mode=True),                     # (N, 8, 6, 6)
            cr.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),  # (N, 4, 12, 12)
            cr.InstanceNorm2d(4, affine=True, track_running_stats=True),
            cr.GELU(approximate="tanh"),
            cr.PixelUnshuffle(2), cr.ChannelShuffle(4), cr.PixelShuffle(2),  # (N, 4, 12, 12)
            cr.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, divisor_override=4),  # (N, 4, 7, 7)
            cr.UpsamplingBilinear2d(size=(8, 8)),                          # (N, 4, 8, 8)
            cr.Upsample(scale_factor=0.5),                                 # (N, 4, 4, 4)
            cr.UpsamplingNearest2d(scale_factor=2),                        # (N, 4, 8, 8)
            cr.LocalResponseNorm(2), cr.Dropout2d(0.1), cr.Mish(),
            cr.Flatten(2),                                                 # (N, 4, 64)
            cr.Conv1d(4, 8, 3, padding=1), cr.MaxPool1d(2), cr.AvgPool1d(2),  # (N, 8, 16)
            cr.Unflatten(2, (4, 4)),                                       # (N, 8, 4, 4)
            cr.Upsample(scale_factor=2, mode="bilinear"),                  # (N, 8, 8, 8)
            merge_graph(),                                                 # (N, 8, 8, 8)
        ),
        cr.BatchNorm2d(8, momentum=None),
        cr.LeakyReLU(0.2),
        cr.Conv2d(8, 8, 3, padding=(1, 2), dilation=(1, 2), groups=2),      # (N, 8, 8, 8)
        cr.Residual(
            cr.Sequential(cr.Conv2d(8, 16, 3, stride=2, padding=1),
                          cr.BatchNorm2d(16, eps=1e-3, momentum=0.2), cr.ReLU(),
                          cr.Conv2d(16, 16, 3, padding="valid"), cr.Tanh(),
                          cr.Conv2d(16, 16, 3, padding=1)),                # (N, 16, 2, 2)
            shortcut=cr.Sequential(cr.AvgPool2d(2), cr.Conv2d(8, 16, 1, stride=2, bias=False),
                                   cr.BatchNorm2d(16, affine=False),
                                   cr.SyncBatchNorm(16, momentum=0.3))),   # (N, 16, 2, 2)
        cr.Residual(cr.Sequential(cr.Sigmoid(), cr.Conv2d(16, 16, 1))),    # identity shortcut
        cr.MaxPool2d(2, stride=1, padding=1, dilation=2),                  # (N, 16, 2, 2)
        cr.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),     # (N, 16, 2, 2)
        cr.AdaptiveMaxPool2d((3, 2)),                                      # (N, 16, 3, 2)
        cr.AdaptiveAvgPool2d((2, 1)),                                      # (N, 16, 2, 1)
        cr.Flatten(),                                                      # (N, 32)
        cr.Dropout(0.25),
        cr.Linear(32, 12),
        cr.BatchNorm1d(12, affine=False, track_running_stats=False),
        cr.ReLU(),
        cr.Sequential(                                                     # (N, 12) activations
            cr.LayerNorm(12), cr.ELU(0.5), cr.SELU(), cr.CELU(1.5), cr.SiLU(), cr.Hardswish(),
            cr.Hardsigmoid(), cr.Hardtanh(-2.0, 2.0), cr.Softplus(2.0, 5.0), cr.PReLU(12),
            cr.Identity(), cr.ConstantArithmetic("sub", (12,)), cr.Softmax(dim=1),
            cr.LogSoftmax(dim=1)),
        cr.Linear(12, 5, bias=False),
    )
    return model.reset_parameters(seed).to(dtype)


def train_a_little(model: cr.Layer, steps: int = 2, seed: int = 1) -> None:
    """Forward/backward/SGD steps, so weights and running statistics are not the defaults."""
    rng = np.random.default_rng(seed)
    opt = cr.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        out = model.forward(rng.standard_normal(INPUT_SHAPE))
        model.backward(rng.standard_normal(out.shape).astype(out.dtype))
        opt.step()


def test_every_layer_type_is_in_the_test_model():
    used = {type(m).__name__ for m in every_layer_model().modules()}
    assert set(LAYER_TYPES) == used
    assert set(LAYER_TYPES) == set(cr.layers.__all__) - {"Layer"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_the_same_model(dtype):
    model = every_layer_model(dtype)
    train_a_little(model)
    desc = describe(model)
    assert json.loads(json.dumps(desc)) == desc  # JSON types only: no tuples, no NumPy

    rebuilt = build(json.loads(json.dumps(desc)))
    assert describe(rebuilt) == desc
    assert repr(rebuilt) == repr(model)
    assert rebuilt.training
    state = model.state_dict()
    rebuilt.load_state_dict(state)
    for key, value in rebuilt.state_dict().items():
        assert value.dtype == state[key].dtype and np.array_equal(value, state[key]), key

    x = np.random.default_rng(2).standard_normal(INPUT_SHAPE)
    out = model.eval().forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(rebuilt.eval().forward(x), out)


def test_describe_records_constructor_arguments():
    desc = describe(every_layer_model(np.float64))
    assert desc["type"] == "Sequential" and len(desc["layers"]) == 18
    assert desc["layers"][0] == {"type": "Conv2d", "args": {
        "in_channels": 3, "out_channels": 8, "kernel_size": [3, 3], "stride": [1, 1],
        "padding": "same", "dilation": [1, 1], "groups": 1, "bias": False, "dtype": "float64"}}
    catalog = desc["layers"][1]["layers"]
    assert catalog[2] == {"type": "ReflectionPad2d", "args": {"padding": [1, 0, 2, 1]}}
    assert catalog[6]["args"]["ceil_mode"] is True
    assert catalog[7]["args"]["output_padding"] == [1, 1]
    assert catalog[13]["args"]["divisor_override"] == 4
    assert desc["layers"][2]["args"] == {"num_features": 8, "eps": 1e-5, "momentum": None,
                                         "affine": True, "track_running_stats": True,
                                         "dtype": "float64"}
    assert desc["layers"][4]["args"]["padding"] == [1, 2]
    assert desc["layers"][4]["args"]["groups"] == 2
    assert desc["layers"][5]["shortcut"]["layers"][2]["args"]["affine"] is False
    assert desc["layers"][6]["shortcut"] is None
    assert desc["layers"][8]["args"]["count_include_pad"] is False
    assert desc["layers"][12] == {"type": "Dropout", "args": {"p": 0.25}}
    assert desc["layers"][14]["args"] == {"num_features": 12, "eps": 1e-5, "momentum": 0.1,
                                          "affine": False, "track_running_stats": False}


def test_user_layer_type_is_refused_by_name():
    class MyReLU(cr.ReLU):
        pass

    model = cr.Sequential(cr.Linear(2, 2), cr.Residual(cr.Sequential(MyReLU())))
    with pytest.raises(TypeError, match=r"model\.1\.block\.0 .*MyReLU"):
        describe(model)
    with pytest.raises(TypeError, match="Layer"):
        describe(cr.Layer())


def _valid() -> dict:
    return describe(cr.Sequential(cr.Conv2d(1, 2, 3), cr.ReLU(), cr.Residual(cr.Sequential(
        cr.Linear(4, 4)))))


def _set(desc: dict, path: list, value) -> dict:
    desc = copy.deepcopy(desc)
    target = desc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return desc


@pytest.mark.parametrize("path, value, message", [
    (["layers", 1, "type"], "os.system", r"model\.1: unknown layer type 'os.system'"),
    (["layers", 1, "type"], "Layer", r"model\.1: unknown layer type 'Layer'"),
    (["layers", 1], ["ReLU"], r"model\.1: expected a dict"),
    (["layers", 1, "extra"], 1, r"model\.1 \(ReLU\): unexpected key"),
    (["layers", 0, "args", "kernel_size"], "3", r"model\.0 \(Conv2d\): argument 'kernel_size'"),
    (["layers", 0, "args", "bias"], "false", r"model\.0 \(Conv2d\): argument 'bias'"),
    (["layers", 0, "args", "dtype"], "object", r"model\.0 \(Conv2d\): argument 'dtype'"),
    (["layers", 0, "args", "padding"], "full", r"model\.0 \(Conv2d\): argument 'padding'"),
    (["layers", 0, "args", "rng"], 0, r"model\.0 \(Conv2d\): unknown argument 'rng'"),
    (["layers", 0, "args", "groups"], 2, r"model\.0 \(Conv2d\): .*groups must divide"),
    (["layers", 0, "args", "out_channels"], 0, r"model\.0 \(Conv2d\): .*out_channels"),
    (["layers", 0, "args"], {"in_channels": 1}, r"model\.0 \(Conv2d\): .*missing"),
    (["layers", 2, "block", "layers", 0, "args", "in_features"], 4.0,
     r"model\.2\.block\.0 \(Linear\): argument 'in_features'"),
    (["layers", 2, "block"], None, r"model\.2\.block: expected a dict"),
    (["layers"], {"0": {"type": "ReLU"}}, r"model \(Sequential\): 'layers' must be a list"),
    (["args"], {"x": 1}, r"model \(Sequential\): takes no args"),
])
def test_bad_descriptions_raise_value_error_naming_the_entry(path, value, message):
    with pytest.raises(ValueError, match=message):
        build(_set(_valid(), path, value))


def test_build_accepts_handwritten_descriptions_and_refuses_deep_nesting():
    model = build({"type": "Sequential", "layers": [
        {"type": "Linear", "args": {"in_features": 3, "out_features": 2}}, {"type": "ReLU"}]})
    assert model.forward(np.ones((1, 3))).shape == (1, 2)
    deep: dict = {"type": "ReLU"}
    for _ in range(100):
        deep = {"type": "Sequential", "layers": [deep]}
    with pytest.raises(ValueError, match="nested deeper"):
        build(deep)
