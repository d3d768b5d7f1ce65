"""Explain mode: one input through one training step, told layer by layer.

``explain(model, x, y)`` runs a real step (forward, loss, backward, SGD update) with
hooks on each layer and writes what happened as text a student can set beside a
textbook: each layer's forward shape and formula, its local derivative in words and as
a formula, the shapes and norms of dL/dx and dL/dW, and the update ``w <- w - lr * dL/dw``
of one concrete weight with its numbers before and after.

On a ``Graph`` it also lists the nodes in the order forward runs them and the reverse
order backward runs them, and says where backward *sums* gradients: a tensor read by
several nodes (``graph.fan_out()``) gets the sum of the gradients its readers send back,
the chain rule's sum over paths. A layer a graph calls at several nodes has a paragraph
per call, named as the graph names its nodes (``conv``, ``conv@1``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..layers.activation import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh,
                                 Identity, LeakyReLU, LogSoftmax, Mish, PReLU, ReLU, ReLU6,
                                 Sigmoid, SiLU, Softmax, Softplus, Tanh)
from ..layers.base import Layer
from ..layers.container import Residual, Sequential
from ..layers.graph import Graph
from ..layers.conv import Conv1d, Conv2d, ConvTranspose2d
from ..layers.dropout import Dropout, Dropout2d
from ..layers.linear import Flatten, Linear, Unflatten
from ..layers.merge import Add, Chunk, Concat, Mean, Multiply, Permute, Reshape, Split
from ..layers.normalization import (BatchNorm1d, GroupNorm, InstanceNorm2d, LayerNorm,
                                    LocalResponseNorm, _BatchNorm)
from ..layers.padding import ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d
from ..layers.resample import (ChannelShuffle, PixelShuffle, PixelUnshuffle, Upsample,
                               UpsamplingBilinear2d, UpsamplingNearest2d)
from ..layers.pooling import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d,
                              MaxPool1d, MaxPool2d)
from ..losses import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss,
                      L1Loss, Loss, MSELoss, NLLLoss, SmoothL1Loss)
from ..optim.sgd import SGD
from . import _hooks


@dataclass(frozen=True)
class Derivative:
    """What a layer computes and how its backward applies the chain rule.

    Attributes:
        forward: the forward formula, e.g. ``y = max(x, 0)``.
        words: the local derivative in a sentence.
        formula: the backward formulas, starting with the layer's name and separated
            by "; ", e.g. ``ReLU: dL/dx = dL/dy * [x > 0]``.
    """

    forward: str
    words: str
    formula: str


def _groups_words(layer: Any) -> str:
    """What ``groups`` changes in a convolution's sums, as a sentence to append."""
    if layer.groups == 1:
        return ""
    if layer.groups == layer.in_channels:
        return (f"; depthwise (groups = {layer.groups}): each output channel reads one input "
                "channel, so every sum runs over that channel's window alone")
    return (f"; with groups = {layer.groups} each output channel reads only the "
            f"{layer.in_channels // layer.groups} input channels of its group, and the sums "
            "run over that group alone")


def _conv(layer: Conv2d | Conv1d) -> Derivative:
    """Conv2d and Conv1d: the same sums, over the pixels of an image or the positions of
    a sequence."""
    if isinstance(layer, Conv1d):
        name, stride, element, axes = "Conv1d", layer.stride[0], "position", "(n, l)"
        windows = (" along the sequence: each output is the kernel dotted with one window of "
                   "the input")
    else:
        name, stride, element, axes = "Conv2d", layer.stride, "pixel", "(n, i, j)"
        windows = ": each output is the kernel dotted with one input window"
    spread = "" if set(layer.stride) == {1} else f" (dL/dy spread out by the stride {stride})"
    return Derivative(
        f"y = correlate(x, W) + b{windows}",
        "every weight touched every window, so its gradient sums input * dL/dy over all "
        f"windows; every input {element} fed the outputs whose windows cover it, so its "
        "gradient sums dL/dy times the matching kernel weights" + _groups_words(layer),
        f"{name}: dL/dW = correlate(x, dL/dy); dL/db = sum over {axes} of dL/dy; "
        "dL/dx = full-convolve(dL/dy, flipped W)" + spread)


def _conv_transpose2d(layer: ConvTranspose2d) -> Derivative:
    return Derivative(
        "y = scatter of each input pixel times the kernel into the output, at the stride "
        "(overlaps add) + b: the input gradient of a Conv2d with the same W",
        "each input pixel wrote its value times the kernel into one output window, so its "
        "gradient is that window of dL/dy dotted with the kernel; each weight gets input "
        "times dL/dy summed over the windows it wrote into",
        "ConvTranspose2d: dL/dx = correlate(dL/dy, W) (a Conv2d forward of dL/dy at the "
        "stride); dL/dW = correlate(dL/dy, x) (Conv2d's weight gradient, roles of input "
        "and gradient swapped); dL/db = sum over (n, i, j) of dL/dy")


def _linear(layer: Linear) -> Derivative:
    return Derivative(
        "y = x W^T + b",
        "y is linear in W and in x: dy_i/dW_ij = x_j and dy_i/dx_j = W_ij",
        "Linear: dL/dW = (dL/dy)^T x; dL/db = sum over n of dL/dy; dL/dx = dL/dy W")


def _leaky_relu(layer: LeakyReLU) -> Derivative:
    a = layer.negative_slope
    return Derivative(
        f"y = x if x > 0 else {a:g} * x",
        f"slope 1 where the input was positive, {a:g} elsewhere",
        f"LeakyReLU: dL/dx = dL/dy * (1 if x > 0 else {a:g})")


def _relu(layer: ReLU) -> Derivative:
    return Derivative(
        "y = max(x, 0)",
        "slope 1 where the input was positive, 0 elsewhere: the gradient passes or stops",
        "ReLU: dL/dx = dL/dy * [x > 0]")


