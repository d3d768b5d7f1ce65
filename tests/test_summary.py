"""``model.summary(input_shape)`` and ``chainrule models --summary``: every figure checked
against torch (the same model through ``cr.interop.to_torch``, its own forward hooks and
``numel``) and against hand arithmetic; the model must come out untouched."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.models import MODELS
from chainrule.summary import MULT_ADDS, ModelSummary, summary

torch = pytest.importorskip("torch")


def default_input(builder) -> tuple[int, int, int]:
    """(C, H, W) of a zoo builder's default configuration, as `chainrule models` says."""
    d = {k: v.default for k, v in inspect.signature(builder).parameters.items()}
    return d["in_channels"], d["input_size"], d["input_size"]


def torch_reference(model: cr.Layer, input_shape, batch_size: int = 1) -> dict:
    """What torch says about the same model: the output shape of every named module, the
    bytes of every leaf module's output, its parameter and buffer counts, and the
    multiply-adds of its convolutions and linear layers computed from torch's module
    attributes and torch's tensors."""
    tm = cr.interop.to_torch(model).eval()
    shapes, leaf_bytes, mult_adds = {}, [0], [0]

    def hook(name, module, inputs, output):
        shapes[name] = tuple(output.shape)
        if not any(module.children()):
            leaf_bytes[0] += output.numel() * output.element_size()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv1d)):
            mult_adds[0] += (output.numel() * module.in_channels // module.groups
                             * math.prod(module.kernel_size))
        elif isinstance(module, torch.nn.ConvTranspose2d):
            mult_adds[0] += (inputs[0].numel() * module.out_channels // module.groups
                             * math.prod(module.kernel_size))
        elif isinstance(module, torch.nn.Linear):
            mult_adds[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(name, mod, i, o))
               for name, m in tm.named_modules()]
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    with torch.no_grad():
        tm(torch.zeros((batch_size, *input_shape), dtype=dtype))
    for h in handles:
        h.remove()
    return {
        "shapes": shapes, "forward_bytes": leaf_bytes[0], "mult_adds": mult_adds[0],
        "params": sum(p.numel() for p in tm.parameters()),
        "param_bytes": sum(p.numel() * p.element_size() for p in tm.parameters()),
        "buffers": sum(b.numel() for b in tm.buffers() if b.is_floating_point()),
        "buffer_bytes": sum(b.numel() * b.element_size() for b in tm.buffers()
                            if b.is_floating_point()),
    }


def check_against_torch(s: ModelSummary, model: cr.Layer, input_shape, batch_size: int = 1):
    ref = torch_reference(model, input_shape, batch_size)
    assert {r.name: r.output_shape for r in s.rows} == ref["shapes"]
    assert s.trainable_params == ref["params"] == model.num_parameters()
    assert s.non_trainable_params == ref["buffers"]
    assert s.total_params == ref["params"] + ref["buffers"]
    assert s.total_mult_adds == ref["mult_adds"] and s.unknown_mult_adds == ()
    assert s.forward_bytes == ref["forward_bytes"]
    assert s.params_bytes == ref["param_bytes"] + ref["buffer_bytes"]
    assert s.input_bytes == batch_size * math.prod(input_shape) * np.dtype(model.dtype).itemsize
    assert s.total_bytes == s.input_bytes + s.forward_bytes + s.params_bytes
    # The columns sum to the totals.
    assert sum(r.params for r in s.rows) == s.trainable_params
    assert sum(r.non_trainable for r in s.rows) == s.non_trainable_params
    assert sum(r.mult_adds for r in s.rows) == s.total_mult_adds


# ---------------------------------------------------------------------- the zoo against torch

@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_zoo_models_match_torch(name, batch_size):
    model = MODELS[name](seed=0)
    shape = default_input(MODELS[name])
    s = model.summary(shape, batch_size=batch_size)
    check_against_torch(s, model, shape, batch_size)
    assert s.input_shape == (batch_size, *shape) and s.output_shape == (batch_size, 10)


