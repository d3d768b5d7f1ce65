"""gradcheck: verify a layer's hand-written backward against central finite differences."""

from __future__ import annotations

import copy

import numpy as np

from .layers.base import Layer


def _rng_states(layer: Layer) -> list[tuple[np.random.Generator, dict]]:
    """Every Generator a layer (or a child) draws from, with its current state, so each
    evaluation can replay the same dropout mask."""
    found = []
    for module in layer.modules():
        for value in vars(module).values():
            if isinstance(value, np.random.Generator):
                found.append((value, copy.deepcopy(value.bit_generator.state)))
    return found


def gradcheck(layer: Layer, x: np.ndarray, eps: float = 1e-6, seed: int = 0,
              max_elements: int | None = None) -> float:
    """Compare ``layer.backward`` with central finite differences, in float64.

    The layer is deep-copied and cast to float64 (the caller's layer is untouched). The
    scalar checked is ``f(x) = sum(layer(x) * g)`` for a fixed random upstream gradient
    ``g``, so every output element contributes. For each input element and each parameter
    element, ``(f(v + eps) - f(v - eps)) / (2 eps)`` is compared with the analytic
    gradient.

    Args:
        layer: any Layer (in its current train/eval mode); a layer with several outputs
            (a list, as a ``Graph`` or ``Split`` returns) gets one random upstream
            gradient per output.
        x: an input batch, cast to float64; a list of batches for a layer that takes
            several inputs (a ``Graph`` with several inputs, ``Add``, ``Concat``).
        eps: the finite-difference step.
        seed: seed of the random upstream gradient.
        max_elements: check at most this many randomly chosen entries per array (None:
            all of them; each costs two forward passes).
    Returns:
        The worst relative error over the input and every parameter:
        ``max|analytic - numeric| / scale`` with ``scale = max(max|analytic|, max|numeric|)``
        of that array, floored at 1% of the largest gradient in the check (so an array
        whose true gradient is zero is not judged on rounding noise alone). Values
        around 1e-7 or below mean the backward is right; 1e-2 means it is wrong.
    """
    layer = copy.deepcopy(layer).to(np.float64)
    layer.gradients_in_eval(True)  # backward must work in eval mode too
    several = isinstance(x, (list, tuple))
    xs = [np.array(a, dtype=np.float64) for a in (x if several else [x])]
    rng = np.random.default_rng(seed)
    states = _rng_states(layer)
    buffers = [(module, name, getattr(module, name).copy())
               for module in layer.modules() for name in module._buffers]

    def evaluate() -> list[np.ndarray]:
        for generator, state in states:
            generator.bit_generator.state = copy.deepcopy(state)
        # Buffers (BatchNorm running stats) are reset so each evaluation is the same function.
        for module, name, value in buffers:
            setattr(module, name, value.copy())
        return layer.forward(xs if several else xs[0])

    first = evaluate()
    listed = isinstance(first, (list, tuple))   # a layer that returns a list takes one back
    outs = list(first) if listed else [first]
    upstream = [rng.standard_normal(o.shape) for o in outs]
    layer.zero_grad()
    dx = layer.backward(upstream if listed else upstream[0])
    dxs = dx if several else [dx]
    analytic = {f"input {i}": np.array(d, dtype=np.float64) for i, d in enumerate(dxs)}
    for name, p in layer.named_parameters():
        analytic[name] = p.grad.copy()

    def f() -> float:
        out = evaluate()
        return float(sum(np.sum(o * u) for o, u in zip(out if listed else [out], upstream)))

    targets = [(f"input {i}", a) for i, a in enumerate(xs)]
    targets += [(name, p.data) for name, p in layer.named_parameters()]
    numerics: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, array in targets:
        indices = np.arange(array.size)
        if max_elements is not None and array.size > max_elements:
            indices = rng.choice(array.size, size=max_elements, replace=False)
        numeric = np.empty(len(indices))
        for k, i in enumerate(indices):
            # An index into the array itself: reshape(-1) of a non-contiguous array (a
            # convolution's channel-major output) is a copy, and nudging a copy moves nothing.
            where = np.unravel_index(i, array.shape)
            original = array[where]
            array[where] = original + eps
            plus = f()
            array[where] = original - eps
            minus = f()
            array[where] = original
            numeric[k] = (plus - minus) / (2 * eps)
        numerics[name] = (analytic[name].reshape(-1)[indices], numeric)

    # Each array is compared at its own scale, floored at 1% of the largest gradient of
    # the check: a gradient that is truly zero (a conv bias before BatchNorm) holds only
    # rounding noise, which must not count as a 100% error.
    overall = max(max(np.max(np.abs(a), initial=0.0), np.max(np.abs(n), initial=0.0))
                  for a, n in numerics.values())
    worst = 0.0
    for exact, numeric in numerics.values():
        own = max(np.max(np.abs(exact), initial=0.0), np.max(np.abs(numeric), initial=0.0))
        scale = max(own, 1e-2 * overall, 1e-12)
        worst = max(worst, float(np.max(np.abs(exact - numeric), initial=0.0) / scale))
    return worst