def _sigmoid(layer: Sigmoid) -> Derivative:
    return Derivative(
        "y = 1 / (1 + exp(-x))",
        "the slope of the sigmoid, read off its own output; at most 1/4, near 0 when "
        "saturated",
        "Sigmoid: dL/dx = dL/dy * y * (1 - y)")


def _tanh(layer: Tanh) -> Derivative:
    return Derivative(
        "y = tanh(x)",
        "the slope of tanh, read off its own output; at most 1, near 0 when saturated",
        "Tanh: dL/dx = dL/dy * (1 - y^2)")


# activations: the torch.nn catalog
def _hardtanh(layer: Hardtanh) -> Derivative:
    lo, hi = f"{layer.min_val:g}", f"{layer.max_val:g}"
    name = type(layer).__name__          # ReLU6 is Hardtanh(0, 6)
    return Derivative(
        f"y = min(max(x, {lo}), {hi})",
        f"slope 1 strictly between {lo} and {hi}, 0 where the input was clipped (and at "
        "the bounds themselves)",
        f"{name}: dL/dx = dL/dy * [{lo} < x < {hi}]")


def _elu(layer: ELU) -> Derivative:
    a = f"{layer.alpha:g}"
    return Derivative(
        f"y = x if x > 0 else {a} * (exp(x) - 1)",
        f"slope 1 for positive inputs; {a} * exp(x), which fades to 0, for the others",
        f"ELU: dL/dx = dL/dy * (1 if x > 0 else {a} * exp(x))")


def _selu(layer: SELU) -> Derivative:
    return Derivative(
        "y = scale * (x if x > 0 else alpha * (exp(x) - 1)), alpha = 1.6733, scale = 1.0507",
        "scale for positive inputs; scale * alpha * exp(x) for the others, so activations "
        "keep unit variance from layer to layer",
        "SELU: dL/dx = dL/dy * scale * (1 if x > 0 else alpha * exp(x))")


def _celu(layer: CELU) -> Derivative:
    a = f"{layer.alpha:g}"
    return Derivative(
        f"y = x if x > 0 else {a} * (exp(x / {a}) - 1)",
        f"slope 1 for positive inputs; exp(x / {a}) for the others: continuous at 0",
        f"CELU: dL/dx = dL/dy * (1 if x > 0 else exp(x / {a}))")


def _gelu(layer: GELU) -> Derivative:
    if layer.approximate == "tanh":
        return Derivative(
            "y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)",
            "the product rule on x times a smooth step: the step itself plus x times the "
            "step's slope",
            "GELU: dL/dx = dL/dy * (0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) * du/dx); "
            "du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)")
    return Derivative(
        "y = x * Phi(x), Phi the standard normal CDF = 0.5 (1 + erf(x / sqrt(2)))",
        "the product rule: the Gaussian CDF plus x times the Gaussian density",
        "GELU: dL/dx = dL/dy * (Phi(x) + x * phi(x)); phi(x) = exp(-x^2 / 2) / sqrt(2 pi)")


def _silu(layer: SiLU) -> Derivative:
    return Derivative(
        "y = x * sigmoid(x)",
        "the product rule: the sigmoid plus x times the sigmoid's slope s (1 - s)",
        "SiLU: dL/dx = dL/dy * s * (1 + x * (1 - s)); s = sigmoid(x)")


def _mish(layer: Mish) -> Derivative:
    return Derivative(
        "y = x * tanh(softplus(x)), softplus(x) = log(1 + exp(x))",
        "the product rule: T plus x times T's slope, (1 - T^2) * sigmoid(x)",
        "Mish: dL/dx = dL/dy * (T + x * sigmoid(x) * (1 - T^2)); T = tanh(softplus(x))")


def _hardswish(layer: Hardswish) -> Derivative:
    return Derivative(
        "y = x * min(max(x + 3, 0), 6) / 6",
        "0 up to -3, the line x/3 + 1/2 strictly between -3 and 3, 1 from 3 on",
        "Hardswish: dL/dx = dL/dy * (0 if x <= -3 else x/3 + 1/2 if x < 3 else 1)")


def _hardsigmoid(layer: Hardsigmoid) -> Derivative:
    return Derivative(
        "y = min(max(x + 3, 0), 6) / 6",
        "slope 1/6 strictly between -3 and 3, 0 where the output is clipped to 0 or 1",
        "Hardsigmoid: dL/dx = dL/dy / 6 * [-3 < x < 3]")


def _softplus(layer: Softplus) -> Derivative:
    b, t = f"{layer.beta:g}", f"{layer.threshold:g}"
    return Derivative(
        f"y = log(1 + exp({b} x)) / {b}, and y = x where {b} x > {t}",
        f"the sigmoid of {b} x: a smooth ReLU's slope; exactly 1 in the linear regime",
        f"Softplus: dL/dx = dL/dy * sigmoid({b} x); dL/dx = dL/dy where {b} x > {t}")


def _prelu(layer: PReLU) -> Derivative:
    per = "one slope a" if layer.num_parameters == 1 else \
        f"a slope a per channel ({layer.num_parameters})"
    return Derivative(
        f"y = x if x > 0 else a * x, with {per} learned",
        "slope 1 where the input was positive, a elsewhere; the slope a itself is "
        "pushed by x * dL/dy wherever it was used",
        "PReLU: dL/dx = dL/dy * (1 if x > 0 else a); dL/da = sum over x <= 0 of dL/dy * x")


def _softmax(layer: Softmax) -> Derivative:
    return Derivative(
        f"y = exp(x) / sum(exp(x)) along dim {layer.dim}",
        "every output depends on every input of its row: dy_i/dx_j = y_i ([i = j] - y_j)",
        "Softmax: dL/dx = y * (dL/dy - sum(dL/dy * y, dim))")


