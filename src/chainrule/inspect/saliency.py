"""Gradients with respect to the input, computed by the model's own backward pass.

- ``saliency``: dScore_c/dx, the gradient of one class score (a logit) with respect to
  the input image (Simonyan et al., 2014). Which pixels would change the score most?
- ``maxpool_routing``: which input positions of each MaxPool2d layer receive gradient:
  max pooling passes each window's gradient to the one element that won the max.

Both run in eval mode with ``gradients_in_eval`` and restore the model afterwards
(modes, caches and ``p.grad``), so they can be called in the middle of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layers.base import Layer
from ..layers.pooling import MaxPool2d
from ._hooks import capture_outputs, eval_mode, install, leaf_layers, remove


def _as_batch(x: Any) -> tuple[np.ndarray, bool]:
    """(N, C, H, W) view of ``x`` and whether it was a single (C, H, W) image."""
    x = np.asarray(x)
    if x.ndim == 3:
        return x[None], True
    if x.ndim == 4:
        return x, False
    raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {x.shape}")


def _score_gradient(logits: np.ndarray, target_class: Any) -> np.ndarray:
    """The upstream gradient dScore/dlogits (N, classes): one-hot at each sample's class,
    ``target_class`` (an int, or one per sample) or, when None, the argmax."""
    if logits.ndim != 2:
        raise ValueError(f"the model should output class scores (N, classes), got shape "
                         f"{logits.shape}")
    n, c = logits.shape
    target = (logits.argmax(axis=1) if target_class is None
              else np.broadcast_to(np.asarray(target_class), (n,)).astype(np.int64))
    if target.min() < 0 or target.max() >= c:
        raise ValueError(f"target_class must be in [0, {c}), got {target_class!r}")
    upstream = np.zeros_like(logits)
    upstream[np.arange(n), target] = 1
    return upstream


def saliency(model: Layer, x: Any, target_class: int | Any = None) -> np.ndarray:
    """dScore_c/dx: the gradient of the class score (logit) ``c`` with respect to ``x``.

    Args:
        model: a classifier ending in logits (N, classes).
        x: one image (C, H, W) or a batch (N, C, H, W), cast to the model's dtype.
        target_class: the class c (an int, or one per sample); None takes each sample's
            predicted class.

    Returns:
        The gradient, shaped like ``x``. ``saliency_map`` turns it into a heat map.

    The model runs in eval mode (BatchNorm uses its running statistics, dropout is off);
    its modes, caches and parameter gradients are restored afterwards.
    """
    batch, single = _as_batch(x)
    with eval_mode(model, gradients=True):
        logits = model.forward(batch)
        upstream = _score_gradient(logits, target_class)
        dx = model.backward(upstream)
    return dx[0] if single else dx


def saliency_map(grad: np.ndarray) -> np.ndarray:
    """max over channels of |dScore/dx|: (C, H, W) -> (H, W), or (N, C, H, W) -> (N, H, W)."""
    return np.abs(grad).max(axis=-3)


@dataclass
class PoolRouting:
    """How one MaxPool2d layer routes gradient, for one image.

    Attributes:
        name: the layer's dotted name in the model.
        input: (C, H, W) what the layer received in the forward pass.
        count: (C, H, W) int: how many pooling windows chose each position as their max,
            i.e. how many output gradients each position receives (0: never any).
        grad: (C, H, W) dScore/d(input) that actually arrived at the layer's input when
            the class score was back-propagated.
    """

    name: str
    input: np.ndarray
    count: np.ndarray
    grad: np.ndarray


def maxpool_routing(model: Layer, x: Any, target_class: int | None = None
                    ) -> list[PoolRouting]:
    """For one image ``x`` (C, H, W), the routing of every MaxPool2d layer of ``model``,
    in forward order. ``target_class`` (default: the predicted one) picks the class
    score whose gradient fills ``grad``."""
    batch, single = _as_batch(x)
    if not single and len(batch) != 1:
        raise ValueError(f"maxpool_routing: expected one image, got a batch of {len(batch)}")
    pools = [(name, layer) for name, layer in leaf_layers(model) if isinstance(layer, MaxPool2d)]
    input_grads: dict[str, np.ndarray] = {}
    back_hooks = []
    with eval_mode(model, gradients=True), capture_outputs(pools) as seen:
        for name, layer in pools:
            def keep(_layer: Layer, _grad: np.ndarray, dx: np.ndarray, name: str = name) -> None:
                input_grads[name] = dx
            back_hooks.append(install(layer, "backward", keep))
        try:
            logits = model.forward(batch)
            upstream = _score_gradient(logits, target_class)
            model.backward(upstream)
        finally:
            for hook in reversed(back_hooks):
                remove(hook)

    routes = []
    for name, layer in pools:
        pool_in, pool_out = seen[name]
        # The layer's own backward on a gradient of ones counts, at each input position,
        # the windows whose max it is. A copy, so the model's layer keeps no cache.
        probe = layer.copy().eval().gradients_in_eval(True)
        probe.forward(pool_in)
        count = probe.backward(np.ones_like(pool_out))
        routes.append(PoolRouting(name, pool_in[0], np.rint(count[0]).astype(np.int64),
                                  input_grads[name][0]))
    return routes
