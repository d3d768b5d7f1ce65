"""Validation of layer hyper-parameters: every bad value becomes a ValueError/TypeError
that names the layer, the argument, what was expected and what came."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def to_pair(value: Any, name: str, layer: str, minimum: int) -> tuple[int, int]:
    """Turn an int or a pair of ints into a pair, each at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return pair


def to_single(value: Any, name: str, layer: str, minimum: int) -> int:
    """Turn an int, or a 1-tuple or 1-list of an int (torch's 1-D layers take ``(3,)``
    too), into an int at least ``minimum``."""
    item = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int or a 1-tuple of an int, got {value!r}")
    if item < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return int(item)


def positive_int(value: Any, name: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{layer}: {name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{layer}: {name} must be >= 1, got {value!r}")
    return value


def finite_real(value: Any, name: str, layer: str, expected: str = "a real number") -> float:
    """A finite real number (NumPy scalars too, never a bool) as a Python float;
    ``expected`` is how the TypeError names what was expected."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: {name} must be {expected}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{layer}: {name} must be finite, got {value!r}")
    return value
