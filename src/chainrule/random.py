"""The library's random numbers: ``manual_seed`` makes every draw that has no explicit
seed reproducible, as ``torch.manual_seed`` does.

Everything in chainrule that draws random numbers takes an ``rng`` (or ``seed`` or
``generator``) argument: a ``numpy.random.Generator`` or an int seed draws from that,
always. ``None`` means "the library's": layer initialization (``Linear(rng=None)``,
``Conv2d(rng=None)``, ``Layer.reset_parameters()``), ``Dropout(rng=None)``'s masks,
``fit(seed=None)``'s shuffling, ``chainrule.init`` functions with ``generator=None`` and
the model zoo's builders with ``seed=None``.

- After ``manual_seed(s)``, those draws come from one library-owned Generator seeded
  with ``s`` (``np.random.default_rng(s)``), so a script that calls
  ``chainrule.manual_seed(s)`` first gives the same weights bit for bit in every run,
  as long as it makes the same draws in the same order.
- Without ``manual_seed`` (the default), each ``rng=None`` is a fresh Generator from
  OS entropy, as before this module existed: runs differ, and processes forked from
  one another do not share a stream.

NumPy's global random state (``np.random.seed``, ``np.random.rand``) is never read or
written: seeding it does not seed chainrule, and ``manual_seed`` does not change it.
"""

from __future__ import annotations

import operator
from typing import Union

import numpy as np

__all__ = ["manual_seed", "is_seeded", "default_generator", "generator", "new_generator"]

RandomState = Union[np.random.Generator, int, None]

# The library Generator; None until manual_seed is called (then rng=None draws OS entropy).
_GENERATOR: np.random.Generator | None = None


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the library Generator with ``seed`` (a non-negative int) and return it.

    From then on every draw without an explicit seed comes from it. Calling it again
    re-seeds the same Generator object in place (so a reference kept from
    ``default_generator`` follows, as with torch's default generator).
    """
    global _GENERATOR
    if isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"manual_seed: seed must be a non-negative int, got "
                        f"{type(seed).__name__} {seed!r}") from None
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed}")
    if _GENERATOR is None:
        _GENERATOR = np.random.default_rng(seed)
    else:
        _GENERATOR.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    return _GENERATOR


def is_seeded() -> bool:
    """Whether ``manual_seed`` has been called in this process."""
    return _GENERATOR is not None


def default_generator() -> np.random.Generator:
    """The library Generator after ``manual_seed`` (the same object across re-seeds);
    before it, there is none: a fresh Generator from OS entropy, as ``generator(None)``
    (keeping none, so the library's draws and ``is_seeded`` stay as they were)."""
    return generator(None)


def generator(rng: RandomState = None) -> np.random.Generator:
    """The Generator to draw from for an ``rng`` argument: ``np.random.default_rng(rng)``
    for a Generator (itself) or a seed; for None, the library Generator after
    ``manual_seed``, else a fresh one from OS entropy."""
    if rng is None:
        return _GENERATOR if _GENERATOR is not None else np.random.default_rng()
    return np.random.default_rng(rng)


def new_generator(rng: RandomState = None) -> np.random.Generator:
    """Like ``generator``, for an object that keeps its Generator (Dropout's masks):
    for None it is a Generator of its own, seeded from the library Generator after
    ``manual_seed`` (so it is reproducible, yet restoring or re-seeding its state
    leaves the library's alone), else from OS entropy."""
    if rng is None and _GENERATOR is not None:
        return np.random.default_rng(_GENERATOR.integers(2**63))
    return generator(rng)