def _log_softmax(layer: LogSoftmax) -> Derivative:
    return Derivative(
        f"y = x - log(sum(exp(x))) along dim {layer.dim}",
        "each output moves one for one with its own input and down by softmax(x)_j "
        "with every input j of its row",
        "LogSoftmax: dL/dx = dL/dy - softmax(x) * sum(dL/dy, dim); softmax(x) = exp(y)")


def _identity(layer: Identity) -> Derivative:
    return Derivative("y = x", "the identity passes the gradient unchanged",
                      "Identity: dL/dx = dL/dy")


def _window(kernel: int | tuple[int, int]) -> tuple[str, int]:
    """A pool's window in words (``3x3``, ``length-3``) and its number of elements."""
    if isinstance(kernel, tuple):
        return f"{kernel[0]}x{kernel[1]}", kernel[0] * kernel[1]
    return f"length-{kernel}", kernel


def _max_pool(layer: MaxPool1d | MaxPool2d) -> Derivative:
    return Derivative(
        f"y = max over each {_window(layer.kernel_size)[0]} window of x",
        "only the element that won a window's max influenced the output, so it gets "
        "the whole gradient and the others get none",
        f"{type(layer).__name__}: route dL/dy to the argmax of each window; dL/dx = 0 elsewhere")


def _avg_divisor(layer: AvgPool1d | AvgPool2d, size: int) -> str:
    """What an average pool divides each window's sum by, in words: ``size`` (the
    window's kh*kw) unless divisor_override, count_include_pad=False or ceil_mode's
    clipped windows change it."""
    if getattr(layer, "divisor_override", None) is not None:
        return str(layer.divisor_override)
    if not layer.count_include_pad and (layer.ceil_mode or layer.padding not in (0, (0, 0))):
        return "(the number of input elements in its window)"
    if layer.ceil_mode:
        return f"{size} (a ceil_mode window cut off by the padded input's end: its size inside)"
    return str(size)


def _avg_pool(layer: AvgPool1d | AvgPool2d) -> Derivative:
    window, size = _window(layer.kernel_size)
    divisor = _avg_divisor(layer, size)
    name = type(layer).__name__
    return Derivative(
        f"y = (sum of x over each {window} window) / {divisor}",
        f"each input element counts once in its window's sum, which is divided by {divisor}",
        f"{name}: dL/dx = dL/dy / {divisor}, spread evenly over each window's input elements")


def _adaptive_max_pool2d(layer: AdaptiveMaxPool2d) -> Derivative:
    return Derivative(
        f"y = max of x over each of {layer.output_size} regions",
        "only the element that won a region's max influenced the output, so it gets the "
        "whole gradient (regions that overlap and share a winner add theirs)",
        "AdaptiveMaxPool2d: route dL/dy to the argmax of each output's input region; "
        "dL/dx = 0 elsewhere")


def _adaptive_avg_pool2d(layer: AdaptiveAvgPool2d) -> Derivative:
    return Derivative(
        f"y = mean of x over each of {layer.output_size} regions",
        "each input element contributed 1/(region size) to its region's mean",
        "AdaptiveAvgPool2d: dL/dx = dL/dy / (region size), spread evenly over each "
        "output's input region")


def _batch_norm(layer: _BatchNorm) -> Derivative:
    return Derivative(
        "y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps), batch statistics",
        "gamma and beta act like a per-channel Linear on x_hat; the input gradient also "
        "flows through the batch mean and variance, which every sample shares",
        f"{type(layer).__name__}: dL/dgamma = sum(dL/dy * x_hat); dL/dbeta = sum(dL/dy); "
        "dL/dx = (n*g - sum(g) - x_hat * sum(g * x_hat)) / (n * sqrt(var + eps)); "
        "where g = dL/dy * gamma")


_STANDARDIZE_DX = ("dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps) over "
                   "each {group}; where g = dL/dy * gamma")


def _group_norm(layer: GroupNorm) -> Derivative:
    per = layer.num_channels // layer.num_groups
    return Derivative(
        f"y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps) over each group of "
        f"{per} channel(s) and all positions of one sample ({layer.num_groups} groups)",
        "gamma and beta act per channel on x_hat; the input gradient also flows through "
        "the group's mean and variance, which all its elements share",
        "GroupNorm: dL/dgamma = sum over (n, positions) of dL/dy * x_hat; dL/dbeta = sum "
        "over (n, positions) of dL/dy; " + _STANDARDIZE_DX.format(group="(sample, group)"))


def _layer_norm(layer: LayerNorm) -> Derivative:
    return Derivative(
        f"y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps) over the last "
        f"{len(layer.normalized_shape)} axes {layer.normalized_shape} of each sample",
        "gamma and beta act elementwise on x_hat; the input gradient also flows through "
        "the sample's mean and variance, which all its normalized elements share",
        "LayerNorm: dL/dgamma = sum over the leading axes of dL/dy * x_hat; dL/dbeta = sum "
        "over the leading axes of dL/dy; " + _STANDARDIZE_DX.format(group="sample"))


def _instance_norm(layer: InstanceNorm2d) -> Derivative:
    running = layer.track_running_stats and not layer.training
    stats = "the running statistics" if running else "each (sample, channel) over H, W"
    dx = ("dL/dx = g / sqrt(running_var + eps); where g = dL/dy * gamma" if running
          else _STANDARDIZE_DX.format(group="(sample, channel) over H, W"))
    return Derivative(
        f"y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps) with {stats}",
        "gamma and beta act per channel on x_hat; " + (
            "the running statistics are constants, so x_hat is linear in x" if running else
            "the input gradient also flows through the mean and variance of each channel of "
            "each sample"),
        "InstanceNorm2d: dL/dgamma = sum over (n, h, w) of dL/dy * x_hat; dL/dbeta = sum "
        "over (n, h, w) of dL/dy; " + dx)


