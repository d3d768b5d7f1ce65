"""Explain mode: one input through one training step, told layer by layer.

``explain(model, x, y)`` runs a real step (forward, loss, backward, SGD update) with
hooks on each layer and writes what happened as text a student can set beside a
textbook: each layer's forward shape and formula, its local derivative in words and as
a formula, the shapes and norms of dL/dx and dL/dW, and the update ``w <- w - lr * dL/dw``
of one concrete weight with its numbers before and after.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..layers.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from ..layers.base import Layer
from ..layers.container import Residual, Sequential
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.linear import Flatten, Linear
from ..layers.normalization import BatchNorm1d, _BatchNorm
from ..layers.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from ..losses import CrossEntropyLoss, Loss, MSELoss
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


def _conv2d(layer: Conv2d) -> Derivative:
    stride = "" if layer.stride == (1, 1) else f" (dL/dy spread out by the stride {layer.stride})"
    return Derivative(
        "y = correlate(x, W) + b: each output is the kernel dotted with one input window",
        "every weight touched every window, so its gradient sums input * dL/dy over all "
        "windows; every input pixel fed the outputs whose windows cover it, so its "
        "gradient sums dL/dy times the matching kernel weights",
        "Conv2d: dL/dW = correlate(x, dL/dy); dL/db = sum over (n, i, j) of dL/dy; "
        "dL/dx = full-convolve(dL/dy, flipped W)" + stride)


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


def _max_pool2d(layer: MaxPool2d) -> Derivative:
    kh, kw = layer.kernel_size
    return Derivative(
        f"y = max over each {kh}x{kw} window of x",
        "only the element that won a window's max influenced the output, so it gets "
        "the whole gradient and the others get none",
        "MaxPool2d: route dL/dy to the argmax of each window; dL/dx = 0 elsewhere")


def _avg_pool2d(layer: AvgPool2d) -> Derivative:
    kh, kw = layer.kernel_size
    return Derivative(
        f"y = mean over each {kh}x{kw} window of x",
        f"each of the {kh * kw} elements of a window contributed 1/{kh * kw} of its mean",
        f"AvgPool2d: dL/dx = dL/dy / {kh * kw}, spread evenly over each window")


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


def _flatten(layer: Flatten) -> Derivative:
    return Derivative(
        "y = reshape(x, (N, -1))",
        "a reshape moves no value, so the gradient is only reshaped back",
        "Flatten: dL/dx = reshape(dL/dy, shape of x)")


def _dropout(layer: Dropout) -> Derivative:
    return Derivative(
        f"y = x * mask / (1 - p), mask ~ Bernoulli(1 - p), p = {layer.p:g}",
        "kept elements were scaled by 1/(1 - p), dropped ones did not count",
        "Dropout: dL/dx = dL/dy * mask / (1 - p), with the forward pass's mask")


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
    Conv2d: _conv2d,
    # linear and shape
    Linear: _linear,
    Flatten: _flatten,
    # activations
    ReLU: _relu,
    LeakyReLU: _leaky_relu,
    Sigmoid: _sigmoid,
    Tanh: _tanh,
    # pooling
    MaxPool2d: _max_pool2d,
    AvgPool2d: _avg_pool2d,
    AdaptiveAvgPool2d: _adaptive_avg_pool2d,
    # normalization
    _BatchNorm: _batch_norm,
    # regularization
    Dropout: _dropout,
    # containers
    Residual: _residual,
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


def loss_derivative(loss_fn: Loss) -> str:
    """The loss's backward formula in one line."""
    if isinstance(loss_fn, CrossEntropyLoss):
        per = " / N" if loss_fn.reduction == "mean" else ""
        return f"CrossEntropyLoss: dL/dz = (softmax(z) - onehot(y)){per}"
    if isinstance(loss_fn, MSELoss):
        per = " / (number of elements)" if loss_fn.reduction == "mean" else ""
        return f"MSELoss: dL/dpred = 2 (pred - target){per}"
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


def _shape(a: np.ndarray) -> str:
    return str(a.shape)


def _num(v: float) -> str:
    return f"{v:.6g}"


def explain(model: Layer, x: Any, y: Any, loss_fn: Loss | None = None, lr: float = 0.01,
            title: str | None = None) -> str:
    """Run one training step of ``model`` on one input and describe it.

    Args:
        model: the network; its weights are updated by the step (one SGD update).
        x: one input (C, H, W) (or a batch (N, ...) if the model needs more than one
            sample, e.g. for BatchNorm1d).
        y: its label (an int class index for cross-entropy).
        loss_fn: default ``CrossEntropyLoss()``.
        lr: the SGD learning rate of the update that is shown.
        title: a first line (e.g. which model and sample).

    Returns:
        The explanation, one paragraph per layer, forward then backward then update.
    """
    loss_fn = loss_fn if loss_fn is not None else CrossEntropyLoss()
    x = np.asarray(x)
    batch = x[None] if x.ndim == 3 else x
    target = np.atleast_1d(np.asarray(y))
    if len(batch) == 1 and any(isinstance(m, BatchNorm1d) for m in model.modules()):
        raise ValueError("explain: BatchNorm1d needs more than one sample per channel in "
                         "training mode; pass a batch of at least 2 inputs")
    layers = _explained_layers(model)
    forwards: list[_Call] = []
    backwards: list[_Call] = []
    hooks = []
    for name, layer in layers:
        def on_forward(lay: Layer, a: np.ndarray, r: np.ndarray, name: str = name) -> None:
            forwards.append(_Call(name, lay, a, r))

        def on_backward(lay: Layer, a: np.ndarray, r: np.ndarray, name: str = name) -> None:
            backwards.append(_Call(name, lay, a, r))
        hooks.append(_hooks.install(layer, "forward", on_forward))
        hooks.append(_hooks.install(layer, "backward", on_backward))

    # A model without weights (a lone activation or pooling layer) has nothing to update.
    optimizer = SGD(model.parameters(), lr=lr) if model.parameters() else None
    model.train()
    try:
        model.zero_grad()
        out = model.forward(batch)
        loss = loss_fn(out, target)
        dout = loss_fn.backward()
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
        rule, f"FORWARD: input x {_shape(batch)}, label {target.tolist()}", rule]
    for call in forwards:
        d = derivative_of(call.layer)
        lines += [_title(call.name, call.layer),
                  f"    shape:   {_shape(call.arg)} -> {_shape(call.result)}",
                  *_wrap("forward: ", d.forward)]
    lines += ["", f"LOSS: {loss_fn!r} = {_num(loss)}",
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


def _norm_line(what: str, a: np.ndarray) -> str:
    return f"    {what:<12} {_shape(a):<18} ||{what}|| = {_num(float(np.linalg.norm(a)))}"
