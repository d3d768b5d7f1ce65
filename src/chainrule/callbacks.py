"""Callbacks: small objects that plug into ``chainrule.fit``, the one training loop.

The hooks and names are Keras' (``keras.callbacks``): a ``Callback`` overrides any of

============================================  =============================================
``on_train_begin(logs)``                      once, before the first step (after a resume
                                              has restored the run)
``on_epoch_begin(epoch, logs)``               before the epoch's first step (also for a
                                              resumed mid-epoch checkpoint)
``on_batch_begin(batch, logs)``               before each step; ``batch`` is the step's
                                              index within its epoch
``on_batch_end(batch, logs)``                 after each step: ``logs = {"loss": float,
                                              "size": samples in the batch}``
``on_epoch_end(epoch, logs)``                 after an epoch and its validation: ``logs``
                                              holds ``loss`` (and ``accuracy``, ``val_*``),
                                              ``lr`` and ``time_s``
``on_train_end(logs)``                        once, after the last epoch or a stop
``on_interrupt(logs)``                        chainrule's own: after Ctrl-C, between two
                                              steps, before ``fit`` raises ``Interrupted``
============================================  =============================================

Epochs are counted from 0 in the hooks, as in Keras. Each callback sees the running loop
as ``self.loop`` (a ``chainrule.train.FitLoop``: ``model``, ``optimizer``,
``epoch``, ``step``, ``history``, ...) and ``self.model``; it stops training by setting
``self.model.stop_training = True`` as in Keras, or ``self.loop.stop_training = True``,
which leaves nothing on the model (``fit`` stops after that step or epoch).

A callback whose state must survive a resume returns it from ``state_dict()`` (JSON
types only); ``ModelCheckpoint`` saves it and ``fit(resume=...)`` hands it back to
``load_state_dict``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import write_atomically

if TYPE_CHECKING:  # the loop imports this module; the type only for annotations
    from .train import FitLoop

__all__ = ["Callback", "CallbackList", "History", "ModelCheckpoint", "EarlyStopping",
           "CSVLogger", "TerminateOnNaN", "ProgressBar", "LRSchedulerStep", "LambdaCallback"]

Logs = Mapping[str, Any]
# The keys of an epoch's logs that are not metrics (History.as_dict leaves them out).
NOT_METRICS = ("epoch", "lr", "time_s")


class Callback:
    """Base class: every hook does nothing. ``self.loop`` and ``self.model`` are set by
    ``fit`` before ``on_train_begin``.

    ``order`` sorts the callbacks of one ``fit`` call (stable, lowest first): History
    (-20) and TerminateOnNaN (-5) first, then user callbacks (0), the learning-rate step
    (5), and what writes files last (10), so that a checkpoint holds the state the next
    step starts from.
    """

    order: int = 0
    # Data-parallel training (fit(distributed=True)) calls this callback on rank 0 only:
    # for what writes files or the terminal.
    rank_zero_only: bool = False
    loop: "FitLoop"
    model: Any

    def set_loop(self, loop: "FitLoop") -> None:
        self.loop = loop
        self.model = loop.model

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_interrupt(self, logs: Logs | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any] | None:
        """What a resume needs to continue this callback exactly (None: nothing)."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class CallbackList:
    """The callbacks of one ``fit`` call, sorted by ``order``; calls a hook on each."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks[{i}] is a {type(cb).__name__}, expected a "
                                "chainrule.callbacks.Callback (wrap plain functions in "
                                "LambdaCallback)")
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)
        self.rank = 0   # data-parallel: this process's rank (see Callback.rank_zero_only)

    def __iter__(self):
        return iter(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            if self.rank == 0 or not cb.rank_zero_only:
                getattr(cb, hook)(*args)

    def keys(self) -> list[str]:
        """A name per callback for its saved state: the class name, with ``.1``, ``.2``
        for a second, third callback of the same class (in the order given)."""
        seen: dict[str, int] = {}
        names = []
        for cb in self.callbacks:
            name = type(cb).__name__
            names.append(name if name not in seen else f"{name}.{seen[name]}")
            seen[name] = seen.get(name, 0) + 1
        return names

    def state_dict(self) -> dict[str, Any]:
        states = {key: cb.state_dict() for key, cb in zip(self.keys(), self.callbacks)}
        return {k: v for k, v in states.items() if v is not None}

    def load_state_dict(self, states: Mapping[str, Any]) -> None:
        for key, cb in zip(self.keys(), self.callbacks):
            if key in states:
                cb.load_state_dict(states[key])


# ---------------------------------------------------------------------- history

class History(Callback):
    """The per-epoch logs of the whole run, also across resumes: ``fit`` returns it.

    ``rows`` holds one dict per epoch (``epoch`` counted from 1, the metrics, ``lr``
    and ``time_s``); ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy`` are the
    per-epoch lists (empty when the run had no such metric), ``as_dict()`` the metrics by
    name, as Keras' ``history.history``.
    """

    order = -20  # first: every other callback's on_epoch_end sees the epoch recorded

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def _column(self, key: str) -> list[Any]:
        return [row[key] for row in self.rows if row.get(key) is not None]

    loss = property(lambda self: self._column("loss"))
    accuracy = property(lambda self: self._column("accuracy"))
    val_loss = property(lambda self: self._column("val_loss"))
    val_accuracy = property(lambda self: self._column("val_accuracy"))
    lr = property(lambda self: self._column("lr"))

    @property
    def epoch(self) -> list[int]:
        """The epochs recorded, counted from 0 (as Keras' ``History.epoch``)."""
        return [row["epoch"] - 1 for row in self.rows]

    def as_dict(self) -> dict[str, list[float]]:
        keys = dict.fromkeys(k for row in self.rows for k in row if k not in NOT_METRICS)
        return {k: col for k in keys if (col := self._column(k))}

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.rows.append({"epoch": epoch + 1, **(logs or {})})

    def state_dict(self) -> None:
        return None  # saved by the loop itself as the checkpoint's "history"

    def __repr__(self) -> str:
        return f"History({self.as_dict()})"


# ---------------------------------------------------------------------- monitoring

def _monitor_mode(owner: str, monitor: str, mode: str) -> Callable[[float, float], bool]:
    """``better(a, b)``: whether ``a`` improves on ``b`` for ``monitor`` in ``mode``
    ("auto": larger is better for accuracies, smaller otherwise, as in Keras)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


def _monitored(owner: str, monitor: str, logs: Logs | None) -> float:
    value = (logs or {}).get(monitor)
    if value is None:
        available = ", ".join(k for k, v in (logs or {}).items() if v is not None)
        raise KeyError(f"{owner}: monitor {monitor!r} is not in the epoch's logs (it has: "
                       f"{available}); monitor 'val_*' only with validation data")
    return float(value)


class ModelCheckpoint(Callback):
    """Save a resumable checkpoint (atomically: see ``chainrule.save``) after every epoch,
    or only when ``monitor`` improved (``save_best_only``).

    The file holds the weights, the optimizer's state and, in its metadata, the loop's
    position (epoch, step), history, data-loader and Dropout random states and every
    callback's ``state_dict()``: ``fit(resume=filepath)`` continues from it bit for bit.
    On Ctrl-C, a checkpoint that is not ``save_best_only`` is written mid-epoch too.

    Args:
        filepath: the file; may hold ``{epoch}`` (from 1) and log keys, as in Keras
            (``"runs/ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``).
        monitor: the log key ``save_best_only`` compares.
        save_best_only: save only epochs where ``monitor`` improved.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        metadata: extra metadata for each file: a dict, or a callable returning one
            (called at each save).
    """

    order = 10

    rank_zero_only = True

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto",
                 metadata: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
                 ) -> None:
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self._better = _monitor_mode("ModelCheckpoint", monitor, mode)
        self.metadata = metadata
        self.best: float | None = None
        self.best_epoch: int | None = None   # counted from 1
        self.last_path: Path | None = None
        self._saved_at: tuple[int, int] | None = None  # the loop's (epoch, step) then

    def _path(self, epoch: int, logs: Logs | None) -> Path:
        fields = {k: v for k, v in (logs or {}).items() if v is not None}
        return Path(self.filepath.format(epoch=epoch, **fields))

    def _save(self, path: Path) -> Path:
        extra = self.metadata() if callable(self.metadata) else (self.metadata or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last_path = self.loop.save(path, **extra)
        self._saved_at = (self.loop.epoch, self.loop.step)
        return self.last_path

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            if self.best is not None and not self._better(value, self.best):
                return
            self.best, self.best_epoch = value, epoch + 1
        self._save(self._path(epoch + 1, logs))

    def on_interrupt(self, logs: Logs | None = None) -> None:
        # Between epochs the epoch's own checkpoint is already this state.
        if not self.save_best_only and self._saved_at != (self.loop.epoch, self.loop.step):
            self._save(self._path(self.loop.epoch + 1, {}))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' arguments).

    Args:
        monitor: the log key to watch (``"val_loss"``, ``"val_accuracy"``, ``"loss"``).
        min_delta: an improvement must exceed this much.
        patience: epochs without improvement before stopping.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        baseline: a value the monitor must improve on (None: the first epoch's).
        restore_best_weights: at the stop, put back the weights of the best epoch (of
            this ``fit`` call: the weights are kept in memory, not in checkpoints).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.baseline = monitor, patience, baseline
        self.min_delta = abs(float(min_delta))
        self._better = _monitor_mode("EarlyStopping", monitor, mode)
        self._sign = 1.0 if self._better(1.0, 0.0) else -1.0  # +1: larger is better
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best: float | None = baseline
        self.best_weights: dict[str, np.ndarray] | None = None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = _monitored("EarlyStopping", self.monitor, logs)
        if self.best is None or self._better(value - self._sign * self.min_delta, self.best):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = {k: v.copy() for k, v in self.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.loop.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.wait, self.best = state["wait"], state["best"]


# ---------------------------------------------------------------------- logging

class CSVLogger(Callback):
    """Write one CSV row per epoch to ``filename``.

    Unlike Keras' (which appends), the whole file is rewritten atomically from the run's
    history after every epoch: a reader never sees half a row, and after a resume it holds
    the epochs of the earlier run too.

    Args:
        filename: the CSV file.
        separator: the field separator.
        columns: the header: a list of log keys, or a mapping ``{header: log key}`` (e.g.
            ``{"train_loss": "loss"}``). None: ``epoch``, then every key the logs hold.
            A value the logs lack is written as an empty field.
    """

    order = 10

    rank_zero_only = True

    def __init__(self, filename: str | os.PathLike, separator: str = ",",
                 columns: Sequence[str] | Mapping[str, str] | None = None) -> None:
        self.filename = Path(filename)
        self.separator = separator
        self.columns = (dict(columns) if isinstance(columns, Mapping)
                        else None if columns is None else {c: c for c in columns})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        rows = self.loop.history.rows
        columns = self.columns or {k: k for k in dict.fromkeys(k for r in rows for k in r)}
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=self.separator)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(key) is None else row[key]
                             for key in columns.values()])
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.filename, text.getvalue().encode())


class TerminateOnNaN(Callback):
    """Stop at the first non-finite loss, naming the first layer whose output or
    gradient turned non-finite (``chainrule.diagnose.find_non_finite``).

    The step that produced it is not applied, so the model keeps the last finite weights.
    ``fit`` adds one with ``raise_error=True`` when none is given: a non-finite loss
    raises ``NonFiniteLossError`` (epoch and step named). A non-finite validation loss
    does the same after its epoch.

    Args:
        raise_error: raise ``NonFiniteLossError``; False: print the message to stderr and
            stop training (Keras' behaviour).
        advice: the sentence after "lower" ... in the message.
        epilogue: a callable returning a sentence added at the end (e.g. where the last
            good checkpoint is).
    """

    order = -5  # before anything records the step

    def __init__(self, raise_error: bool = True,
                 advice: str = "lower the learning rate or check the data",
                 epilogue: Callable[[], str] | None = None) -> None:
        self.raise_error, self.advice, self.epilogue = raise_error, advice, epilogue

    def _stop(self, message: str) -> None:
        if self.epilogue is not None:
            message += self.epilogue()
        if self.raise_error:
            from .train import NonFiniteLossError
            raise NonFiniteLossError(message)
        print(f"TerminateOnNaN: {message}", file=sys.stderr)
        self.loop.stop_training = True

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        from .diagnose import find_non_finite
        xb, yb = self.loop.batch
        diagnosis = find_non_finite(self.model, self.loop.loss_fn, xb, yb)
        self._stop(f"the loss became {loss} at epoch {self.loop.epoch + 1}, step {batch + 1}; "
                   f"{self.advice}. Diagnosis: {diagnosis}")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        val = (logs or {}).get("val_loss")
        if val is not None and not math.isfinite(val):
            self._stop(f"the validation loss became {val} after epoch {epoch + 1}")


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr: running loss, accuracy and images per second.

    Args:
        leave: keep each finished epoch's bar on screen.
        file: where to draw (default ``sys.stderr``).
    """

    rank_zero_only = True

    def __init__(self, leave: bool = False, file: Any = None) -> None:
        self.leave, self.file = leave, file
        self.bar: Any = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        from tqdm import tqdm
        loop = self.loop
        self.bar = tqdm(total=loop.steps_per_epoch, initial=loop.step,
                        desc=f"epoch {epoch + 1}/{loop.epochs}", unit="batch",
                        leave=self.leave, file=self.file or sys.stderr, dynamic_ncols=True)

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        sums = self.loop.sums
        seen = max(sums["seen"], 1)
        postfix = {"loss": f"{sums['loss'] / seen:.4f}"}
        if self.loop.classify:
            postfix["acc"] = f"{sums['correct'] / max(sums['counted'], 1):.2%}"
        postfix["img/s"] = f"{sums['seen'] / max(self.loop.elapsed(), 1e-9):.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._close()

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._close()

    def on_interrupt(self, logs: Logs | None = None) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the final numbers, even when the epoch took under mininterval
            self.bar.close()
            self.bar = None


class LRSchedulerStep(Callback):
    """Step a learning-rate scheduler after every epoch or after every batch.

    Args:
        scheduler: a ``chainrule.optim`` scheduler. A ``ReduceLROnPlateau`` is stepped
            with the epoch's ``monitor`` value.
        interval: ``"epoch"`` or ``"batch"`` (OneCycleLR, warm-up schedules).
        monitor: the log key a ``ReduceLROnPlateau`` reacts to.
    """

    # After the callbacks that record the step (they see the lr it was taken with),
    # before those that save it (a checkpoint holds the lr of the next step).
    order = 5

    def __init__(self, scheduler: Any, interval: str = "epoch", monitor: str = "val_loss"
                 ) -> None:
        from .optim import ReduceLROnPlateau
        if interval not in ("epoch", "batch"):
            raise ValueError(f"LRSchedulerStep: interval must be 'epoch' or 'batch', got "
                             f"{interval!r}")
        self.plateau = isinstance(scheduler, ReduceLROnPlateau)
        if self.plateau and interval == "batch":
            raise ValueError("LRSchedulerStep: a ReduceLROnPlateau reacts to an epoch's "
                             "metric; step it with interval='epoch'")
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.interval != "epoch":
            return
        if self.plateau:
            self.scheduler.step(_monitored("LRSchedulerStep", self.monitor, logs))
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(dict(state))


class LambdaCallback(Callback):
    """A callback from plain functions, with Keras' arguments: ``on_epoch_begin(epoch,
    logs)``, ``on_epoch_end(epoch, logs)``, ``on_batch_begin(batch, logs)``,
    ``on_batch_end(batch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_begin=None,
                 on_batch_end=None, on_train_begin=None, on_train_end=None) -> None:
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_batch_begin=on_batch_begin, on_batch_end=on_batch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end)
        for name, fn in given.items():
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"LambdaCallback: {name} must be callable, got "
                                    f"{type(fn).__name__}")
                setattr(self, name, fn)