def test_lenet5_by_hand():
    s = cr.models.lenet5(seed=0).summary((1, 28, 28))
    assert s.total_params == s.trainable_params == 61_706 and s.non_trainable_params == 0
    # conv1 6x28x28 outputs of 1*5*5 products, conv2 16x10x10 of 6*5*5, then 400->120->84->10
    assert s.total_mult_adds == (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150
                                 + 400 * 120 + 120 * 84 + 84 * 10)
    assert s.total_mult_adds == 416_520
    # Leaf outputs: conv, relu (6x28x28), pool (6x14x14), conv, relu (16x10x10),
    # pool and flatten (400), linear and relu (120), linear and relu (84), linear (10).
    elements = 2 * 4704 + 1176 + 2 * 1600 + 2 * 400 + 2 * 120 + 2 * 84 + 10
    assert s.forward_bytes == 4 * elements == 60_008
    assert s.params_bytes == 4 * 61_706 and s.input_bytes == 4 * 784
    rows = {r.name: r for r in s.rows}
    assert rows["0"].output_shape == (1, 6, 28, 28) and rows["0"].params == 156
    assert rows["7"].type == "Linear" and rows["7"].mult_adds == 48_000
    assert rows[""].type == "Sequential" and rows[""].depth == 0 and not rows[""].is_leaf
    text = str(s)
    assert "Total params: 61,706" in text and "Total mult-adds: 416,520" in text
    assert "Params size: 0.24 MiB (246,824 bytes)" in text
    assert "  0: Conv2d" in text and "(1, 6, 28, 28)" in text


def test_conv_variants_by_hand():
    """Grouped transposed convolution, grouped convolution, Conv1d and a Linear layer on
    a 3-D input, with the counts written out."""
    model = cr.Sequential(
        cr.ConvTranspose2d(4, 6, 3, stride=2, groups=2),        # (1, 4, 5, 5) -> (1, 6, 11, 11)
        cr.Conv2d(6, 4, 3, padding=1, groups=2, bias=False),    # -> (1, 4, 11, 11)
        cr.Flatten(), cr.Linear(484, 5))
    s = model.summary((4, 5, 5))
    assert [r.mult_adds for r in s.rows[1:]] == [100 * 3 * 9, 484 * 3 * 9, 0, 5 * 484]
    assert s.total_mult_adds == 2700 + 13_068 + 2420
    check_against_torch(s, model, (4, 5, 5))

    model = cr.Sequential(cr.Conv1d(4, 8, 3, groups=2), cr.Linear(14, 2))
    s = model.summary((4, 16), batch_size=2)      # (2, 4, 16) -> (2, 8, 14) -> (2, 8, 2)
    assert [r.mult_adds for r in s.rows[1:]] == [2 * 8 * 14 * 2 * 3, 2 * 8 * 2 * 14]
    check_against_torch(s, model, (4, 16), batch_size=2)


def test_batch_size_scales_the_batch_figures_only():
    model = cr.models.cifar_cnn(seed=0)
    one, five = model.summary((3, 32, 32)), model.summary((3, 32, 32), batch_size=5)
    assert five.total_mult_adds == 5 * one.total_mult_adds
    assert five.forward_bytes == 5 * one.forward_bytes and five.input_bytes == 5 * one.input_bytes
    assert five.params_bytes == one.params_bytes and five.total_params == one.total_params
    assert [r.output_shape[1:] for r in five.rows] == [r.output_shape[1:] for r in one.rows]
    assert all(r.output_shape[0] == 5 for r in five.rows)


# ---------------------------------------------------------------------- structure

