"""A training run, as ``chainrule train`` performs it: epochs over a data set with
checkpoints, metrics and curves in a run folder, resumable bit for bit.

The run folder (``--out``) holds:

- ``last.safetensors``: written at the start, after every epoch, and on Ctrl-C;
- ``best.safetensors``: the epoch with the best validation accuracy so far;
- ``metrics.csv``: one row per epoch; ``curves.png``: loss and accuracy per epoch.

Every checkpoint's metadata holds everything needed to continue (see
:meth:`TrainingRun._metadata`), and all randomness of an epoch comes from state that
the checkpoint records, so ``--resume`` ends with the same weights, bit for bit, as a
run that was never interrupted:

- epoch ``e`` draws its shuffling order and augmentation from
  ``np.random.default_rng([seed, e])``, and the ``i``-th Dropout layer its masks from
  ``np.random.default_rng([seed, e, i + 1])``;
- Ctrl-C (SIGINT) is caught and only sets a flag; the loop checks it *between*
  steps, so the weights and optimizer state are never half-updated, and saves a
  mid-epoch checkpoint: the step reached, the epoch Generator's and each Dropout
  Generator's ``bit_generator.state``, and the epoch's running sums. Resuming redraws
  the epoch's order from ``(seed, e)``, restores those states and carries on at the
  next step. A second Ctrl-C stops at once (the last checkpoint on disk stays valid:
  writes are atomic).
"""

from __future__ import annotations

import csv
import io
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from tqdm import tqdm

from ._files import write_atomically
from .checkpoint import load, load_checkpoint, save
from .data import augment, get_dataset_info, load_dataset
from .data.datasets import Dataset
from .diagnose import find_non_finite
from .layers.base import Layer
from .layers.dropout import Dropout
from .losses import CrossEntropyLoss
from .models import MODELS
from .optim import (SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, CosineAnnealingLR, LRScheduler,
                    NAdam, Optimizer, RAdam, RMSprop, StepLR)
from .optim.lr_scheduler import LinearLR, OneCycleLR, SequentialLR
from .plots import plot_curves
from .train import NonFiniteLossError, batches, evaluate, train_step

RUN_FORMAT = "chainrule-run"
LAST, BEST, METRICS, CURVES = "last.safetensors", "best.safetensors", "metrics.csv", "curves.png"
CSV_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time_s")

OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW,
                                          "rmsprop": RMSprop, "adagrad": Adagrad,
                                          "adadelta": Adadelta, "adamax": Adamax,
                                          "nadam": NAdam, "radam": RAdam}
# The optimizers that take --betas.
BETAS_OPTIMIZERS = ("adam", "adamw", "adamax", "nadam", "radam")
# The learning rate when --lr is not given. Adam's is twice torch's default: with the
# cosine schedule that decays it, LeNet-5 on mnist-5k then reached 97.4-97.8% test
# accuracy in 10 epochs for seeds 0, 1, 2 (1e-3: 96.6-97.5%), measured with
# `chainrule train --lr {2e-3,1e-3} --seed {0,1,2}` and defaults otherwise. torch's
# RMSprop default (1e-2) diverges on these CNNs, and torch's SGD default (1e-3) is slow.
# Measured the same way (mean test accuracy of seeds 0-2): adagrad 3e-2 97.1% (torch's
# 1e-2: 96.6%; 1e-1 diverged for one seed), adadelta 1.0 (torch's) 97.6%, adamax 4e-3
# 96.8% (torch's 2e-3: 96.4%; 1e-2: 97.1%, but 2e-2 diverged for one seed), nadam 2e-3
# (torch's) 97.5%, radam 4e-3 97.3% (torch's 1e-3: 96.0%).
DEFAULT_LR = {"sgd": 0.01, "adam": 2e-3, "adamw": 2e-3, "rmsprop": 1e-3, "adagrad": 3e-2,
              "adadelta": 1.0, "adamax": 4e-3, "nadam": 2e-3, "radam": 4e-3}