def _local_response_norm(layer: LocalResponseNorm) -> Derivative:
    n = layer.size
    return Derivative(
        f"y_c = x_c / s_c^{layer.beta:g}, s_c = {layer.k:g} + {layer.alpha:g}/{n} * sum of "
        f"x^2 over channels [c - {n // 2}, c + {(n - 1) // 2}]",
        "each output depends on its own input directly and, through s, on the squares of "
        "its neighbouring channels",
        f"LocalResponseNorm: dL/dx_c = dL/dy_c / s_c^beta - 2 alpha beta / size * x_c * sum "
        f"over the c' whose window holds c of dL/dy_c' * x_c' * s_c'^(-beta-1)")


_RESHAPE_WORDS = "a reshape moves no value, so the gradient is only reshaped back"
_REARRANGE_WORDS = ("a rearrangement moves values without changing them, so the gradient is "
                    "moved back")


def _flatten(layer: Flatten) -> Derivative:
    return Derivative(
        "y = reshape(x, (N, -1))",
        _RESHAPE_WORDS,
        "Flatten: dL/dx = reshape(dL/dy, shape of x)")


def _dropout(layer: Dropout) -> Derivative:
    return Derivative(
        f"y = x * mask / (1 - p), mask ~ Bernoulli(1 - p), p = {layer.p:g}",
        "kept elements were scaled by 1/(1 - p), dropped ones did not count",
        "Dropout: dL/dx = dL/dy * mask / (1 - p), with the forward pass's mask")


# padding and shape
def _unflatten(layer: Unflatten) -> Derivative:
    return Derivative(
        f"y = reshape(x), axis {layer.dim} split into {layer.unflattened_size}",
        _RESHAPE_WORDS,
        "Unflatten: dL/dx = reshape(dL/dy, shape of x)")


def _dropout2d(layer: Dropout2d) -> Derivative:
    return Derivative(
        f"y = x * mask / (1 - p), one mask value ~ Bernoulli(1 - p) per (sample, channel), "
        f"p = {layer.p:g}",
        "kept channels were scaled by 1/(1 - p), dropped channels did not count",
        "Dropout2d: dL/dx = dL/dy * mask / (1 - p), with the forward pass's per-channel mask")


def _pad2d(layer: ConstantPad2d | ReflectionPad2d | ReplicationPad2d) -> Derivative:
    name = type(layer).__name__
    left, right, top, bottom = layer.padding
    if min(layer.padding) >= 0:
        middle = f"dL/dx = the middle of dL/dy, dL/dy[..., {top}:{top} + H, {left}:{left} + W]"
        crops = ""
    else:   # a negative side crops: that part of x reached no output
        middle = "dL/dx = the middle of dL/dy on the part of x that was kept, 0 where x was cropped"
        crops = " (negative sides crop)"
    if isinstance(layer, ConstantPad2d):
        border = f"the value {layer.value:g}"
        words = ("x was copied into the middle and the border is a constant, so the gradient "
                 "of the middle goes back to x and the border's is dropped")
        formula = f"{name}: {middle}"
    else:
        reflect = isinstance(layer, ReflectionPad2d)
        border = ("x's rows and columns mirrored at its edges" if reflect
                  else "copies of x's edge rows and columns")
        words = ("x was copied into the middle and into the border, so each input element "
                 "gets the gradient of every output that copied it")
        added = ("each border's gradient, flipped, added onto the rows/columns it mirrored"
                 if reflect else "each border's gradient summed onto the edge row/column it "
                 "repeated")
        formula = (f"{name}: {middle}; plus {added}, columns first then rows (so corners "
                   "reach their pixel through both axes)")
    def grown(axis: str, n: int) -> str:
        return f"{axis} {'-' if n < 0 else '+'} {abs(n)}"
    return Derivative(
        f"y = x copied into the middle of an ({grown('H', top + bottom)}) x "
        f"({grown('W', left + right)}) map, "
        f"padding (left, right, top, bottom) = {layer.padding}{crops}, the border filled with "
        f"{border}", words, formula)


def _upsample(layer: Upsample) -> Derivative:
    name = type(layer).__name__
    how = (f"scale_factor {layer.scale_factor}" if layer.scale_factor is not None
           else f"size {layer.size}")
    if layer.mode in ("nearest", "nearest-exact"):
        forward = (f"y = A_h x A_w^T ({how}, {layer.mode}): each output copies the input pixel "
                   "nearest to its source point")
        words = ("a copy has slope 1 to the pixel it copied and 0 to the others; a pixel "
                 "copied by several outputs collects all their gradients")
    else:
        corners = "corner pixels aligned" if layer.align_corners else "pixel centres aligned"
        forward = (f"y = A_h x A_w^T ({how}, {layer.mode}, {corners}): each output "
                   "interpolates the input pixels around its source point, weighted by nearness")
        words = ("each output is linear in the pixels it interpolated, with slope equal to "
                 "their weights; a pixel that fed several outputs collects all their "
                 "gradients")
    return Derivative(forward, words,
                      f"{name}: dL/dx = A_h^T dL/dy A_w; each output's gradient goes back to "
                      "its source pixels with the forward's weights")


def _pixel_shuffle(layer: PixelShuffle) -> Derivative:
    r = layer.upscale_factor
    return Derivative(
        f"y[c, h*{r} + i, w*{r} + j] = x[c*{r * r} + i*{r} + j, h, w]: each group of {r * r} "
        f"channels becomes one {r}x{r} block of pixels",
        _REARRANGE_WORDS,
        f"PixelShuffle: dL/dx = pixel_unshuffle(dL/dy, {r})")


