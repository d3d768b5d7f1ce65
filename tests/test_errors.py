"""The bad-input list: each mistake raises the right exception with a message that names
the layer, what was expected and what was got."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import chainrule as cr


def zeros(*shape) -> np.ndarray:
    return np.zeros(shape, np.float32)


def ramp(*shape) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


# (id, action, exception, substrings that must all appear in the message)
CASES: list[tuple[str, Callable[[], object], type, list[str]]] = [
    # ---- wrong rank
    ("conv_rank", lambda: cr.Conv2d(3, 4, 3).forward(zeros(3, 8, 8)),
     ValueError, ["Conv2d", "(N, C, H, W)", "(3, 8, 8)"]),
    ("conv_rank_5d", lambda: cr.Conv2d(3, 4, 3).forward(zeros(1, 1, 3, 8, 8)),
     ValueError, ["Conv2d", "4-D", "(1, 1, 3, 8, 8)"]),
    ("maxpool_rank", lambda: cr.MaxPool2d(2).forward(zeros(4, 4)),
     ValueError, ["MaxPool2d", "(N, C, H, W)", "(4, 4)"]),
    ("avgpool_rank", lambda: cr.AvgPool2d(2).forward(zeros(4)),
     ValueError, ["AvgPool2d", "(N, C, H, W)", "(4,)"]),
    ("adaptive_rank", lambda: cr.AdaptiveAvgPool2d(1).forward(zeros(2, 4)),
     ValueError, ["AdaptiveAvgPool2d", "(N, C, H, W)", "(2, 4)"]),
    ("bn2d_rank", lambda: cr.BatchNorm2d(3).forward(zeros(2, 3)),
     ValueError, ["BatchNorm2d", "(N, C, H, W)", "(2, 3)"]),
    ("bn1d_rank", lambda: cr.BatchNorm1d(3).forward(zeros(2, 3, 4, 4)),
     ValueError, ["BatchNorm1d", "(N, C) or (N, C, L)", "(2, 3, 4, 4)"]),
    # ---- channel / feature count
    ("conv_channels", lambda: cr.Conv2d(3, 4, 3).forward(zeros(2, 4, 8, 8)),
     ValueError, ["Conv2d", "3 input channels", "(2, 4, 8, 8)"]),
    ("bn2d_channels", lambda: cr.BatchNorm2d(3).forward(zeros(2, 4, 5, 5)),
     ValueError, ["BatchNorm2d", "3 channels", "(2, 4, 5, 5)"]),
    ("bn1d_channels", lambda: cr.BatchNorm1d(6).forward(zeros(2, 5)),
     ValueError, ["BatchNorm1d", "6 channels", "(2, 5)"]),
    ("linear_features", lambda: cr.Linear(5, 2).forward(zeros(2, 4)),
     ValueError, ["Linear", "in_features=5", "(N, *, 5)", "(2, 4)"]),
    ("linear_after_flatten", lambda: cr.Sequential(cr.Flatten(), cr.Linear(400, 10)).forward(
        zeros(1, 16, 4, 4)), ValueError, ["Linear", "(N, *, 400)", "(1, 256)"]),
    # ---- the window does not fit
    ("conv_kernel_too_large", lambda: cr.Conv2d(1, 1, 5).forward(zeros(1, 1, 3, 3)),
     ValueError, ["Conv2d", "kernel", "(5, 5)", "larger than the padded input", "(3, 3)"]),
    ("conv_kernel_too_large_padded",
     lambda: cr.Conv2d(1, 1, 7, padding=1).forward(zeros(1, 1, 4, 4)),
     ValueError, ["Conv2d", "(7, 7)", "(6, 6)", "(1, 1, 4, 4)"]),
    ("conv_dilated_too_large", lambda: cr.Conv2d(1, 1, 3, dilation=3).forward(zeros(1, 1, 6, 6)),
     ValueError, ["Conv2d", "dilation", "(3, 3)", "(6, 6)"]),
    ("maxpool_window_too_large", lambda: cr.MaxPool2d(4).forward(zeros(1, 1, 3, 3)),
     ValueError, ["MaxPool2d", "(4, 4)", "does not fit", "(3, 3)"]),
    ("avgpool_window_too_large", lambda: cr.AvgPool2d((2, 5)).forward(zeros(1, 1, 3, 3)),
     ValueError, ["AvgPool2d", "(2, 5)", "does not fit", "(1, 1, 3, 3)"]),
    # ---- invalid hyper-parameters
    ("conv_stride_0", lambda: cr.Conv2d(1, 1, 3, stride=0),
     ValueError, ["Conv2d", "stride", ">= 1", "got 0"]),
    ("conv_negative_padding", lambda: cr.Conv2d(1, 1, 3, padding=-1),
     ValueError, ["Conv2d", "padding", ">= 0", "got -1"]),
    ("conv_negative_padding_pair", lambda: cr.Conv2d(1, 1, 3, padding=(1, -2)),
     ValueError, ["Conv2d", "padding", ">= 0", "got (1, -2)"]),
    ("conv_groups", lambda: cr.Conv2d(4, 6, 3, groups=4),
     ValueError, ["Conv2d", "groups", "divide", "groups=4", "4 -> 6"]),
    ("conv_groups_0", lambda: cr.Conv2d(4, 4, 3, groups=0),
     ValueError, ["Conv2d", "groups", ">= 1", "got 0"]),
    ("conv_kernel_0", lambda: cr.Conv2d(1, 1, 0),
     ValueError, ["Conv2d", "kernel_size", ">= 1", "got 0"]),
    ("conv_padding_foo", lambda: cr.Conv2d(1, 1, 3, padding="foo"),
     ValueError, ["Conv2d", "padding", "'same'", "'valid'", "got 'foo'"]),
    ("conv_same_stride_2", lambda: cr.Conv2d(1, 1, 3, padding="same", stride=2),
     ValueError, ["Conv2d", "same", "stride 1", "stride=2"]),
    ("conv_dilation_0", lambda: cr.Conv2d(1, 1, 3, dilation=0),
     ValueError, ["Conv2d", "dilation", ">= 1", "got 0"]),
    ("conv_in_channels_0", lambda: cr.Conv2d(0, 1, 3),
     ValueError, ["Conv2d", "in_channels", ">= 1", "got 0"]),
    ("conv_kernel_float", lambda: cr.Conv2d(1, 1, 2.5),
     TypeError, ["Conv2d", "kernel_size", "int", "got 2.5"]),
    ("conv_kernel_triple", lambda: cr.Conv2d(1, 1, (3, 3, 3)),
     TypeError, ["Conv2d", "kernel_size", "pair", "got (3, 3, 3)"]),
    ("conv_dtype_int", lambda: cr.Conv2d(1, 1, 3, dtype=np.int32),
     TypeError, ["Conv2d", "float32 or float64", "got int32"]),
    ("linear_out_0", lambda: cr.Linear(3, 0),
     ValueError, ["Linear", "out_features", ">= 1", "got 0"]),
    ("linear_in_float", lambda: cr.Linear(3.0, 2),
     TypeError, ["Linear", "in_features", "int", "got 3.0"]),
    ("maxpool_stride_0", lambda: cr.MaxPool2d(2, stride=0),
     ValueError, ["MaxPool2d", "stride", ">= 1", "got 0"]),
    ("maxpool_kernel_0", lambda: cr.MaxPool2d(0),
     ValueError, ["MaxPool2d", "kernel_size", ">= 1", "got 0"]),
    ("maxpool_padding_too_large", lambda: cr.MaxPool2d(2, padding=2),
     ValueError, ["MaxPool2d", "padding", "half", "padding=2", "kernel_size=2"]),
    ("avgpool_negative_padding", lambda: cr.AvgPool2d(3, padding=-1),
     ValueError, ["AvgPool2d", "padding", ">= 0", "got -1"]),
    ("adaptive_output_0", lambda: cr.AdaptiveAvgPool2d(0),
     ValueError, ["AdaptiveAvgPool2d", "output_size", ">= 1", "got 0"]),
    ("dropout_p_1.5", lambda: cr.Dropout(1.5),
     ValueError, ["Dropout", "p", "[0, 1]", "got 1.5"]),
    ("dropout_p_negative", lambda: cr.Dropout(-0.1),
     ValueError, ["Dropout", "[0, 1]", "got -0.1"]),
    ("dropout_p_string", lambda: cr.Dropout("0.5"),
     ValueError, ["Dropout", "[0, 1]", "got '0.5'"]),
    ("bn_eps_0", lambda: cr.BatchNorm2d(4, eps=0),
     ValueError, ["BatchNorm2d", "eps", "> 0", "got 0"]),
    ("bn_eps_negative", lambda: cr.BatchNorm1d(4, eps=-1e-5),
     ValueError, ["BatchNorm1d", "eps", "> 0", "got -1e-05"]),
    ("bn_momentum", lambda: cr.BatchNorm2d(4, momentum=1.5),
     ValueError, ["BatchNorm2d", "momentum", "[0, 1]", "got 1.5"]),
    ("bn_features_0", lambda: cr.BatchNorm2d(0),
     ValueError, ["BatchNorm2d", "num_features", ">= 1", "got 0"]),
    ("bn_single_value_per_channel", lambda: cr.BatchNorm1d(3).forward(zeros(1, 3)),
     ValueError, ["BatchNorm1d", "more than 1 value per channel", "(1, 3)"]),
    # ---- inputs that are not numbers
    ("string_input", lambda: cr.ReLU().forward(np.array(["a", "b"])),
     TypeError, ["ReLU", "numeric", "<U1"]),
    # ---- labels
    ("labels_too_large", lambda: cr.CrossEntropyLoss()(zeros(2, 3), np.array([0, 3])),
     ValueError, ["CrossEntropyLoss", "[0, 3)", "[0, 3]"]),
    ("labels_negative", lambda: cr.CrossEntropyLoss()(zeros(2, 3), np.array([-2, 1])),
     ValueError, ["CrossEntropyLoss", "[0, 3)", "[-2, 1]"]),
    ("labels_shape", lambda: cr.CrossEntropyLoss()(zeros(2, 3), np.array([[0, 1]])),
     ValueError, ["CrossEntropyLoss", "(2,)", "(1, 2)"]),
    ("labels_fractional", lambda: cr.CrossEntropyLoss()(zeros(2, 3), np.array([0.5, 1.0])),
     TypeError, ["CrossEntropyLoss", "integer", "got dtype float64"]),
    # ---- losses
    ("loss_backward_first", lambda: cr.MSELoss().backward(),
     RuntimeError, ["MSELoss", "backward", "before"]),
    ("loss_reduction", lambda: cr.CrossEntropyLoss(reduction="average"),
     ValueError, ["CrossEntropyLoss", "reduction", "'mean', 'sum' or 'none'", "got 'average'"]),
    ("mse_shape", lambda: cr.MSELoss()(zeros(3, 2), zeros(3)),
     ValueError, ["MSELoss", "(3, 2)", "(3,)"]),
    # ---- containers
    ("sequential_not_a_layer", lambda: cr.Sequential(cr.ReLU(), np.tanh),
     TypeError, ["Sequential", "argument 1", "Layer", "got ufunc"]),
    ("residual_shapes", lambda: cr.Residual(cr.Conv2d(2, 3, 1)).forward(zeros(1, 2, 4, 4)),
     ValueError, ["Residual", "(1, 3, 4, 4)", "(1, 2, 4, 4)"]),
]


@pytest.mark.parametrize("name, action, error, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(name, action, error, needles):
    with pytest.raises(error) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    missing = [n for n in needles if n not in message]
    assert not missing, f"{missing} not in message: {message}"


# ----------------------------------------------------------------------------- backward
# (layer, a valid input): one of every layer type
LAYERS = [
    (lambda: cr.Conv2d(2, 3, 3), ramp(2, 2, 5, 5)),
    (lambda: cr.Linear(4, 3), ramp(2, 4)),
    (lambda: cr.Flatten(), ramp(2, 3, 2)),
    (lambda: cr.MaxPool2d(2), ramp(1, 2, 4, 4)),
    (lambda: cr.AvgPool2d(2), ramp(1, 2, 4, 4)),
    (lambda: cr.AdaptiveAvgPool2d(1), ramp(1, 2, 4, 4)),
    (lambda: cr.AdaptiveAvgPool2d(3), ramp(1, 2, 5, 5)),
    (lambda: cr.ReLU(), ramp(2, 3)),
    (lambda: cr.LeakyReLU(0.1), ramp(2, 3)),
    (lambda: cr.Sigmoid(), ramp(2, 3)),
    (lambda: cr.Tanh(), ramp(2, 3)),
    (lambda: cr.Dropout(0.5, rng=0), ramp(2, 3)),
    (lambda: cr.BatchNorm1d(3), ramp(2, 3)),
    (lambda: cr.BatchNorm2d(2), ramp(2, 2, 3, 3)),
    (lambda: cr.Residual(cr.Linear(3, 3)), ramp(2, 3)),
]
LAYER_IDS = [type(make()).__name__ + str(i) for i, (make, _) in enumerate(LAYERS)]


@pytest.mark.parametrize("make, x", LAYERS, ids=LAYER_IDS)
def test_backward_before_forward_names_the_layer(make, x):
    layer = make()
    with pytest.raises(RuntimeError) as info:
        layer.backward(np.ones((2, 3), np.float32))
    message = str(info.value)
    assert type(layer).__name__ in message and "without a cached forward" in message, message


@pytest.mark.parametrize("make, x", LAYERS, ids=LAYER_IDS)
def test_backward_with_a_wrongly_shaped_gradient_names_layer_and_shapes(make, x):
    layer = make()
    y = layer.forward(x)
    wrong = np.ones(y.shape[:-1] + (y.shape[-1] + 1,), np.float32)
    with pytest.raises(ValueError) as info:
        layer.backward(wrong)
    message = str(info.value)
    for needle in (type(layer).__name__, str(y.shape), str(wrong.shape)):
        assert needle in message, f"{needle!r} not in message: {message}"


@pytest.mark.parametrize("make, x", LAYERS, ids=LAYER_IDS)
def test_backward_after_an_eval_forward_names_the_layer(make, x):
    layer = make().eval()
    y = layer.forward(x)
    with pytest.raises(RuntimeError, match=type(layer).__name__):
        layer.backward(np.ones_like(y))
