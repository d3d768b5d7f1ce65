"""Containers: Sequential and Residual. They apply the chain rule across their children."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .base import Layer, backward_parameters_only


class Sequential(Layer):
    """Layers applied one after another; children are named "0", "1", ... as in torch.

    Args:
        *layers: the layers, in the order they are applied.

    Shape:
        The first layer's input -> the last layer's output; each layer's output is the
        next one's input.

    Backward:
        The children's ``backward`` in reverse order, each feeding the next the gradient
        with respect to its input: the chain rule, one link per layer,
        ``dL/dx = J_1.T @ ... @ J_n.T @ dL/dy``. ``backward(grad, needs_input_grad=False)``
        lets the first child skip dLoss/dx (a training step does not need the gradient of
        the data) and returns None.
    """

    can_skip_input_grad = True

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: argument {index} must be a Layer, got "
                                f"{type(layer).__name__}")
            setattr(self, str(index), layer)

    def append(self, layer: Layer) -> "Sequential":
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.append: expected a Layer, got {type(layer).__name__}")
        setattr(self, str(len(self._children)), layer)
        return self

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._children.values())

    def __getitem__(self, index: int | slice) -> Layer:
        layers = list(self._children.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._children.values():
            x = layer.forward(x)
        return x

    def backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        layers = list(self._children.values())
        if not layers:                                     # the identity
            return grad if needs_input_grad else None
        if needs_input_grad:
            for layer in reversed(layers):
                grad = layer.backward(grad)
            return grad
        for layer in reversed(layers[1:]):
            grad = layer.backward(grad)
        backward_parameters_only(layers[0], grad)
        return None


class Residual(Layer):
    """``y = block(x) + shortcut(x)``, the shortcut being the identity when None.

    Args:
        block: the residual branch.
        shortcut: the skip branch (e.g. a 1x1 convolution where the shapes change); None
            is the identity.

    Shape:
        x -> ``block(x)``'s shape, which ``shortcut(x)`` (or x itself) must equal.

    Backward:
        The sum's gradient flows unchanged into both branches, and the two input gradients add:
        ``dx = block.backward(g) + shortcut.backward(g)`` (or ``+ g``). State-dict keys are
        ``block.*`` and ``shortcut.*``.
    """

    def __init__(self, block: Layer, shortcut: Layer | None = None) -> None:
        super().__init__()
        if not isinstance(block, Layer):
            raise TypeError(f"Residual: block must be a Layer, got {type(block).__name__}")
        if shortcut is not None and not isinstance(shortcut, Layer):
            raise TypeError(f"Residual: shortcut must be a Layer or None, got "
                            f"{type(shortcut).__name__}")
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        out = self.block.forward(x)
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        if out.shape != skip.shape:
            raise ValueError(f"Residual: block output shape {out.shape} does not match shortcut "
                             f"output shape {skip.shape}; give a shortcut that maps the input to "
                             "the block's output shape")
        if self.keeps_cache:
            self._cache = (out.shape, out.dtype)
        return out + skip

    def backward(self, grad: np.ndarray) -> np.ndarray:
        shape, dtype = self._take_cache()
        grad = self._check_grad(grad, shape, dtype)
        dx = self.block.backward(grad)
        return dx + (grad if self.shortcut is None else self.shortcut.backward(grad))
