"""The training loop: forward, loss, backward, update, over mini-batches and epochs.

The command line and user code share these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .diagnose import find_non_finite
from .layers.base import Layer, backward_parameters_only
from .layers.dropout import Dropout
from .losses import CrossEntropyLoss, Loss, NLLLoss
from .random import generator
from .utils.clip_grad import clip_grad_norm_


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite; names the epoch and step."""


@dataclass
class History:
    """Per-epoch metrics of ``fit``: lists indexed by epoch (accuracy only for
    classification losses; ``val_*`` only when validation data was given)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return {k: v for k, v in vars(self).items() if v}


def _check_xy(X: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"{where}: expected X with a leading batch axis (N, ...), got shape {X.shape}")
    if len(X) != len(y):
        raise ValueError(f"{where}: X has {len(X)} samples but y has {len(y)}")
    return X, y


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays of consecutive mini-batches over ``n`` samples, shuffled when ``rng``
    is given. The last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_step(model: Layer, loss_fn: Loss, optimizer: Any, xb: np.ndarray, yb: np.ndarray,
               clip_grad_norm: float | None = None) -> tuple[float, np.ndarray]:
    """One step of the four-step loop; returns (loss, predictions of the batch).
    ``clip_grad_norm``: the gradients' total L2 norm is clipped to it between backward
    and update (``chainrule.utils.clip_grad_norm_``); None: no clipping.

    A non-finite loss returns at once, before backward and update: the weights stay
    those that produced it and the layers keep their caches, for ``find_non_finite``."""
    optimizer.zero_grad()
    out = model.forward(xb)                 # 1. forward
    loss = loss_fn(out, yb)                 # 2. loss
    if not math.isfinite(loss):
        return loss, out
    # 3. backward (chain rule, layer by layer), without the data's own gradient
    backward_parameters_only(model, loss_fn.backward())
    if clip_grad_norm is not None:
        clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()                        # 4. update
    return loss, out


def _seed_dropout(model: Layer, rng: np.random.Generator) -> None:
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = np.random.default_rng(rng.integers(2**63))


def _is_classification(loss_fn: Loss) -> bool:
    return isinstance(loss_fn, (CrossEntropyLoss, NLLLoss))


def _class_hits(out: np.ndarray, y: np.ndarray, loss_fn: Loss) -> tuple[int, int]:
    """(correct, counted) predictions of a classifier: the argmax over the class axis 1
    against the target class, per sample or per pixel for (N, C, d1, ...) outputs.
    Probability targets count their most likely class; targets equal to the loss's
    ``ignore_index`` are not counted (as the loss ignores them)."""
    y = np.asarray(y)
    if y.shape == out.shape:                    # class probabilities (N, C, ...)
        y = y.argmax(axis=1)
    kept = y != getattr(loss_fn, "ignore_index", None)
    return int(np.sum((out.argmax(axis=1) == y) & kept)), int(np.sum(kept))


def _check_reduces(loss_fn: Loss, where: str) -> None:
    if getattr(loss_fn, "reduction", "mean") == "none":
        raise ValueError(f"{where}: {loss_fn!r} returns one loss per element; {where} needs "
                         "a loss that reduces them to one number (reduction='mean' or 'sum')")


def fit(model: Layer, loss_fn: Loss, optimizer: Any, train: tuple[Any, Any], epochs: int = 1,
        batch_size: int = 32, val: tuple[Any, Any] | None = None, shuffle: bool = True,
        seed: int | None = 0, scheduler: Any = None,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        clip_grad_norm: float | None = None) -> History:
    """Train ``model`` for ``epochs`` passes over ``train = (X, y)``.

    Each step: forward, loss, backward, optimizer step. ``seed`` fixes the shuffling and
    the dropout masks (a per-run Generator; the global NumPy state is never touched), so
    the same seed and initial weights give the same weights (``seed=None``: the library
    generator of ``chainrule.manual_seed``, or OS entropy without it). ``clip_grad_norm``
    clips the gradients' total L2 norm before each update (None: no clipping; see
    ``chainrule.utils.clip_grad_norm_``). ``scheduler.step()`` runs
    once per epoch. ``on_batch(epoch, step, loss)`` and ``on_epoch(epoch, metrics)`` are
    optional callbacks (progress bars, logging).

    Returns a ``History`` with per-epoch mean training loss (and accuracy for
    classification), plus ``val_loss``/``val_accuracy`` when ``val`` is given.

    Raises ``NonFiniteLossError`` naming the epoch and step when the loss becomes NaN/Inf,
    and the first layer whose output or gradient did (see ``chainrule.diagnose``); that
    step is not applied, so the model keeps the last finite weights.
    """
    X, y = _check_xy(*train, "fit")
    _check_reduces(loss_fn, "fit")
    if epochs < 0:
        raise ValueError(f"fit: epochs must be >= 0, got {epochs}")
    rng = generator(seed)
    _seed_dropout(model, rng)
    classify = _is_classification(loss_fn)
    history = History()
    for epoch in range(epochs):
        model.train()
        total_loss, correct, counted, seen = 0.0, 0, 0, 0
        for step, idx in enumerate(batches(len(X), batch_size, rng if shuffle else None)):
            loss, out = train_step(model, loss_fn, optimizer, X[idx], y[idx], clip_grad_norm)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower the "
                    f"learning rate or check the data. Diagnosis: "
                    f"{find_non_finite(model, loss_fn, X[idx], y[idx])}")
            # An average over the batch ("mean", KLDivLoss's "batchmean"), weighed by its size.
            total_loss += loss if loss_fn.reduction == "sum" else loss * len(idx)
            if classify:
                hits, kept = _class_hits(out, y[idx], loss_fn)
                correct, counted = correct + hits, counted + kept
            seen += len(idx)
            if on_batch is not None:
                on_batch(epoch, step, loss)
        history.loss.append(total_loss / max(seen, 1))
        if classify:
            history.accuracy.append(correct / max(counted, 1))
        if val is not None:
            metrics = evaluate(model, *val, loss_fn=loss_fn, batch_size=max(batch_size, 256))
            history.val_loss.append(metrics["loss"])
            if classify:
                history.val_accuracy.append(metrics["accuracy"])
        if scheduler is not None:
            scheduler.step()
        if on_epoch is not None:
            on_epoch(epoch, {k: v[-1] for k, v in history.as_dict().items()})
    return history


def predict(model: Layer, X: Any, batch_size: int = 256) -> np.ndarray:
    """Model outputs for ``X`` in eval mode, computed in batches (the model's mode is
    restored afterwards)."""
    X = np.asarray(X)
    was_training = model.training
    model.eval()
    try:
        outputs = [model.forward(X[idx]) for idx in batches(len(X), batch_size)]
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: X holds no samples")
    return np.concatenate(outputs, axis=0)


def evaluate(model: Layer, X: Any, y: Any, loss_fn: Loss | None = None,
             batch_size: int = 256) -> dict[str, float]:
    """Loss (cross-entropy unless ``loss_fn`` is given) and, for classification,
    accuracy of ``model`` on (X, y) in eval mode."""
    X, y = _check_xy(X, y, "evaluate")
    loss_fn = loss_fn if loss_fn is not None else CrossEntropyLoss()
    _check_reduces(loss_fn, "evaluate")
    out = predict(model, X, batch_size)
    loss = loss_fn(out, y)
    loss_fn._cache = None  # no backward follows; drop the cached softmax
    metrics = {"loss": loss}
    if _is_classification(loss_fn):
        hits, kept = _class_hits(out, y, loss_fn)
        metrics["accuracy"] = hits / kept if kept else float("nan")
    return metrics