SCHEDULERS = ("none", "step", "cosine", "onecycle", "warmup-cosine")
# Stepped after every batch (the others after every epoch).
PER_BATCH_SCHEDULERS = ("onecycle", "warmup-cosine")
DTYPES = {"float32": np.float32, "float64": np.float64}


class RunError(Exception):
    """A run that cannot start or resume (bad options, a folder that holds another run)."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C after saving a resumable checkpoint."""

    def __init__(self, path: Path, epoch: int, step: int) -> None:
        where = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"
        super().__init__(f"interrupted; saved a resumable checkpoint at {where} in {path}")
        self.path, self.epoch, self.step = path, epoch, step


@dataclass
class TrainConfig:
    """The options of ``chainrule train`` (saved in every checkpoint as ``args``).

    ``lr``, ``weight_decay`` and ``betas`` left at None take the optimizer's default
    (:data:`DEFAULT_LR` for the learning rate). ``limit`` keeps only the first N
    training samples (quick experiments, tests). ``out`` None means
    ``runs/<model>-<data>``.
    """

    data: str = "mnist-5k"
    data_dir: str | None = None
    download: bool = False
    model: str = "lenet5"
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    scheduler: str = "cosine"
    step_size: int = 5
    gamma: float = 0.1
    warmup_epochs: int = 1
    seed: int = 0
    val_fraction: float = 0.1
    dtype: str = "float32"
    augment: bool = False
    out: str | None = None
    limit: int | None = None
    progress: bool = True
    clip_grad_norm: float | None = None

    # Options that may differ when resuming: they change neither the data nor the math.
    RESUME_OVERRIDES: ClassVar[tuple[str, ...]] = ("epochs", "data_dir", "download", "progress")

    def __post_init__(self) -> None:
        if self.betas is not None:
            self.betas = (float(self.betas[0]), float(self.betas[1]))

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"{self.model}-{self.data}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas) if self.betas is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> None:
        """Raise RunError naming the first option that is out of range or does not apply."""
        get_dataset_info(self.data)  # DatasetError for an unknown name
        checks = [
            (self.model in MODELS, f"unknown model {self.model!r}; known: {', '.join(MODELS)}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}"),
            (self.scheduler in SCHEDULERS, f"unknown scheduler {self.scheduler!r}"),
            (self.dtype in DTYPES, f"--dtype must be float32 or float64, not {self.dtype!r}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.step_size >= 1, f"--step-size must be >= 1, got {self.step_size}"),
            (self.scheduler != "warmup-cosine" or 1 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must be >= 1 and below --epochs ({self.epochs}), got "
             f"{self.warmup_epochs}"),
            (0 <= self.val_fraction < 1,
             f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}"),
            (self.clip_grad_norm is None or self.clip_grad_norm > 0,
             f"--clip-grad-norm must be > 0, got {self.clip_grad_norm}"),
            (self.momentum == 0 or self.optimizer in ("sgd", "rmsprop"),
             "--momentum applies to sgd and rmsprop only"),
            (not self.nesterov or self.optimizer == "sgd", "--nesterov applies to sgd only"),
            (self.betas is None or self.optimizer in BETAS_OPTIMIZERS,
             "--betas applies to " + ", ".join(BETAS_OPTIMIZERS) + " only"),
        ]
        for ok, message in checks:
            if not ok:
                raise RunError(message)

    def optimizer_config(self) -> dict[str, Any]:
        """Constructor arguments of the optimizer, with ``name``; JSON-serializable."""
        lr = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        config: dict[str, Any] = {"name": self.optimizer, "lr": lr}
        if self.weight_decay is not None:
            config["weight_decay"] = self.weight_decay
        if self.optimizer == "sgd":
            config.update(momentum=self.momentum, nesterov=self.nesterov)
        elif self.optimizer == "rmsprop":
            config.update(momentum=self.momentum)
        elif self.betas is not None:
            config["betas"] = list(self.betas)
        return config

    def scheduler_config(self, steps_per_epoch: int = 1) -> dict[str, Any] | None:
        """Constructor arguments of the scheduler, with ``name``, or None for none.

        The per-batch schedules (:data:`PER_BATCH_SCHEDULERS`) count lengths in
        batches: ``steps_per_epoch`` is the number of batches of an epoch.
        """
        if self.scheduler == "step":
            return {"name": "step", "step_size": self.step_size, "gamma": self.gamma}
        if self.scheduler == "cosine":
            return {"name": "cosine", "T_max": self.epochs}
        if self.scheduler == "onecycle":  # peaks at --lr
            return {"name": "onecycle", "max_lr": self.optimizer_config()["lr"],
                    "total_steps": self.epochs * steps_per_epoch}
        if self.scheduler == "warmup-cosine":
            return {"name": "warmup-cosine", "warmup_steps": self.warmup_epochs * steps_per_epoch,
                    "T_max": (self.epochs - self.warmup_epochs) * steps_per_epoch}
        return None


def build_optimizer(params: list, config: Mapping[str, Any]) -> Optimizer:
    """The optimizer described by ``config`` (see :meth:`TrainConfig.optimizer_config`)."""
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in config.items() if k != "name"}
    return OPTIMIZERS[config["name"]](params, **kwargs)