def _pixel_unshuffle(layer: PixelUnshuffle) -> Derivative:
    r = layer.downscale_factor
    return Derivative(
        f"y[c*{r * r} + i*{r} + j, h, w] = x[c, h*{r} + i, w*{r} + j]: each {r}x{r} block of "
        f"pixels becomes {r * r} channels",
        _REARRANGE_WORDS,
        f"PixelUnshuffle: dL/dx = pixel_shuffle(dL/dy, {r})")


def _channel_shuffle(layer: ChannelShuffle) -> Derivative:
    g = layer.groups
    return Derivative(
        f"y = x with channel k*(C/{g}) + j moved to j*{g} + k: the channels of {g} groups "
        "interleaved",
        "a permutation moves values without changing them, so the gradient is moved back",
        f"ChannelShuffle: dL/dx = channel_shuffle(dL/dy, C/{g}), the inverse permutation")


# merge and shape
def _add(layer: Add) -> Derivative:
    return Derivative(
        "y = x_0 + x_1 + ... (broadcast to one shape)",
        "a sum has slope 1 to each of its terms, so every input receives dL/dy; an input "
        "broadcast along an axis fed every position there and collects all their gradients",
        "Add: dL/dx_i = dL/dy, summed over the axes x_i was broadcast along")


def _multiply(layer: Multiply) -> Derivative:
    return Derivative(
        "y = x_0 * x_1 * ... elementwise (broadcast to one shape)",
        "a product's slope to one factor is the product of the other factors",
        "Multiply: dL/dx_i = dL/dy * (product of the other inputs), summed over the axes x_i "
        "was broadcast along")


def _concat(layer: Concat) -> Derivative:
    return Derivative(
        f"y = the inputs joined along dim {layer.dim}",
        "a concatenation moves values without changing them, so each input gets back its "
        "own part of the gradient",
        f"Concat: dL/dx_i = the slice of dL/dy along dim {layer.dim} where x_i was placed")


def _split(layer: Split | Chunk) -> Derivative:
    name = type(layer).__name__
    how = (f"{layer.chunks} chunks" if isinstance(layer, Chunk)
           else f"pieces of {layer.split_size_or_sections}")
    return Derivative(
        f"y_0, y_1, ... = x cut along dim {layer.dim} into {how}",
        "each piece is a part of x unchanged, so the pieces' gradients go back to their parts",
        f"{name}: dL/dx = the gradients of the pieces concatenated along dim {layer.dim}, "
        "zeros where a piece had none")


def _reshape(layer: Reshape) -> Derivative:
    return Derivative(
        f"y = reshape(x, (N, *{layer.shape}))",
        _RESHAPE_WORDS,
        "Reshape: dL/dx = reshape(dL/dy, shape of x)")


def _permute(layer: Permute) -> Derivative:
    return Derivative(
        f"y = x with its axes reordered as {layer.dims}",
        "a permutation of axes moves values without changing them, so the gradient is "
        "moved back",
        "Permute: dL/dx = dL/dy with the inverse permutation of axes")


def _mean(layer: Mean) -> Derivative:
    return Derivative(
        f"y = mean of x over dims {layer.dims}" + (", kept as size 1" if layer.keepdim else ""),
        "each of the n elements averaged has slope 1/n to its mean",
        "Mean: dL/dx = dL/dy / n, spread over the averaged dims (n elements per mean)")


def _graph(layer: Graph) -> Derivative:
    fan_out = layer.fan_out()
    summed = (f"; the gradients of {', '.join(repr(t) for t in fan_out)} are sums over "
              "their readers" if fan_out else "")
    return Derivative(
        f"its {len(layer.nodes)} nodes in order, each node's layer on the tensors it reads",
        "the chain rule over a graph: each node's backward, in reverse order, and where a "
        "tensor feeds several nodes its gradient is the sum of what they send back",
        f"Graph: dL/dt = sum over the readers r of t of dL/dt through r{summed}")


def _residual(layer: Residual) -> Derivative:
    skip = ("dL/dy (identity shortcut)" if layer.shortcut is None
            else "dL/dx through the shortcut")
    return Derivative(
        "y = F(x) + shortcut(x), with F the block whose layers are listed just above",
        "a sum passes its gradient unchanged to both branches (the block's layers above "
        "received this dL/dy), and the two input gradients add",
        f"Residual: dL/dx = dL/dx through F + {skip}")


# Layer class -> its Derivative. Looked up along the class's MRO, so a subclass (the
# BatchNorms of _BatchNorm) finds its base's entry. One section per family of layers.
_DERIVATIVES: dict[type, Callable[[Any], Derivative]] = {
    # convolution
    Conv2d: _conv,
    Conv1d: _conv,
    ConvTranspose2d: _conv_transpose2d,
    # linear and shape
    Linear: _linear,
    Flatten: _flatten,
    Unflatten: _unflatten,
    # activations
    ReLU: _relu,
    LeakyReLU: _leaky_relu,
    Sigmoid: _sigmoid,
    Tanh: _tanh,
    Hardtanh: _hardtanh,
    ReLU6: _hardtanh,
    ELU: _elu,
    SELU: _selu,
    CELU: _celu,
    GELU: _gelu,
    SiLU: _silu,
    Mish: _mish,
    Hardswish: _hardswish,
    Hardsigmoid: _hardsigmoid,
    Softplus: _softplus,
    PReLU: _prelu,
    Softmax: _softmax,
    LogSoftmax: _log_softmax,
    Identity: _identity,
    # pooling
    MaxPool2d: _max_pool,
    AvgPool2d: _avg_pool,
    AdaptiveAvgPool2d: _adaptive_avg_pool2d,
    MaxPool1d: _max_pool,
    AvgPool1d: _avg_pool,
    AdaptiveMaxPool2d: _adaptive_max_pool2d,
    # normalization
    _BatchNorm: _batch_norm,
    GroupNorm: _group_norm,
    LayerNorm: _layer_norm,
    InstanceNorm2d: _instance_norm,
    LocalResponseNorm: _local_response_norm,
    # regularization
    Dropout: _dropout,
    Dropout2d: _dropout2d,
    # resampling
    Upsample: _upsample,
    UpsamplingNearest2d: _upsample,
    UpsamplingBilinear2d: _upsample,
    PixelShuffle: _pixel_shuffle,
    PixelUnshuffle: _pixel_unshuffle,
    ChannelShuffle: _channel_shuffle,
    # padding
    ZeroPad2d: _pad2d,
    ConstantPad2d: _pad2d,
    ReflectionPad2d: _pad2d,
    ReplicationPad2d: _pad2d,
    # merge and shape
    Add: _add,
    Multiply: _multiply,
    Concat: _concat,
    Split: _split,
    Chunk: _split,
    Reshape: _reshape,
    Permute: _permute,
    Mean: _mean,
    # containers
    Residual: _residual,
    Graph: _graph,
}


