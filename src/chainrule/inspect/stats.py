"""The statistics the recorder keeps, as plain functions of one array each.

Definitions (tests/inspect checks the recorded values against them, computed there in
plain NumPy):

- ``zero_fraction`` of a ReLU output: the fraction of elements exactly 0. ReLU6 counts
  as a ReLU here: its output is 0 exactly where its input is <= 0, where no gradient
  passes, as for ReLU (its other flat part, at 6, is rare and not a dead unit).
- ``fired_channels`` of a ReLU output (N, C, ...): whether each channel is positive for
  at least one sample and position of the batch. A channel that did not fire is *dead*
  on that batch: no gradient reaches the weights that feed it. (The recorder flags a
  channel only when it stayed dead over several recorded batches: on one small batch,
  a selective fully connected unit can be silent by chance.)
- ``saturation`` of a Sigmoid output: the fraction with ``y < 0.01`` or ``y > 0.99``,
  where the local derivative ``y (1 - y)`` is below 0.0099 (under 4% of its peak 0.25);
  of a Tanh output: the fraction with ``|y| > 0.99``, where ``1 - y**2`` is below 0.0199
  (under 2% of its peak 1).
- ``gradient_ratio``: ``||dL/dx|| at the first layer / ||dL/dx|| at the last layer``
  (L2 norms of each layer's input gradient over the whole batch). Far below 1: the
  gradient vanishes on its way back; far above: it explodes. Flagged outside
  [1/threshold, threshold], by default [1e-3, 1e3]: LeNet-5, the CIFAR CNN and the mini
  ResNet measure between 0.03 and 1.6 at initialization and after training, while an
  8-layer sigmoid MLP gives 1e-7 with the default initialization and 4e-18 with weights
  scaled by 0.05.
"""

from __future__ import annotations

import math

import numpy as np

from ..layers.activation import ReLU, ReLU6, Sigmoid, Tanh
from ..layers.base import Layer

SIGMOID_SATURATION = 0.01   # y < 0.01 or y > 1 - 0.01
TANH_SATURATION = 0.99      # |y| > 0.99
DEFAULT_RATIO_THRESHOLD = 1e3


def activation_kind(layer: Layer) -> str:
    """``"relu"`` (ReLU and ReLU6), ``"sigmoid"``, ``"tanh"`` or ``"other"``: which extra
    statistics apply."""
    if isinstance(layer, (ReLU, ReLU6)):
        return "relu"
    if isinstance(layer, Sigmoid):
        return "sigmoid"
    if isinstance(layer, Tanh):
        return "tanh"
    return "other"


def _flat(y: np.ndarray) -> np.ndarray:
    """All elements of ``y`` as a 1-D view in memory order (no copy for the transposed
    layouts Conv2d returns), for reductions whose result does not depend on order."""
    return y.ravel(order="K")


def moments(y: np.ndarray) -> tuple[float, float]:
    """(mean, std) of all elements, from one sum and one dot product.

    ``E[y^2] - E[y]^2`` rather than ``y.std()``: two fast passes without temporaries
    instead of four, which matters when it runs on every layer of every step. It loses
    precision only when |mean| >> std, where a summary statistic needs none."""
    flat = _flat(y)
    n = max(flat.size, 1)
    mean = float(flat.sum()) / n
    var = float(np.dot(flat, flat)) / n - mean * mean
    return mean, math.sqrt(max(var, 0.0))


def zero_fraction(y: np.ndarray) -> float:
    """Fraction of the elements of ``y`` that are exactly 0."""
    # Counting a bool mask is several times faster than count_nonzero on floats.
    return np.count_nonzero(_flat(y) == 0) / max(y.size, 1)


def saturation(y: np.ndarray, kind: str) -> float | None:
    """Fraction of saturated outputs of a sigmoid or tanh (see the module docstring);
    None for any other kind."""
    flat = _flat(y)
    if kind == "sigmoid":
        hits = np.count_nonzero(flat < SIGMOID_SATURATION) + \
            np.count_nonzero(flat > 1.0 - SIGMOID_SATURATION)
    elif kind == "tanh":
        hits = np.count_nonzero(np.abs(flat) > TANH_SATURATION)
    else:
        return None
    return hits / max(y.size, 1)


def fired_channels(y: np.ndarray) -> np.ndarray:
    """Whether each channel (axis 1) of a ReLU output is positive anywhere in the batch.

    Shape: y (N, C, ...) -> (C,) bool. A 1-D ``y`` is one sample: its elements are the
    units."""
    if y.ndim == 1:
        return y > 0
    # A ReLU output is >= 0, so "fired somewhere" is "the channel's maximum is > 0".
    by_channel = np.moveaxis(y, 1, 0)                       # (C, N, ...)
    if by_channel.flags.c_contiguous:  # Conv2d's layout: one contiguous row per channel
        return by_channel.reshape(len(by_channel), -1).max(axis=1) > 0
    return y.reshape(y.shape[0], y.shape[1], -1).max(axis=2).max(axis=0) > 0


def activation_stats(y: np.ndarray, kind: str, fired: np.ndarray | None = None
                     ) -> dict[str, float | int | None]:
    """Mean, std and, by kind, the ReLU zero fraction and number of dead channels on
    this batch (from ``fired``, see ``fired_channels``) or the sigmoid/tanh saturation
    of one layer output ``y`` (any shape)."""
    relu = kind == "relu"
    if relu and fired is None:
        fired = fired_channels(y)
    mean, std = moments(y)
    return {
        "mean": mean,
        "std": std,
        "zero_fraction": zero_fraction(y) if relu else None,
        "dead_units": int(fired.size - np.count_nonzero(fired)) if relu else None,
        "saturation": saturation(y, kind),
    }


def l2_norm(a: np.ndarray) -> float:
    """The L2 norm of all elements of ``a``, as a Python float.

    The same arithmetic as ``np.linalg.norm(a)`` for a real array (the square root of
    the memory-order vector's dot product with itself) without its argument handling,
    which is most of its cost on the small arrays of every layer of every step."""
    flat = _flat(a)
    return math.sqrt(float(np.dot(flat, flat)))


def gradient_ratio(first: float | None, last: float | None) -> float | None:
    """``first / last`` (see the module docstring); None when either is missing, inf
    when only the last is 0."""
    if first is None or last is None:
        return None
    if last == 0.0:
        return 0.0 if first == 0.0 else float("inf")
    return first / last


def gradient_flags(ratio: float | None, threshold: float = DEFAULT_RATIO_THRESHOLD
                   ) -> dict[str, bool]:
    """``vanishing`` when ``ratio < 1 / threshold``, ``exploding`` when
    ``ratio > threshold``."""
    if threshold <= 1.0:
        raise ValueError(f"gradient_flags: threshold must be > 1, got {threshold!r}")
    if ratio is None:
        return {"vanishing": False, "exploding": False}
    return {"vanishing": ratio < 1.0 / threshold, "exploding": ratio > threshold}
