"""The training loop: forward, loss, backward, update, over mini-batches and epochs.

``fit`` is the only epoch loop: the command line (``chainrule train``) and user code
both run it, and plug what they need into it as callbacks (``chainrule.callbacks``).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed as dist
from .callbacks import (NOT_METRICS, Callback, CallbackList, History, LambdaCallback,
                        LRSchedulerStep, ModelCheckpoint, ProgressBar, TerminateOnNaN)
from .checkpoint import Checkpoint, load_checkpoint, save
from .data.loader import DataLoader
from .layers.base import Layer, backward_parameters_only
from .layers.dropout import Dropout
from .losses import CrossEntropyLoss, Loss, NLLLoss
from .utils.clip_grad import clip_grad_norm_


class NonFiniteLossError(FloatingPointError):
    """Raised when the loss becomes NaN or infinite; names the epoch and step."""


def _as_samples(value: Any, name: str, where: str) -> np.ndarray:
    """``value`` as a numeric array, or a TypeError that says what came instead (a loss or
    an (X, y) tuple passed where X or y belongs, say)."""
    try:
        array = np.asarray(value)
    except ValueError:
        array = None
    if array is None or array.dtype == object or array.ndim == 0:
        shape = "" if array is None else f" of shape {array.shape}"
        raise TypeError(f"{where}: expected {name} as an array of samples (N, ...), got "
                        f"{type(value).__name__}{shape}")
    return array


def _check_xy(X: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    X = _as_samples(X, "X", where)
    y = _as_samples(y, "y", where)
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


class Interrupted(KeyboardInterrupt):
    """``fit`` stopped on Ctrl-C (SIGINT) between two steps, after every callback's
    ``on_interrupt`` ran (a ``ModelCheckpoint`` writes a resumable checkpoint then).

    Attributes:
        path: the checkpoint written (None when no ModelCheckpoint saves one).
        epoch, step: ``step`` steps into epoch ``epoch`` (from 0); ``step == 0``:
            ``epoch`` epochs done.
    """

    def __init__(self, path: Path | None, epoch: int, step: int) -> None:
        where = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"
        text = (f"saved a resumable checkpoint at {where} in {path}" if path is not None else
                f"stopped at {where}; no checkpoint written (add a callbacks.ModelCheckpoint)")
        super().__init__(f"interrupted; {text}")
        self.path, self.epoch, self.step = path, epoch, step


class _StopFlag:
    requested = False


@contextmanager
def _stop_on_sigint() -> Iterator[_StopFlag]:
    """While inside, the first SIGINT only sets ``flag.requested`` (the loop checks it
    between steps, so weights and optimizer state are never half-updated); a second one
    raises KeyboardInterrupt as usual. Outside the main thread Ctrl-C is left alone."""
    flag = _StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print("\ninterrupt: finishing the current step, then saving a resumable checkpoint "
              "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# The keys of a checkpoint's metadata that hold the loop's state (see FitLoop.save).
STATE_KEYS = ("epoch", "step", "seed", "history", "rng_state", "partial", "dropout_states",
              "callbacks", "world_size")
# History rows of checkpoints written by `chainrule train` before fit ran its loop.
_OLD_ROW_KEYS = {"train_loss": "loss", "train_accuracy": "accuracy"}


class FitLoop:
    """The state of one ``fit`` call; callbacks see it as ``self.loop``.

    Attributes:
        model: the model being trained.
        loss_fn: the loss.
        optimizer: the optimizer.
        loader: the training ``DataLoader``.
        val: the validation data, or None.
        epochs: the loop runs while ``epoch < epochs``.
        callbacks: a ``CallbackList``.
        history: the run's ``callbacks.History``.
        epoch: the epoch running (from 0), or the epochs done between epochs.
        step: steps done in ``epoch``.
        steps_per_epoch: ``len(loader)``.
        batch: ``(x_batch, y_batch)`` of the current step.
        sums: the epoch's running sums (``loss``, ``correct``, ``counted``, ``seen``,
            ``time``, and ``lr``: the lr of the epoch's first step).
        classify: whether accuracy is counted (CrossEntropyLoss, NLLLoss).
        stop_training: set it to stop after the current step.
        world_size: the number of data-parallel processes (1 unless ``distributed``); the
            sums, the batch ``size`` and ``loss`` in the callbacks' logs are then those of
            the global batch (all ranks' samples of the step).
        rank: this process's rank (0 unless ``distributed``).
    """

    def __init__(self, model: Layer, loss_fn: Loss, optimizer: Any, loader: DataLoader,
                 val: Any, epochs: int, callbacks: CallbackList, history: History,
                 clip_grad_norm: float | None, val_batch_size: int,
                 distributed: bool = False, bucket_bytes: int = dist.DEFAULT_BUCKET_BYTES
                 ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.loader, self.val, self.epochs = loader, val, epochs
        self.callbacks, self.history = callbacks, history
        self.clip_grad_norm, self.val_batch_size = clip_grad_norm, val_batch_size
        self.seed = loader.seed
        self.epoch = self.step = 0
        self.steps_per_epoch = len(loader)
        self._stop_training = False
        self.batch: tuple[np.ndarray, np.ndarray] | None = None
        self.classify = _is_classification(loss_fn)
        self.dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
        self.sums: dict[str, float] = {}
        self._started = time.perf_counter()
        self.distributed, self.bucket_bytes = distributed, bucket_bytes
        self.world_size = dist.world_size() if distributed else 1
        self.rank = dist.rank() if distributed else 0
        self._rank_dropout_states: list[Any] | None = None   # gathered on an interrupt
        self._interrupt_agreed = False   # some rank had Ctrl-C by the last step's allreduce

    @property
    def stop_training(self) -> bool:
        """Whether to stop after the current step: set here, or on the model as Keras'
        callbacks do (``self.model.stop_training = True``)."""
        return self._stop_training or bool(self.model.__dict__.get("stop_training", False))

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._stop_training = bool(value)

    def elapsed(self) -> float:
        """Seconds of training in the current epoch (across a resume)."""
        return time.perf_counter() - self._started

    # ------------------------------------------------------------------ checkpoints
    def state_metadata(self) -> dict[str, Any]:
        """The loop's state, as checkpoint metadata (JSON types): with the weights and the
        optimizer state, everything ``fit(resume=...)`` needs to continue bit for bit.

        ``epoch``/``step``: where the next step is; ``rng_state``: the state of the
        Generator it draws from (the loader's; at an epoch boundary the fresh one of the
        next epoch); mid-epoch also ``partial`` (the epoch's running sums) and
        ``dropout_states`` (each Dropout's Generator); ``history``: the rows so far;
        ``callbacks``: each callback's ``state_dict()``.
        """
        meta: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "seed": self.seed,
            "history": self.history.rows, "rng_state": self.loader.state_dict()["rng_state"],
            "callbacks": self.callbacks.state_dict()}
        if self.world_size > 1:
            meta["world_size"] = self.world_size
        if self.step > 0:
            meta["partial"] = {**self.sums, "time": self.elapsed()}
            meta["dropout_states"] = (self._rank_dropout_states if self.world_size > 1 else
                                      [d.rng.bit_generator.state for d in self.dropouts])
        return meta

    def save(self, path: str | os.PathLike, **metadata: Any) -> Path:
        """Write a resumable checkpoint (atomically) of the model, the optimizer and the
        loop's state, plus ``metadata``."""
        return save(self.model, path, optimizer=self.optimizer,
                    **{**self.state_metadata(), **metadata})

    def restore(self, ckpt: Checkpoint, where: str) -> None:
        """Put the model, optimizer, loader, Dropout Generators, history and callbacks
        back as ``ckpt`` (written by ``save``) holds them."""
        meta = ckpt.metadata
        missing = [k for k in ("epoch", "step", "history", "rng_state") if k not in meta]
        if missing:
            raise ValueError(f"fit: resume: {where} holds no training state (no "
                             f"{', '.join(missing)} in its metadata); write resumable "
                             "checkpoints with chainrule.callbacks.ModelCheckpoint")
        if "seed" in meta and meta["seed"] != self.seed:
            raise ValueError(f"fit: resume: {where} was trained with seed {meta['seed']}, this "
                             f"call has seed {self.seed}; the batches would differ")
        try:
            self.model.load_state_dict(ckpt.model.state_dict())
        except (KeyError, ValueError) as err:
            raise ValueError(f"fit: resume: {where} holds weights of another architecture: "
                             f"{err}") from err
        if ckpt.optimizer_state is None or ckpt.optimizer_type != type(self.optimizer).__name__:
            raise ValueError(f"fit: resume: {where} holds no {type(self.optimizer).__name__} "
                             f"state (found {ckpt.optimizer_type})")
        saved_world = int(meta.get("world_size", 1))
        if int(meta["step"]) > 0 and saved_world != self.world_size:
            raise ValueError(f"fit: resume: {where} was written in the middle of an epoch by "
                             f"{saved_world} process(es); this run has {self.world_size}, "
                             "whose shards and steps differ: resume it with "
                             f"{saved_world}, or from a checkpoint at the end of an epoch "
                             "(those resume with any number of processes)")
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
        self.history.rows = [{_OLD_ROW_KEYS.get(k, k): v for k, v in row.items()}
                             for row in meta["history"]]
        self.callbacks.load_state_dict(meta.get("callbacks", {}))
        self.loader.load_state_dict({"epoch": self.epoch, "position": self.step,
                                     "rng_state": meta["rng_state"]})
        if self.step > 0:
            partial = dict(meta["partial"])
            partial.setdefault("counted", partial["seen"])  # older checkpoints: all counted
            self.sums = partial
            states = meta.get("dropout_states") or []
            if self.world_size > 1:   # one list per rank
                states = states[self.rank] if states else []
            for d, state in zip(self.dropouts, states):
                d.rng.bit_generator.state = state

    # ------------------------------------------------------------------ the loop
    def run(self) -> History:
        cbs = self.callbacks
        if "stop_training" in self.model.__dict__:   # left set by an earlier fit, as in Keras
            self.model.stop_training = False
        cbs.call("on_train_begin", {})
        # NumPy's overflow warnings are noise here: a non-finite loss is caught per step.
        with _stop_on_sigint() as flag, np.errstate(over="ignore", invalid="ignore",
                                                    divide="ignore"):
            while self.epoch < self.epochs and not self.stop_training:
                self._begin_epoch()
                cbs.call("on_epoch_begin", self.epoch, {})
                batches = iter(self.loader)  # from the loader's position = self.step
                while self.step < self.steps_per_epoch and not self.stop_training:
                    if self._stop_requested(flag):  # before the next batch is drawn
                        self._interrupt()
                    if self.distributed:
                        self._train_step_distributed(*next(batches), flag.requested)
                    else:
                        self._train_step(*next(batches))
                if self.step < self.steps_per_epoch:  # stopped in the middle of the epoch
                    break
                self._end_epoch()
                if self._stop_requested(flag):
                    self._interrupt()
        cbs.call("on_train_end", {})
        return self.history

    def _stop_requested(self, flag: _StopFlag) -> bool:
        """Whether to stop for Ctrl-C now. Data-parallel: only once every rank knows,
        from the flags that the last step's allreduce carried, so that all ranks stop
        after the same step."""
        return self._interrupt_agreed if self.distributed else flag.requested

    def _begin_epoch(self) -> None:
        self.model.train()
        if self.step == 0:  # (else a resumed mid-epoch checkpoint restored all this)
            self.loader.set_epoch(self.epoch)
            for i, d in enumerate(self.dropouts):
                # Data-parallel: each rank draws its own masks (for its own samples).
                key = [self.seed, self.epoch, i + 1] + ([self.rank] if self.world_size > 1
                                                        else [])
                d.rng = np.random.default_rng(key)
            self.sums = {"loss": 0.0, "correct": 0, "counted": 0, "seen": 0, "time": 0.0,
                         "lr": self.optimizer.param_groups[0]["lr"]}
        self._started = time.perf_counter() - self.sums["time"]

    def _train_step(self, xb: np.ndarray, yb: np.ndarray) -> None:
        batch = self.step
        self.batch = (xb, yb)
        self.callbacks.call("on_batch_begin", batch, {"size": len(xb)})
        loss, out = train_step(self.model, self.loss_fn, self.optimizer, xb, yb,
                               self.clip_grad_norm)
        if math.isfinite(loss):
            s = self.sums
            # An average over the batch ("mean", KLDivLoss's "batchmean"), weighed by its size.
            s["loss"] += loss if self.loss_fn.reduction == "sum" else loss * len(xb)
            if self.classify:
                hits, kept = _class_hits(out, yb, self.loss_fn)
                s["correct"], s["counted"] = s["correct"] + hits, s["counted"] + kept
            s["seen"] += len(xb)
            self.step += 1
        else:  # not applied (see train_step); a TerminateOnNaN raises or stops below
            self.stop_training = True
        self.callbacks.call("on_batch_end", batch, {"loss": loss, "size": len(xb)})

    def _train_step_distributed(self, xb: np.ndarray, yb: np.ndarray, interrupt: bool
                                ) -> None:
        """One data-parallel step: forward and loss on this rank's shard of the batch,
        then one small allreduce of (loss, hits, counted, samples, Ctrl-C), so that
        every rank sees the global batch's loss and agrees whether it is finite and
        whether to stop after this step for a Ctrl-C; then backward, the gradients' bucketed allreduce
        (their mean over the ranks), clipping and the update, the same on every rank."""
        batch = self.step
        self.batch = (xb, yb)
        self.callbacks.call("on_batch_begin", batch, {"size": len(xb)})
        self.optimizer.zero_grad()
        out = self.model.forward(xb)
        loss = self.loss_fn(out, yb)
        summed = self.loss_fn.reduction == "sum"
        hits, kept = _class_hits(out, yb, self.loss_fn) if self.classify else (0, 0)
        local = np.array([loss if summed else loss * len(xb), hits, kept, len(xb),
                          float(interrupt)], np.float64)
        total = dist.allreduce_sum(local)
        self._interrupt_agreed = self._interrupt_agreed or bool(total[4] > 0)
        global_loss = float(total[0] if summed else total[0] / max(total[3], 1))
        if math.isfinite(global_loss):
            # Backward, with each bucket's allreduce started as soon as it is full.
            dist.backward_and_reduce(self.model, self.loss_fn.backward(), self.bucket_bytes)
            if self.clip_grad_norm is not None:
                clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
            self.optimizer.step()
            s = self.sums
            s["loss"] += float(total[0])
            s["correct"], s["counted"] = s["correct"] + int(total[1]), s["counted"] + int(total[2])
            s["seen"] += int(total[3])
            self.step += 1
        else:
            self.stop_training = True
        self.callbacks.call("on_batch_end", batch, {"loss": global_loss, "size": int(total[3])})

    def _end_epoch(self) -> None:
        s = self.sums
        train_time = self.elapsed()
        t0 = time.perf_counter()
        logs: dict[str, Any] = {"loss": s["loss"] / max(s["seen"], 1)}
        if self.classify:
            logs["accuracy"] = s["correct"] / max(s["counted"], 1)
        if self.val is not None and self.distributed:
            dist.broadcast_model(self.model)  # rank 0's BatchNorm statistics, as DDP
            metrics = _evaluate_sharded(self.model, *self.val, loss_fn=self.loss_fn,
                                        batch_size=self.val_batch_size)
        elif self.val is not None:
            metrics = evaluate(self.model, *self.val, loss_fn=self.loss_fn,
                               batch_size=self.val_batch_size)
        if self.val is not None:
            logs.update({f"val_{k}": v for k, v in metrics.items()})
        logs["lr"] = s["lr"]
        logs["time_s"] = train_time + time.perf_counter() - t0
        self.epoch, self.step = self.epoch + 1, 0
        self.loader.set_epoch(self.epoch)  # checkpoints now hold the next epoch's start
        self.callbacks.call("on_epoch_end", self.epoch - 1, logs)

    def _interrupt(self) -> None:
        if self.distributed and self.world_size > 1 and self.step > 0:
            mine = [d.rng.bit_generator.state for d in self.dropouts]
            self._rank_dropout_states = dist.allgather_object(mine)
        self.callbacks.call("on_interrupt", {})
        saved = [cb.last_path for cb in self.callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.last_path is not None
                 and not cb.save_best_only]
        raise Interrupted(saved[-1] if saved else None, self.epoch, self.step)


def _evaluate_sharded(model: Layer, X: np.ndarray, y: np.ndarray, loss_fn: Loss,
                      batch_size: int) -> dict[str, float]:
    """``evaluate`` of the whole (X, y), each rank computing a contiguous K-th of it
    and one allreduce adding the parts."""
    k, r = dist.world_size(), dist.rank()
    lo, hi = r * len(X) // k, (r + 1) * len(X) // k
    summed = loss_fn.reduction == "sum"
    local = np.zeros(4)   # (loss sum, hits, counted, samples)
    if hi > lo:
        out = predict(model, X[lo:hi], batch_size)
        loss = loss_fn(out, y[lo:hi])
        loss_fn.release()
        hits, kept = _class_hits(out, y[lo:hi], loss_fn) if _is_classification(loss_fn) \
            else (0, 0)
        local[:] = (loss if summed else loss * (hi - lo), hits, kept, hi - lo)
    total = dist.allreduce_sum(local)
    metrics = {"loss": float(total[0] if summed else total[0] / total[3])}
    if _is_classification(loss_fn):
        metrics["accuracy"] = float(total[1] / total[2]) if total[2] else float("nan")
    return metrics


def _as_loader(data: Any, where: str, batch_size: int, shuffle: bool, seed: int | None
               ) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"fit: {where} must be (X, y) arrays or a chainrule.data.DataLoader, "
                        f"got {type(data).__name__}")
    X, y = _check_xy(*data, "fit")
    return DataLoader((X, y), batch_size=batch_size, shuffle=shuffle, seed=seed)


def fit(model: Layer, loss_fn: Loss, optimizer: Any, train: Any, epochs: int = 1,
        batch_size: int = 32, val: Any = None, scheduler: Any = None,
        callbacks: Sequence[Callback] = (), seed: int | None = 0, shuffle: bool = True,
        progress: bool = True, initial_epoch: int = 0,
        resume: str | os.PathLike | Checkpoint | None = None,
        clip_grad_norm: float | None = None, scheduler_interval: str = "epoch",
        on_batch: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        distributed: bool = False, bucket_bytes: int = dist.DEFAULT_BUCKET_BYTES) -> History:
    """Train ``model`` until ``epochs`` epochs are done: the one training loop.

    Each step: forward, loss, backward, (clipping,) optimizer step. Everything else
    plugs in as a callback (``chainrule.callbacks``: checkpoints, early stopping, CSV
    logs, progress bar, lr schedules, the inspect ``Recorder``, your own).

    Args:
        model: the layer (a ``Sequential``, a ``Graph``, ...) to train (in training mode
            during the epochs).
        loss_fn: the loss, e.g. ``CrossEntropyLoss()``.
        optimizer: an optimizer over ``model.parameters()``, e.g. ``optim.Adam``.
        train: ``(X, y)`` arrays, batched by a ``DataLoader(train, batch_size, shuffle,
            seed=seed)``, or a ``chainrule.data.DataLoader`` (its own batch size, shuffling,
            augmentation and seed then apply).
        epochs: the epoch to stop at (as in Keras: counted with ``initial_epoch`` and the
            epochs of a resumed run, not on top of them).
        batch_size: samples per step when ``train`` is ``(X, y)`` arrays.
        val: ``(X, y)`` or a DataLoader (its samples in order, not transformed), evaluated
            in eval mode after every epoch: ``val_loss`` (and ``val_accuracy``).
        scheduler: stepped after every epoch (``scheduler_interval="batch"``: after every
            step); shorthand for ``callbacks.LRSchedulerStep(scheduler, interval)``.
        scheduler_interval: ``"epoch"`` or ``"batch"``: when ``scheduler`` steps.
        callbacks: ``chainrule.callbacks.Callback`` objects.
        seed: seeds the loader's per-epoch Generators (shuffling, augmentation) and the
            Dropout masks: epoch ``e`` draws from ``default_rng([seed, e])``, the i-th
            Dropout from ``default_rng([seed, e, i + 1])``; the global NumPy state is never
            touched. None: drawn from the library generator (``chainrule.manual_seed``).
        shuffle: reshuffle ``(X, y)`` arrays every epoch (ignored for a DataLoader).
        progress: add a ``ProgressBar`` (unless one is given).
        initial_epoch: the epoch to start at (ignored with ``resume``).
        resume: a checkpoint written by ``ModelCheckpoint`` (also mid-epoch, on Ctrl-C):
            weights, optimizer, loader, Dropout Generators, history and callback states
            are restored, so the run ends bit for bit where an uninterrupted one would.
        clip_grad_norm: the gradients' total L2 norm is clipped to it before each update
            (``chainrule.utils.clip_grad_norm_``); None: no clipping.
        on_batch: ``on_batch(epoch, step, loss)``, a shorthand for a ``LambdaCallback``.
        on_epoch: ``on_epoch(epoch, metrics)``, a shorthand for a ``LambdaCallback``.
        distributed: data-parallel training over the processes of ``mpiexec -n K``
            (``chainrule.distributed``; one process without MPI). ``batch_size`` (or the
            loader's) is then *per process*: a step takes K * batch_size samples. Rank
            0's weights, buffers and seed are broadcast first; each rank takes its shard
            of every epoch (``DataLoader.shard``); gradients are averaged over the ranks
            with one deterministic allreduce per bucket of ``bucket_bytes``; the loss
            and metrics in logs and History are those of all ranks, validation is
            split among them; callbacks that write (``rank_zero_only``: checkpoints,
            CSV, progress) run on rank 0 only, the others on every rank. See
            docs/how-to/distributed.md.
        bucket_bytes: with ``distributed``, the size of the gradient buckets averaged by one
            allreduce each (``chainrule.distributed.DEFAULT_BUCKET_BYTES`` by default).

    Returns:
        the run's ``History`` (also the epochs before a resume): per-epoch ``loss``
        (the mean over the epoch's samples), ``accuracy`` for classification losses,
        ``val_loss``/``val_accuracy`` with ``val``, and ``lr``, ``time_s`` per row.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (epoch, step and the first non-finite
            layer named); that step is not applied. (A ``TerminateOnNaN(raise_error=
            False)`` stops instead.)
        Interrupted: Ctrl-C, after the callbacks saved what they save.
    """
    _check_reduces(loss_fn, "fit")
    for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"fit: {name} must be an int >= 0, got {value!r}")
    loader = _as_loader(train, "train", batch_size, shuffle, seed)
    if distributed:
        dist.init()
        loader.seed = int(dist.broadcast_object(loader.seed))  # one order for all ranks
        loader.shard(dist.world_size(), dist.rank())
    if isinstance(val, DataLoader):
        val = val.samples()
    elif val is not None:
        val = _check_xy(*val, "fit: val")
    given = list(callbacks)
    history = next((cb for cb in given if isinstance(cb, History)), None)
    if history is None:
        history = History()
        given.append(history)
    if not any(isinstance(cb, TerminateOnNaN) for cb in given):
        given.append(TerminateOnNaN())
    if progress and not any(isinstance(cb, ProgressBar) for cb in given):
        given.append(ProgressBar())
    if scheduler is not None:
        given.append(LRSchedulerStep(scheduler, scheduler_interval))
    loop_ref: list[FitLoop] = []
    if on_batch is not None:
        given.append(LambdaCallback(on_batch_end=lambda b, logs: on_batch(
            loop_ref[0].epoch, b, logs["loss"])))
    if on_epoch is not None:
        given.append(LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(
            e, {k: v for k, v in logs.items() if k not in NOT_METRICS})))
    cbs = CallbackList(given)
    loop = FitLoop(model, loss_fn, optimizer, loader, val, int(epochs), cbs, history,
                   clip_grad_norm, max(loader.batch_size, 256), distributed, bucket_bytes)
    cbs.rank = loop.rank
    loop_ref.append(loop)
    for cb in cbs:
        cb.set_loop(loop)
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        loop.restore(ckpt, str(resume) if not isinstance(resume, Checkpoint) else "the checkpoint")
    else:
        loop.epoch = int(initial_epoch)
    if distributed:
        dist.broadcast_model(model)  # every rank starts from rank 0's weights
    return loop.run()

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
    loss_fn.release()  # no backward follows
    metrics = {"loss": loss}
    if _is_classification(loss_fn):
        hits, kept = _class_hits(out, y, loss_fn)
        metrics["accuracy"] = hits / kept if kept else float("nan")
    return metrics