def derivative_of(layer: Layer) -> Derivative:
    """The ``Derivative`` of a layer, for every built-in layer type; a layer of another
    type gets its docstring's first line and a pointer to its ``backward``."""
    for cls in type(layer).__mro__:
        describe = _DERIVATIVES.get(cls)
        if describe is not None:
            return describe(layer)
    doc = (type(layer).__doc__ or "").strip().splitlines()
    return Derivative(doc[0] if doc else type(layer).__name__,
                      "(no description on file for this layer type)",
                      f"{type(layer).__name__}: see its backward()")


def _reduced(loss_fn: Loss, mean_divisor: str) -> str:
    """What the reduction does to the per-element gradient, as a suffix."""
    return {"mean": f" / {mean_divisor}", "batchmean": " / N (the batch size)", "sum": "",
            "none": " * g (g: the upstream gradient of each element's loss)"}[loss_fn.reduction]


def _class_loss_parts(loss_fn: Any) -> tuple[str, list[str]]:
    """The mean's divisor and the notes on ignore_index of CrossEntropyLoss and NLLLoss."""
    divisor = "sum(w[y])" if loss_fn.weight is not None else "N"
    leave = f" and leave {divisor}" if loss_fn.reduction == "mean" else ""
    notes = ([f"rows whose y = ignore_index ({loss_fn.ignore_index}) get 0{leave}"]
             if loss_fn.ignore_index != -100 else [])
    return divisor, notes


def _cross_entropy_formula(loss_fn: CrossEntropyLoss) -> str:
    divisor, notes = _class_loss_parts(loss_fn)
    eps, weighted = loss_fn.label_smoothing, loss_fn.weight is not None
    if not eps:
        grad = "w[y] (softmax(z) - onehot(y))" if weighted else "(softmax(z) - onehot(y))"
    elif weighted:
        grad = "((1 - eps) w[y] (softmax(z) - onehot(y)) + eps/C (softmax(z) sum(w) - w))"
        notes.insert(0, f"eps = {eps}")
    else:
        grad = "(softmax(z) - q)"
        notes.insert(0, f"q = (1 - {eps}) onehot(y) + {eps} / C")
    return "; ".join([f"CrossEntropyLoss: dL/dz = {grad}{_reduced(loss_fn, divisor)}", *notes])


def _nll_formula(loss_fn: NLLLoss) -> str:
    divisor, notes = _class_loss_parts(loss_fn)
    grad = "-w[y] onehot(y)" if loss_fn.weight is not None else "-onehot(y)"
    return "; ".join([f"NLLLoss: dL/dx = {grad}{_reduced(loss_fn, divisor)}", *notes])


def _weighted(loss_fn: Any, grad: str) -> str:
    return f"w * {grad}" if loss_fn.weight is not None else grad


def _bce_formula(loss_fn: BCELoss) -> str:
    grad = _weighted(loss_fn, "(p - y) / max(p (1 - p), 1e-12)")
    return f"BCELoss: dL/dp = {grad}{_reduced(loss_fn, '(number of elements)')}"


def _bce_logits_formula(loss_fn: BCEWithLogitsLoss) -> str:
    grad = ("((1 + (pos_weight - 1) y) sigmoid(x) - pos_weight y)"
            if loss_fn.pos_weight is not None else "(sigmoid(x) - y)")
    return (f"BCEWithLogitsLoss: dL/dx = {_weighted(loss_fn, grad)}"
            f"{_reduced(loss_fn, '(number of elements)')}")


def _smooth_l1_formula(loss_fn: SmoothL1Loss) -> str:
    per = _reduced(loss_fn, "(number of elements)")
    if loss_fn.beta == 0:
        return f"SmoothL1Loss: dL/dpred = sign(pred - target){per}; beta = 0: L1"
    return (f"SmoothL1Loss: dL/dpred = (d / beta if |d| < beta else sign(d)){per}; "
            f"d = pred - target, beta = {loss_fn.beta}")


def _kl_div_formula(loss_fn: KLDivLoss) -> str:
    grad = "-exp(target)" if loss_fn.log_target else "-target"
    return f"KLDivLoss: dL/dx = {grad}{_reduced(loss_fn, '(number of elements)')}"