def test_nested_containers_are_rows_named_and_indented_like_torch():
    block = cr.Sequential(cr.Conv2d(4, 4, 3, padding=1), cr.ReLU())
    model = cr.Sequential(
        cr.Conv2d(3, 4, 1),
        cr.Sequential(cr.Residual(block), cr.Sequential(cr.Residual(cr.Identity()))),
        cr.Flatten(), cr.Linear(4 * 6 * 6, 3))
    s = model.summary((3, 6, 6))
    check_against_torch(s, model, (3, 6, 6))
    assert [(r.name, r.type, r.depth) for r in s.rows] == [
        ("", "Sequential", 0), ("0", "Conv2d", 1), ("1", "Sequential", 1),
        ("1.0", "Residual", 2), ("1.0.block", "Sequential", 3), ("1.0.block.0", "Conv2d", 4),
        ("1.0.block.1", "ReLU", 4), ("1.1", "Sequential", 2), ("1.1.0", "Residual", 3),
        ("1.1.0.block", "Identity", 4), ("2", "Flatten", 1), ("3", "Linear", 1)]
    lines = str(s).splitlines()
    for r in s.rows[1:]:
        assert any(line.startswith("  " * r.depth + f"{r.name}: {r.type} ") for line in lines), r
    # Containers own nothing; their rows show "--".
    assert [r.params for r in s.rows if not r.is_leaf] == [0] * 6
    assert s.rows[5].mult_adds == 4 * 36 * 4 * 9


def test_max_depth_folds_subtrees_into_the_row_shown():
    model = cr.models.resnet_mini(seed=0)
    full = model.summary((3, 32, 32))
    folded = model.summary((3, 32, 32), max_depth=1)
    assert folded.rows == full.rows                           # the data is the same
    text = str(folded)
    assert "3.block" not in text and "  3: Residual" in text
    row3 = next(line for line in text.splitlines() if line.startswith("  3: Residual"))
    subtree = [r for r in full.rows if r.name == "3" or r.name.startswith("3.")]
    assert f"{sum(r.params for r in subtree):,}" in row3.split()
    assert f"{sum(r.mult_adds for r in subtree):,}" in row3.split()
    root = str(model.summary((3, 32, 32), max_depth=0)).splitlines()[4]
    assert root.split() == ["Sequential", "(1,", "10)", f"{full.trainable_params:,}",
                            f"{full.non_trainable_params:,}", f"{full.total_mult_adds:,}"]


def test_batchnorm_running_statistics_are_non_trainable():
    model = cr.Sequential(cr.Conv2d(2, 5, 3, bias=False), cr.BatchNorm2d(5), cr.ReLU(),
                          cr.Flatten(), cr.BatchNorm1d(5 * 4 * 4))
    s = model.summary((2, 6, 6))
    bn, bn1 = s.rows[2], s.rows[5]
    assert (bn.params, bn.non_trainable, bn.mult_adds) == (10, 10, 0)
    assert (bn1.params, bn1.non_trainable) == (160, 160)
    assert s.trainable_params == 90 + 10 + 160 and s.non_trainable_params == 170
    assert s.total_params == 430
    # num_batches_tracked (int64) is state, not a parameter: neither counted nor sized.
    assert s.params_bytes == 4 * 430
    check_against_torch(s, model, (2, 6, 6))
    assert "Non-trainable params: 170" in str(s)


def test_float64_doubles_every_byte_figure_and_nothing_else():
    f32 = cr.models.resnet_mini(seed=0)
    f64 = f32.copy().double()
    a, b = f32.summary((3, 16, 16), batch_size=2), f64.summary((3, 16, 16), batch_size=2)
    assert a.dtype == np.float32 and b.dtype == np.float64
    for attr in ("input_bytes", "forward_bytes", "params_bytes", "total_bytes"):
        assert getattr(b, attr) == 2 * getattr(a, attr), attr
    for attr in ("total_params", "trainable_params", "non_trainable_params", "total_mult_adds"):
        assert getattr(b, attr) == getattr(a, attr), attr
    check_against_torch(b, f64, (3, 16, 16), batch_size=2)


# ---------------------------------------------------------------------- layers of one's own