def build_scheduler(optimizer: Optimizer, config: Mapping[str, Any] | None) -> LRScheduler | None:
    """The scheduler described by ``config`` (see :meth:`TrainConfig.scheduler_config`)."""
    if config is None:
        return None
    if config["name"] == "step":
        return StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])
    if config["name"] == "onecycle":
        # Momentum (or beta1) cycles between 0.95 and 0.85 where the optimizer uses one;
        # plain SGD, Adagrad, ... keep none.
        cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
        return OneCycleLR(optimizer, max_lr=config["max_lr"], total_steps=config["total_steps"],
                          cycle_momentum=cycle)
    if config["name"] == "warmup-cosine":
        # Linear warm-up from lr / warmup_steps to lr, then a cosine down to 0.
        warmup = config["warmup_steps"]
        return SequentialLR(optimizer, [LinearLR(optimizer, 1 / warmup, total_iters=warmup),
                                        CosineAnnealingLR(optimizer, T_max=config["T_max"])],
                            milestones=[warmup])
    return CosineAnnealingLR(optimizer, T_max=config["T_max"])


def _steps_per_epoch(cfg: TrainConfig, data: Dataset) -> int:
    """The number of batches in an epoch (the last one may be smaller)."""
    return len(range(0, len(data.train[0]), cfg.batch_size))


def prepare_data(cfg: TrainConfig, stats: tuple[list, list] | None = None) -> Dataset:
    """Load the run's data set (``--limit`` applied, cast to ``--dtype``)."""
    ds = load_dataset(cfg.data, cfg.data_dir, cfg.download, cfg.val_fraction, cfg.seed, stats)
    if cfg.limit is not None:
        # The training split is already in a seeded random order: its head is a fair sample.
        ds.train = (ds.train[0][:cfg.limit], ds.train[1][:cfg.limit])
    dtype = DTYPES[cfg.dtype]
    for split in ("train", "val", "test"):
        x, y = getattr(ds, split)
        setattr(ds, split, (x.astype(dtype, copy=False), y))
    return ds