# The backward formula of each loss class, looked up along the MRO like _DERIVATIVES.
_LOSS_DERIVATIVES: dict[type, Callable[[Any], str]] = {
    CrossEntropyLoss: _cross_entropy_formula,
    NLLLoss: _nll_formula,
    BCELoss: _bce_formula,
    BCEWithLogitsLoss: _bce_logits_formula,
    MSELoss: lambda loss_fn: (f"MSELoss: dL/dpred = 2 (pred - target)"
                              f"{_reduced(loss_fn, '(number of elements)')}"),
    L1Loss: lambda loss_fn: (f"L1Loss: dL/dpred = sign(pred - target)"
                             f"{_reduced(loss_fn, '(number of elements)')}"),
    SmoothL1Loss: _smooth_l1_formula,
    HuberLoss: lambda loss_fn: (f"HuberLoss: dL/dpred = clip(pred - target, -delta, delta)"
                                f"{_reduced(loss_fn, '(number of elements)')}; "
                                f"delta = {loss_fn.delta}"),
    KLDivLoss: _kl_div_formula,
}


def loss_derivative(loss_fn: Loss) -> str:
    """The loss's backward formula: equations separated by "; ", the first one starting
    with the loss's name (e.g. ``MSELoss: dL/dpred = 2 (pred - target) / (number of
    elements)``); a loss of another type gets a pointer to its ``backward``."""
    for cls in type(loss_fn).__mro__:
        describe = _LOSS_DERIVATIVES.get(cls)
        if describe is not None:
            return describe(loss_fn)
    return f"{type(loss_fn).__name__}: see its backward()"


@dataclass
class _Call:
    """One hooked forward or backward call."""

    name: str
    layer: Layer
    arg: np.ndarray
    result: np.ndarray


def _explained_layers(model: Layer) -> list[tuple[str, Layer]]:
    """Every layer worth a paragraph: the leaves and the containers that compute
    something themselves (Residual); a Sequential only chains its children."""
    return [(name or "model", m) for name, m in model.named_modules()
            if not m._children or not isinstance(m, Sequential)]


def _shape(a: Any) -> str:
    """An array's shape; a list of them (several inputs or outputs) as a list."""
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join("-" if v is None else str(v.shape) for v in a) + "]"
    return str(a.shape)


def _graph_lines(name: str, graph: Graph) -> list[str]:
    """The node order of forward and backward, and where backward sums gradients."""
    where = f" {name!r}" if name != "model" else ""
    lines = [f"[{name}] Graph: {len(graph.nodes)} nodes, inputs {list(graph.input_names)}, "
             f"outputs {list(graph.output_names)}", "    forward order:"]
    lines += [f"        {node.name} = {node.layer_name}({', '.join(node.inputs)})"
              for node in graph.nodes]
    lines.append("    backward order (the reverse): "
                 + ", ".join(node.name for node in reversed(graph.nodes)))
    fan_out = graph.fan_out()
    if not fan_out:
        lines += _wrap("", f"Every tensor of graph{where} is read once: no gradient is "
                       "summed.")
    for tensor, count in fan_out.items():
        readers = [repr(node.name) for node in graph.nodes for t in node.inputs if t == tensor]
        readers += ["the graph's output"] * list(graph.output_names).count(tensor)
        lines += _wrap("", f"the gradient of {tensor!r} is the sum of the gradients from "
                       f"{count} readers: {', '.join(readers)} (backward adds each one as "
                       f"its reader's backward runs; the sum is complete {_when(graph, tensor)})")
    return lines


def _when(graph: Graph, tensor: str) -> str:
    """When the summed gradient of ``tensor`` is complete: before its producer's backward."""
    for node in graph.nodes:
        if tensor in node.outputs:
            return f"before {node.name!r} runs its own backward"
    return "when backward returns it as the gradient of the graph's input"


def _batched(x: Any) -> Any:
    """One input (C, H, W) as a batch of one; a batch as it is; a list, each entry."""
    if isinstance(x, (list, tuple)):
        return [_batched(v) for v in x]
    x = np.asarray(x)
    return x[None] if x.ndim == 3 else x


def _num(v: float) -> str:
    return f"{v:.6g}"


