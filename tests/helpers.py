"""Shared test helpers: relative error, parity of a chainrule layer with torch.nn,
finite differences, and the grids of cases the layer tests parametrize over."""

from __future__ import annotations

import math

import numpy as np
import pytest

import chainrule as cr

# Unit roundoff of float32 (2**-24): the relative error of one rounded operation.
FLOAT32_UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2


def float32_tolerance(terms: int, layers: int = 1, factor: float = 16.0) -> float:
    """The relative error (``rel_error``: against the largest magnitude) that float32
    rounding explains when two implementations compute the same result in a different
    order: ``factor * u * layers * sqrt(terms)``, for ``layers`` chained steps that
    each sum at most ``terms`` rounded products.

    sqrt(terms) is the probabilistic growth of rounding errors in a sum (Higham and
    Mary, 2019: the worst case is ``terms * u``, the typical one ``sqrt(terms) * u``);
    ``factor`` covers the constants (a product and a sum per term, both sides rounding,
    transcendental functions within a few ulps). ``float32_tolerance(10_000)`` is 1e-4,
    the default of ``assert_torch_parity`` for float32.
    """
    return factor * FLOAT32_UNIT_ROUNDOFF * layers * math.sqrt(max(terms, 1))


TOLERANCE = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): float32_tolerance(10_000)}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|a|, max|b|, tiny): a scale-aware relative error."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-30)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


class _WorstParity:
    """The largest relative error each layer class showed in ``assert_torch_parity``, per
    dtype, over a test run: ``CHAINRULE_PARITY_REPORT=path pytest tests/layers`` writes
    them as a Markdown table (tests/conftest.py), the measured figures behind the
    catalog's claims."""

    def __init__(self) -> None:
        self.worst: dict[tuple[str, str], tuple[float, str]] = {}

    def record(self, layer, dtype: np.dtype, errors: dict[str, float]) -> None:
        key = (type(layer).__name__, np.dtype(dtype).name)
        what, error = max(errors.items(), key=lambda item: item[1])
        if key not in self.worst or error > self.worst[key][0]:
            shown = type(layer).__name__ if layer._children else repr(layer)  # one line
            self.worst[key] = (error, f"{what} of {shown}")

    def table(self) -> str:
        names = sorted({name for name, _ in self.worst})
        lines = ["| layer | worst float64 | worst float32 | float32 case |", "| --- | --- | --- | --- |"]
        for name in names:
            f64 = self.worst.get((name, "float64"), (float("nan"), ""))
            f32 = self.worst.get((name, "float32"), (float("nan"), ""))
            lines.append(f"| {name} | {f64[0]:.1e} | {f32[0]:.1e} | {f32[1]} |")
        return "\n".join(lines) + "\n"


WORST_PARITY = _WorstParity()


def copy_torch_weights(layer, torch_module) -> None:
    """Load a torch module's state dict into a chainrule layer, the way users do."""
    layer.load_state_dict({k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()})


def assert_torch_parity(layer, torch_module, x: np.ndarray, dtype=np.float64, seed: int = 0,
                        copy_weights: bool = True, terms: int | None = None) -> dict[str, float]:
    """Check forward output, input gradient and every parameter gradient of ``layer``
    against ``torch_module`` on input ``x`` with a random upstream gradient.

    Both are cast to ``dtype``; weights are copied from torch into chainrule. Returns
    the relative errors by name; fails with every error in the message. The float64
    tolerance is 1e-9; the float32 one ``float32_tolerance(terms)``, ``terms`` being the
    most terms any sum of the layer's forward or backward adds (10,000 when not given).
    """
    import torch

    dtype = np.dtype(dtype)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    torch_module = torch_module.to(torch_dtype)
    layer.to(dtype)
    if copy_weights:
        copy_torch_weights(layer, torch_module)
    x = np.asarray(x, dtype=dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_module(xt)
    upstream = np.random.default_rng(seed).standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(upstream))

    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(upstream)
    errors = {"forward": rel_error(y, yt.detach().numpy()),
              "input_grad": rel_error(dx, xt.grad.numpy())}
    torch_params = dict(torch_module.named_parameters())
    ours = dict(layer.named_parameters())
    assert set(ours) == set(torch_params), f"parameter names differ: {sorted(ours)} vs {sorted(torch_params)}"
    for name, p in ours.items():
        errors[f"{name}.grad"] = rel_error(p.grad, torch_params[name].grad.numpy())
    WORST_PARITY.record(layer, dtype, errors)
    tol = TOLERANCE[dtype] if terms is None or dtype == np.float64 else float32_tolerance(terms)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{layer!r} differs from torch beyond {tol} ({dtype}): {errors}"
    assert y.dtype == dtype and dx.dtype == dtype, f"dtype changed: {y.dtype}, {dx.dtype}"
    return errors


def assert_gradcheck(layer, x: np.ndarray, tol: float) -> float:
    """``chainrule.gradcheck`` of ``layer`` at ``x`` (float64 central differences against
    a random upstream gradient) below ``tol``; returns the relative error."""
    error = cr.gradcheck(layer, x)
    assert error < tol, f"{layer!r} on {np.shape(x)}: gradcheck relative error {error:.2e}"
    return error


# ---------------------------------------------------------------- grids of cases

# Both float dtypes, as a parametrize mark: ``@each_dtype`` gives a test its ``dtype``.
each_dtype = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])


def params(cases: dict) -> list:
    """``{id: (keyword arguments, input shape)}`` as pytest parameters ``kwargs, shape``."""
    return [pytest.param(kwargs, shape, id=name) for name, (kwargs, shape) in cases.items()]


def pair(value) -> tuple[int, ...]:
    """An int as (value, value); a tuple or list as a tuple."""
    return (value, value) if isinstance(value, int) else tuple(value)


# ---------------------------------------------------------------- Ctrl-C in the loop
def interrupt_after(monkeypatch, steps: int) -> None:
    """Press "Ctrl-C" right after the ``steps``-th training step of ``fit``'s loop (which
    the runner and the README script run too): a real SIGINT to this process
    (``monkeypatch.undo()`` restores ``train_step``)."""
    import os
    import signal

    from chainrule import train as train_loop

    calls = {"n": 0}
    real = train_loop.train_step

    def step_then_interrupt(*args):
        out = real(*args)
        calls["n"] += 1
        if calls["n"] == steps:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(train_loop, "train_step", step_then_interrupt)