class Scale(cr.Layer):
    """A user's layer with a learned per-channel scale: its cost is unknown to summary."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = cr.Parameter(np.ones((channels, 1, 1), np.float32))

    def forward(self, x):
        return x * self.weight.data


class Twice(cr.Layer):
    """A user's parameter-free layer: it counts 0 mult-adds."""

    def forward(self, x):
        return np.concatenate([x, x], axis=1)


class MyConv(cr.Conv2d):
    """A subclass of Conv2d counts as one."""


class SharedBranch(cr.Layer):
    """A user's container that calls its child twice."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = cr.Linear(4, 3)

    def forward(self, x):
        return self.branch(x) + self.branch(x)


def test_a_users_own_layers():
    model = cr.Sequential(MyConv(1, 2, 3), Scale(2), Twice())
    s = model.summary((1, 6, 6))
    conv, scale, twice = s.rows[1:]
    assert (conv.type, conv.mult_adds, conv.output_shape) == ("MyConv", 2 * 16 * 9, (1, 2, 4, 4))
    assert (scale.params, scale.mult_adds) == (2, None)
    assert (twice.params, twice.mult_adds, twice.output_shape) == (0, 0, (1, 4, 4, 4))
    assert s.unknown_mult_adds == ("1",) and s.total_mult_adds == 288
    assert s.trainable_params == 20 + 2 == sum(p.size for p in model.parameters())
    assert s.forward_bytes == 4 * (32 + 32 + 64)
    text = str(s)
    assert "Total mult-adds: 288 (without 1 layer(s) of unknown cost: '1')" in text
    scale_line = next(line for line in text.splitlines() if "1: Scale" in line)
    assert scale_line.split()[-1] == "?"
    # Folded into the root, the known part shows with the unknown mark.
    assert str(model.summary((1, 6, 6), max_depth=0)).splitlines()[4].split()[-1] == "288+?"


def test_a_users_layer_taught_to_the_table(monkeypatch):
    monkeypatch.setitem(MULT_ADDS, Scale, lambda layer, x_shape, y_shape: math.prod(y_shape))
    s = cr.Sequential(Scale(3)).summary((3, 4, 4), batch_size=2)
    assert s.rows[1].mult_adds == 2 * 3 * 16 and s.unknown_mult_adds == ()


def test_a_layer_called_twice_counts_both_calls():
    s = SharedBranch().summary((4,), batch_size=2)
    root, branch = s.rows
    assert (branch.name, branch.calls, branch.output_shape) == ("branch", 2, (2, 3))
    assert branch.mult_adds == 2 * (2 * 3 * 4) and s.forward_bytes == 2 * (2 * 3 * 4)
    assert root.output_shape == (2, 3) and "(2, 3) x2" in str(s)


def test_a_bare_leaf_layer_is_the_only_row():
    s = cr.Linear(5, 7).summary(5, batch_size=4)
    (row,) = s.rows
    assert (row.name, row.depth, row.is_leaf, row.mult_adds) == ("", 0, True, 4 * 7 * 5)
    assert s.forward_bytes == 4 * 7 * 4 and s.trainable_params == 42   # (4, 7) float32


# ---------------------------------------------------------------------- the model is untouched

def test_the_model_is_not_changed():
    model = cr.models.cifar_cnn(input_size=8, seed=3)      # BatchNorm and Dropout
    model[1].eval().gradients_in_eval()                    # a mix of modes
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.forward(x)                                       # caches for a backward
    twin = model.copy()
    modes = [(m.training, m._keep_cache_in_eval) for m in model.modules()]
    caches = [m._cache for m in model.modules()]
    state = model.state_dict()

    s = model.summary((3, 8, 8), batch_size=4)
    assert isinstance(s, ModelSummary)
    assert [(m.training, m._keep_cache_in_eval) for m in model.modules()] == modes
    assert all(m._cache is c for m, c in zip(model.modules(), caches))
    after = model.state_dict()
    assert all(np.array_equal(after[k], v) for k, v in state.items())
    assert not any(m.__dict__.get("forward") for m in model.modules())   # no probe left
    # The same backward, then the same next training step (dropout masks, BN statistics).
    g = rng.standard_normal((2, 10)).astype(np.float32)
    np.testing.assert_array_equal(model.backward(g), twin.backward(g))
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    np.testing.assert_array_equal(model.forward(x), twin.forward(x))
    after, again = model.state_dict(), twin.state_dict()
    assert all(np.array_equal(after[k], again[k]) for k in after)


def test_a_model_watched_by_the_inspector():
    model = cr.models.lenet5(seed=0)
    recorder = cr.inspect.Recorder().attach(model)
    records = repr(recorder.records)
    s = model.summary((1, 28, 28))
    assert s.total_params == 61_706 and repr(recorder.records) == records
    recorder.detach()
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_summary_returns_the_table_and_prints_nothing(capsys):
    s = cr.models.lenet5(seed=0).summary((1, 28, 28))
    assert capsys.readouterr().out == ""
    assert repr(s) == str(s) and str(s).startswith("Sequential on input (1, 1, 28, 28) float32")
    assert summary(cr.models.lenet5(seed=0), (1, 28, 28)).rows == s.rows


# ---------------------------------------------------------------------- errors

@pytest.mark.parametrize("model, shape, where, refused", [
    (cr.models.lenet5(), (3, 28, 28), "layer '0' (Conv2d(1, 6,", (1, 3, 28, 28)),
    (cr.models.lenet5(), (1, 20, 20), "layer '7' (Linear(in_features=400", (1, 144)),
    (cr.Sequential(cr.Sequential(cr.ReLU(), cr.Residual(cr.Conv2d(3, 4, 3)))), (3, 8, 8),
     "layer '0.1' (Residual)", (1, 3, 8, 8)),
    (cr.Linear(4, 2), (5,), "the model (Linear(in_features=4", (1, 5)),
], ids=["channels", "features", "residual", "bare-layer"])
def test_a_shape_the_model_refuses_names_the_layer(model, shape, where, refused):
    with pytest.raises(ValueError) as info:
        model.summary(shape)
    message = str(info.value)
    assert message.startswith(f"summary: the forward pass of a zero batch of shape {(1, *shape)}")
    assert where in message and f"on its input of shape {refused}" in message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("kwargs, error, text", [
    ({"input_shape": ()}, ValueError, "input_shape must be the shape of one sample"),
    ({"input_shape": (3, 0, 4)}, ValueError, "got (3, 0, 4)"),
    ({"input_shape": (3, 2.5)}, ValueError, "positive ints"),
    ({"input_shape": "abc"}, ValueError, "input_shape"),
    ({"input_shape": (True, 3)}, ValueError, "input_shape"),
    ({"input_shape": (3, 4), "batch_size": 0}, ValueError,
     "batch_size must be a positive int, got 0"),
    ({"input_shape": (3, 4), "batch_size": 1.0}, TypeError, "batch_size must be a positive int"),
    ({"input_shape": (3, 4), "max_depth": -1}, ValueError, "max_depth must be None or an int >= 0"),
    ({"input_shape": (3, 4), "max_depth": "1"}, TypeError, "max_depth"),
])
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match="^summary: ") as info:
        cr.Linear(4, 2).summary(**kwargs)
    assert text in str(info.value)


def test_summary_of_something_not_a_layer():
    with pytest.raises(TypeError, match="summary: model must be a chainrule Layer, got str"):
        summary("lenet5", (1, 28, 28))


# ---------------------------------------------------------------------- the command line

def test_models_command_prints_every_summary(capsys):
    assert main(["models", "--summary"]) == 0
    out = capsys.readouterr().out
    for name, builder in MODELS.items():
        table = str(builder(seed=0).summary(default_input(builder)))
        assert f"\n{name} " in "\n" + out and table in out
    assert "Total params: 61,706" in out
    assert main(["models"]) == 0
    assert "Mult-adds" not in capsys.readouterr().out