def explain(model: Layer, x: Any, y: Any, loss_fn: Loss | None = None, lr: float = 0.01,
            title: str | None = None) -> str:
    """Run one training step of ``model`` on one input and describe it.

    Args:
        model: the network; its weights are updated by the step (one SGD update).
        x: one input (C, H, W) (or a batch (N, ...) if the model needs more than one
            sample, e.g. for BatchNorm1d); a list of them for a graph of several inputs.
        y: its label (an int class index for cross-entropy); for a graph of several
            outputs, a list with one target per output: the loss is the sum of
            ``loss_fn`` over the outputs.
        loss_fn: default ``CrossEntropyLoss()``.
        lr: the SGD learning rate of the update that is shown.
        title: a first line (e.g. which model and sample).

    Returns:
        The explanation, one paragraph per layer, forward then backward then update.
    """
    loss_fn = loss_fn if loss_fn is not None else CrossEntropyLoss()
    batch = _batched(x)
    several_out = isinstance(model, Graph) and len(model.output_names) > 1
    if several_out and not (isinstance(y, (list, tuple)) and len(y) == len(model.output_names)):
        raise ValueError(f"explain: the model has {len(model.output_names)} outputs "
                         f"{list(model.output_names)}; y must be a list of as many targets")
    targets = [np.atleast_1d(np.asarray(t)) for t in (y if several_out else [y])]
    target = targets if several_out else targets[0]
    first = batch[0] if isinstance(batch, list) else batch
    if len(first) == 1 and any(isinstance(m, BatchNorm1d) for m in model.modules()):
        raise ValueError("explain: BatchNorm1d needs more than one sample per channel in "
                         "training mode; pass a batch of at least 2 inputs")
    layers = _explained_layers(model)
    forwards: list[_Call] = []
    backwards: list[_Call] = []
    hooks = []
    counts = _hooks.call_counts(model)
    seen: dict[tuple[str, int], int] = {}

    def call_name(names: list[str], backward: bool) -> str:
        # k-th forward call -> names[k]; backward runs the calls in reverse order.
        k = seen.get((names[0], backward), 0)
        seen[(names[0], backward)] = k + 1
        k %= len(names)
        return names[-1 - k] if backward else names[k]

    for name, layer in layers:
        names = _hooks.call_names(name, max(counts.get(id(layer), 1), 1))

        def on_forward(lay: Layer, a: Any, r: Any, names: list[str] = names) -> None:
            forwards.append(_Call(call_name(names, False), lay, a, r))

        def on_backward(lay: Layer, a: Any, r: Any, names: list[str] = names) -> None:
            backwards.append(_Call(call_name(names, True), lay, a, r))
        hooks.append(_hooks.install(layer, "forward", on_forward))
        hooks.append(_hooks.install(layer, "backward", on_backward))

    # A model without weights (a lone activation or pooling layer) has nothing to update.
    optimizer = SGD(model.parameters(), lr=lr) if model.parameters() else None
    model.train()
    try:
        model.zero_grad()
        out = model.forward(batch)
        loss, douts = 0.0, []
        for o, t in zip(out if several_out else [out], targets):
            loss += loss_fn(o, t)
            douts.append(loss_fn.backward())
        dout = douts if several_out else douts[0]
        model.backward(dout)
    finally:
        for hook in reversed(hooks):
            _hooks.remove(hook)
    grads = {id(p): p.grad.copy() for p in model.parameters()}
    picks = {}
    for p in model.parameters():
        idx = np.unravel_index(int(np.argmax(np.abs(p.grad))), p.shape)
        picks[id(p)] = (idx, float(p.data[idx]))
    if optimizer is not None:
        optimizer.step()
    after = {id(p): float(p.data[picks[id(p)][0]]) for p in model.parameters()}

    rule = "=" * 78
    lines = []
    if title:
        lines += [title, ""]
    lines += [
        "Notation: x is a layer's input, y its output, L the loss. Backward, each layer",
        "receives dL/dy from the layer above, multiplies it by its local derivative dy/dx",
        "(the chain rule) and hands dL/dx down, where it is the next layer's dL/dy.",
        "Layers with weights W also compute dL/dW, which the optimizer uses to update W.",
        "||.|| is the L2 norm of all the elements.", "",
        rule, f"FORWARD: input x {_shape(batch)}, label "
              f"{[t.tolist() for t in targets] if several_out else target.tolist()}", rule]
    for call in forwards:
        d = derivative_of(call.layer)
        lines += [_title(call.name, call.layer),
                  f"    shape:   {_shape(call.arg)} -> {_shape(call.result)}",
                  *_wrap("forward: ", d.forward)]
    graphs = [(name, m) for name, m in layers if isinstance(m, Graph)]
    if graphs:
        lines += ["", rule, "GRAPH: the order of the nodes, and where gradients are summed",
                  rule]
        for name, graph in graphs:
            lines += [*_graph_lines(name, graph), ""]
    summed = " (summed over the outputs)" if several_out else ""
    lines += ["", f"LOSS: {loss_fn!r}{summed} = {_num(loss)}",
              *_formula_lines(loss_derivative(loss_fn)),
              _norm_line("dL/dz", dout), "",
              rule, "BACKWARD: the chain rule, from the loss back to the input", rule]
    for call in backwards:
        d = derivative_of(call.layer)
        lines += [_title(call.name, call.layer),
                  *_wrap("local derivative: ", d.words),
                  *_formula_lines(d.formula),
                  _norm_line("dL/dy", call.arg), _norm_line("dL/dx", call.result)]
        own = [(pname, p) for pname, p in call.layer._parameters.items() if p is not None]
        lines += [_norm_line(f"dL/d{pname}", grads[id(p)]) for pname, p in own]
        if own:
            # One concrete number per layer: the first parameter (the weight), at the
            # entry the gradient moves most.
            pname, p = own[0]
            idx, before = picks[id(p)]
            g = float(grads[id(p)][idx])
            where = f"{pname}[{', '.join(str(int(i)) for i in idx)}]"
            lines += [f"    update of one weight, {where} (the largest |dL/dw|):",
                      f"        w <- w - lr * dL/dw = {_num(before)} - {lr:g} * ({_num(g)})"
                      f" = {_num(after[id(p)])}",
                      f"        before {_num(before)}   dL/dw {_num(g)}   after {_num(after[id(p)])}"]
        lines.append("")
    if backwards:
        lines += _wrap("", f"dL/dx at the input {_shape(backwards[-1].result)} is the loss's "
                       "gradient with respect to the image: for a class score instead of the "
                       "loss it is the saliency map that `chainrule inspect` draws.", indent="")
    lines += _wrap("", f"UPDATE: SGD with lr = {lr:g} moved every weight by -lr * dL/dw (one "
                   "weight per layer is shown above).", indent="")
    return "\n".join(lines)


def _title(name: str, layer: Layer) -> str:
    # A container's repr spans lines (its children); they have their own paragraphs.
    return f"[{name}] {type(layer).__name__}" if layer._children else f"[{name}] {layer!r}"


def _wrap(label: str, text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, width=90, initial_indent=indent + label,
                         subsequent_indent=indent + " " * len(label))


def _formula_lines(formula: str) -> list[str]:
    """One equation a line, aligned after the layer name: "Conv2d: dL/dW = ..." then
    "        dL/dx = ..." below it."""
    first, *rest = formula.split("; ")
    pad = " " * (len("    formula: ") + first.index(": ") + 2)
    return ["    formula: " + first] + [pad + part for part in rest]


def _norm_line(what: str, a: Any) -> str:
    # Several arrays (a merge layer's input gradients): the norm of all of them together.
    flat = _hooks.joined(a) if isinstance(a, (list, tuple)) else a
    return f"    {what:<12} {_shape(a):<18} ||{what}|| = {_num(float(np.linalg.norm(flat)))}"