@dataclass
class RunState:
    """Where a run stands: ``epoch`` epochs done, ``step`` steps into the next one."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    # Only for a mid-epoch checkpoint (step > 0): the running sums of the epoch and the
    # Generator states reached, to continue exactly where it stopped.
    partial: dict[str, float] | None = None
    rng_state: dict[str, Any] | None = None
    dropout_states: list[dict[str, Any]] | None = None


@dataclass
class RunResult:
    out: Path
    epochs: int
    best: dict[str, Any] | None
    test: dict[str, float] | None


class _StopFlag:
    requested = False


@contextmanager
def _stop_on_sigint(log: Callable[[str], None]) -> Iterator[_StopFlag]:
    """While inside, the first SIGINT only sets ``flag.requested``; a second one raises
    KeyboardInterrupt as usual."""
    flag = _StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        log("\ninterrupt: finishing the current step, then saving a resumable checkpoint "
            "(Ctrl-C again stops at once)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        previous = None
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return list(value) if isinstance(value, tuple) else value


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TrainingRun:
    """One run: a model, its optimizer and scheduler, the data, and the run folder.

    Build it with :meth:`start` (a fresh run) or :meth:`resume` (from a run folder),
    then call :meth:`train`.
    """

    def __init__(self, cfg: TrainConfig, data: Dataset, model: Layer, optimizer: Optimizer,
                 scheduler: LRScheduler | None, scheduler_config: Mapping[str, Any] | None,
                 state: RunState, log: Callable[[str], None] = print) -> None:
        self.cfg, self.data, self.model = cfg, data, model
        self.optimizer, self.scheduler, self.state = optimizer, scheduler, state
        # What the scheduler was built from (build_scheduler), saved with its state: a
        # resume with more --epochs rebuilds it with these lengths, not new ones.
        self.scheduler_config = scheduler_config
        self.out = cfg.out_dir
        # Optional per-step callback on_batch(epoch, step, loss), e.g. the inspect recorder.
        self.on_batch: Callable[[int, int, float], None] | None = None
        self.log = log
        self.loss_fn = CrossEntropyLoss()
        self.dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
        info = get_dataset_info(cfg.data)
        self.max_shift = info.max_shift if cfg.augment else 0
        self.hflip = info.hflip and cfg.augment
        # Shifted-in pixels are black: the normalized value of a zero pixel.
        self.fill = (-np.asarray(data.mean) / np.asarray(data.std)).astype(DTYPES[cfg.dtype])

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, cfg: TrainConfig, overwrite: bool = False,
              log: Callable[[str], None] = print) -> "TrainingRun":
        """A fresh run; refuses a folder that already holds one unless ``overwrite``."""
        cfg.validate()
        if (cfg.out_dir / LAST).exists() and not overwrite:
            raise RunError(f"{cfg.out_dir} already holds a run; continue it with --resume "
                           f"{cfg.out_dir}, or pass --overwrite to start over")
        data = prepare_data(cfg)
        model = MODELS[cfg.model](in_channels=data.in_channels, input_size=data.input_size,
                                  num_classes=data.num_classes, seed=cfg.seed)
        model.to(DTYPES[cfg.dtype])
        try:
            optimizer = build_optimizer(model.parameters(), cfg.optimizer_config())
            scheduler_config = cfg.scheduler_config(_steps_per_epoch(cfg, data))
            scheduler = build_scheduler(optimizer, scheduler_config)
        except ValueError as exc:  # a hyper-parameter out of range, e.g. a negative --lr
            raise RunError(str(exc)) from exc
        # Only now that the new run can start: nothing of an overwritten run survives.
        for name in (LAST, BEST, METRICS, CURVES):
            (cfg.out_dir / name).unlink(missing_ok=True)
        return cls(cfg, data, model, optimizer, scheduler, scheduler_config, RunState(), log)

    @classmethod
    def resume(cls, directory: str | Path, overrides: Mapping[str, Any] | None = None,
               log: Callable[[str], None] = print) -> "TrainingRun":
        """Continue the run in ``directory`` from its ``last.safetensors``.

        ``overrides`` may set the options in ``TrainConfig.RESUME_OVERRIDES`` (e.g. more
        ``epochs``); any other option comes from the checkpoint, and giving a different
        value is a RunError, since it would change what an uninterrupted run computes.
        The cosine and warm-up-cosine schedules keep the length they were created with
        (past it the cosine climbs back up); a one-cycle schedule cannot be extended.
        """
        directory = Path(directory)
        ckpt = load_checkpoint(directory / LAST)
        meta = ckpt.metadata
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{directory / LAST} was not written by chainrule train, so it "
                           "cannot be resumed")
        saved = dict(meta["args"])
        for key, value in (overrides or {}).items():
            if key in TrainConfig.RESUME_OVERRIDES:
                saved[key] = value
            elif _as_json(value) != saved.get(key):
                raise RunError(f"--{key.replace('_', '-')} cannot change when resuming (the "
                               f"run used {saved.get(key)!r}); only "
                               + ", ".join(f"--{k.replace('_', '-')}" for k in
                                           TrainConfig.RESUME_OVERRIDES) + " can")
        saved["out"] = str(directory)
        cfg = TrainConfig.from_dict(saved)
        cfg.validate()
        data = prepare_data(cfg, stats=(meta["mean"], meta["std"]))
        model = ckpt.model
        optimizer = build_optimizer(model.parameters(), meta["optimizer_config"])
        saved_schedule = meta["scheduler_config"]
        scheduler_config = None if saved_schedule is None else {
            k: v for k, v in saved_schedule.items() if k != "state"}
        scheduler = build_scheduler(optimizer, scheduler_config)
        if ckpt.optimizer_state is None or ckpt.optimizer_type != type(optimizer).__name__:
            raise RunError(f"{directory / LAST} holds no {type(optimizer).__name__} state")
        # After the scheduler's constructor, which rewrites each group's lr: the saved
        # groups bring back the lr that was current.
        optimizer.load_state_dict(ckpt.optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(saved_schedule["state"])
        steps_per_epoch = _steps_per_epoch(cfg, data)
        if (isinstance(scheduler, OneCycleLR)
                and cfg.epochs * steps_per_epoch > scheduler.total_steps):
            raise RunError(f"--epochs {cfg.epochs} runs past the one-cycle schedule, built for "
                           f"{scheduler.total_steps // steps_per_epoch} epochs; a "
                           "one-cycle schedule cannot be extended (start a new run)")
        state = RunState(epoch=meta["epoch"], step=meta["step"], history=meta["history"],
                         best=meta["best"], partial=meta.get("partial"),
                         rng_state=meta.get("rng_state"),
                         dropout_states=meta.get("dropout_states"))
        return cls(cfg, data, model, optimizer, scheduler, scheduler_config, state, log)

    # ------------------------------------------------------------------ checkpoints

    def _metadata(self, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Everything a resume needs, and what ``evaluate``/``predict`` need to read
        images the way training did (classes, input size and channels, mean and std)."""
        s = self.state
        meta: dict[str, Any] = {
            "format": RUN_FORMAT, "data": self.cfg.data, "classes": self.data.classes,
            "in_channels": self.data.in_channels, "input_size": self.data.input_size,
            "mean": self.data.mean, "std": self.data.std, "model_name": self.cfg.model,
            "epoch": s.epoch, "step": s.step,
            "optimizer_config": self.cfg.optimizer_config(),
            "scheduler_config": None, "best": s.best, "history": s.history,
            "args": self.cfg.to_dict(),
        }
        if self.scheduler is not None:
            meta["scheduler_config"] = {**self.scheduler_config,
                                        "state": self.scheduler.state_dict()}
        # The Generator the next step draws from: mid-epoch the live one, at an epoch
        # boundary the fresh one of the next epoch (a function of seed and epoch).
        rng = rng if rng is not None else np.random.default_rng([self.cfg.seed, s.epoch])
        meta["rng_state"] = rng.bit_generator.state
        if s.step > 0:
            meta["partial"] = s.partial
            meta["dropout_states"] = [d.rng.bit_generator.state for d in self.dropouts]
        return meta

    def _save(self, name: str, rng: np.random.Generator | None = None) -> Path:
        return save(self.model, self.out / name, optimizer=self.optimizer,
                    **self._metadata(rng))

    def _write_metrics(self) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.state.history:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})
        write_atomically(self.out / METRICS, text.getvalue().encode())  # never half a file
        plot_curves(self.state.history, self.out / CURVES,
                    title=f"{self.cfg.model} on {self.cfg.data}")

    # ------------------------------------------------------------------ the loop

    def train(self) -> RunResult:
        """Train up to ``cfg.epochs`` epochs, then evaluate the best checkpoint on the
        test split.

        Raises:
            Interrupted: after Ctrl-C, once a resumable checkpoint is saved.
            NonFiniteLossError: the loss became NaN/Inf (epoch and step named); nothing
                is saved, so the last checkpoint on disk is the last good one.
        """
        cfg, s = self.cfg, self.state
        self.out.mkdir(parents=True, exist_ok=True)
        n_train = len(self.data.train[0])
        self.log(f"{cfg.model} ({self.model.num_parameters():,} parameters) on {cfg.data}: "
                 f"{n_train} training, {len(self.data.val[0])} validation, "
                 f"{len(self.data.test[0])} test images; {cfg.optimizer} lr "
                 f"{self.optimizer.param_groups[0]['lr']:g}, batch {cfg.batch_size}, "
                 f"{cfg.dtype}{', augmented' if cfg.augment else ''} -> {self.out}")
        if s.epoch >= cfg.epochs:
            self.log(f"already trained {s.epoch} epochs; pass --epochs N (N > {s.epoch}) "
                     "to train further")
        elif s.epoch == 0 and s.step == 0:
            self._save(LAST)  # so that even epoch 1 has a last good checkpoint
        with _stop_on_sigint(_stderr) as flag, np.errstate(over="ignore", invalid="ignore",
                                                           divide="ignore"):
            # (NumPy's overflow warnings are noise here: a non-finite loss is caught below.)
            while s.epoch < cfg.epochs:
                self._run_epoch(flag)
                if flag.requested:
                    raise Interrupted(self.out / LAST, s.epoch, 0)
        return RunResult(self.out, s.epoch, s.best, self._test())

    def _run_epoch(self, flag: _StopFlag) -> None:
        cfg, s = self.cfg, self.state
        epoch = s.epoch
        X, y = self.data.train
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(X))
        spans = list(batches(len(X), cfg.batch_size))
        if s.step > 0:  # continue a mid-epoch checkpoint where it stopped
            rng.bit_generator.state = s.rng_state
            for d, state in zip(self.dropouts, s.dropout_states or []):
                d.rng.bit_generator.state = state
            sums = dict(s.partial or {})
            s.rng_state = s.dropout_states = None  # used up
        else:
            for i, d in enumerate(self.dropouts):
                d.rng = np.random.default_rng([cfg.seed, epoch, i + 1])
            sums = {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0}

        self.model.train()
        # The lr of the epoch's first batch (per-batch schedules change it within the
        # epoch), kept in the sums so that a mid-epoch checkpoint carries it.
        lr = sums.setdefault("lr", self.optimizer.param_groups[0]["lr"])
        bar = tqdm(total=len(spans), initial=s.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", leave=False, disable=not cfg.progress, file=sys.stderr,
                   dynamic_ncols=True)
        started = time.perf_counter() - sums["time"]
        try:
            for step in range(s.step, len(spans)):
                if flag.requested:
                    s.partial = sums | {"time": time.perf_counter() - started}
                    self._save(LAST, rng)
                    raise Interrupted(self.out / LAST, epoch, step)
                idx = order[spans[step]]
                xb, yb = X[idx], y[idx]
                if cfg.augment:
                    xb = augment(xb, rng, self.max_shift, self.hflip, self.fill)
                loss, out = train_step(self.model, self.loss_fn, self.optimizer, xb, yb,
                                       cfg.clip_grad_norm)
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; lower "
                        f"the learning rate (--lr) or check the data. Diagnosis: "
                        f"{find_non_finite(self.model, self.loss_fn, xb, yb)}. The last "
                        f"good checkpoint, {self.out / LAST} (epoch {epoch}), is intact")
                sums["loss"] += loss * len(idx)
                sums["correct"] += int(np.sum(out.argmax(axis=1) == yb))
                sums["seen"] += len(idx)
                s.step = step + 1
                if self.on_batch is not None:
                    self.on_batch(epoch, step, loss)
                if self.scheduler is not None and cfg.scheduler in PER_BATCH_SCHEDULERS:
                    self.scheduler.step()  # before the next Ctrl-C check: saved with the step
                elapsed = time.perf_counter() - started
                bar.set_postfix({"loss": f"{sums['loss'] / sums['seen']:.4f}",
                                 "acc": f"{sums['correct'] / sums['seen']:.2%}",
                                 "img/s": f"{sums['seen'] / max(elapsed, 1e-9):.0f}"},
                                refresh=False)
                bar.update(1)
            bar.refresh()  # the epoch's final numbers, even when it took under mininterval
        finally:
            bar.close()
        train_time = time.perf_counter() - started
        self._finish_epoch(sums, lr, train_time)

    def _finish_epoch(self, sums: Mapping[str, float], lr: float, train_time: float) -> None:
        cfg, s = self.cfg, self.state
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "epoch": s.epoch + 1, "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_accuracy": sums["correct"] / max(sums["seen"], 1),
            "val_loss": None, "val_accuracy": None, "lr": lr}
        if len(self.data.val[0]):
            metrics = evaluate(self.model, *self.data.val, loss_fn=self.loss_fn,
                               batch_size=max(cfg.batch_size, 256))
            if not math.isfinite(metrics["loss"]):
                raise NonFiniteLossError(
                    f"the validation loss became {metrics['loss']} after epoch {s.epoch + 1}; "
                    f"the last good checkpoint, {self.out / LAST} (epoch {s.epoch}), is intact")
            row["val_loss"], row["val_accuracy"] = metrics["loss"], metrics["accuracy"]
        row["time_s"] = train_time + time.perf_counter() - t0
        if self.scheduler is not None and cfg.scheduler not in PER_BATCH_SCHEDULERS:
            self.scheduler.step()
        key = "val_accuracy" if row["val_accuracy"] is not None else "train_accuracy"
        improved = s.best is None or row[key] > s.best["value"]
        s.epoch, s.step, s.partial = s.epoch + 1, 0, None
        s.history.append(row)
        if improved:
            s.best = {"metric": key, "value": row[key], "epoch": s.epoch}
        self._save(LAST)
        if improved:
            self._save(BEST)
        self._write_metrics()
        val = (f"  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}"
               if row["val_loss"] is not None else "")
        width = len(str(cfg.epochs))
        self.log(f"epoch {s.epoch:>{width}}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                 f"acc {row['train_accuracy']:.2%}{val}  lr {lr:.2e}  "
                 f"{row['time_s']:.1f}s{'  *best*' if improved else ''}")

    def _test(self) -> dict[str, float] | None:
        """Loss and accuracy of the best checkpoint on the test split (None without one)."""
        best = self.out / BEST
        if not best.exists() or not len(self.data.test[0]):
            return None
        model = load(best)
        metrics = evaluate(model, *self.data.test, loss_fn=CrossEntropyLoss(),
                           batch_size=max(self.cfg.batch_size, 256))
        total = sum(row["time_s"] for row in self.state.history)
        self.log(f"test (best checkpoint, epoch {self.state.best['epoch']}): loss "
                 f"{metrics['loss']:.4f}  accuracy {metrics['accuracy']:.2%} on "
                 f"{len(self.data.test[0])} images; {self.state.epoch} epochs took {total:.1f}s")
        return metrics
