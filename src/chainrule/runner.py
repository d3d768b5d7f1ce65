"""What ``chainrule train`` adds to ``chainrule.fit``: options, a run folder, and
the choice of callbacks. The epochs themselves run in ``fit``.

The run folder (``--out``) holds:

- ``last.safetensors``: written at the start, after every epoch, and on Ctrl-C
  (``ModelCheckpoint``);
- ``best.safetensors``: the epoch with the best validation accuracy so far
  (``ModelCheckpoint(save_best_only=True)``);
- ``metrics.csv``: one row per epoch (``CSVLogger``); ``curves.png``: loss and accuracy
  per epoch.

Every checkpoint's metadata holds what ``fit`` needs to resume bit for bit (see
``FitLoop.state_metadata``: epoch ``e`` draws its order and augmentation from
``default_rng([seed, e])``, Dropout ``i`` from ``default_rng([seed, e, i + 1])``; Ctrl-C
stops between steps and saves a mid-epoch checkpoint), plus the run's options and what
``evaluate``/``predict`` need to read images as training did (``TrainingRun._metadata``).
Checkpoints written before ``fit`` ran this loop are read too (``_upgrade``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from . import distributed as dist
from .callbacks import (Callback, CSVLogger, LambdaCallback, LRSchedulerStep, ModelCheckpoint,
                        ProgressBar, TerminateOnNaN)
from .checkpoint import Checkpoint, load, load_checkpoint
from .data import DataLoader, augment, get_dataset_info, load_dataset
from .data.datasets import Dataset
from .data.folder import parse_image_size, run_name
from .layers.base import Layer
from .losses import CrossEntropyLoss
from .models import MODELS
from .optim import (SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, CosineAnnealingLR, LRScheduler,
                    NAdam, Optimizer, RAdam, RMSprop, StepLR)
from .optim.lr_scheduler import LinearLR, OneCycleLR, SequentialLR
from .plots import plot_curves
from .train import Interrupted, evaluate, fit  # Interrupted: what `chainrule train` catches

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


@dataclass
class TrainConfig:
    """The options of ``chainrule train`` (saved in every checkpoint as ``args``).

    ``lr``, ``weight_decay`` and ``betas`` left at None take the optimizer's default
    (``DEFAULT_LR`` for the learning rate). ``limit`` keeps only the first N
    training samples (quick experiments, tests). ``out`` None means
    ``runs/<model>-<data>`` (``runs/<model>-folder-<name>`` for ``folder:PATH`` data).
    ``image_size`` (``folder:PATH`` data only) resizes every image to N x N.
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
    image_size: int | None = None

    # Options that may differ when resuming: they change neither the data nor the math.
    RESUME_OVERRIDES: ClassVar[tuple[str, ...]] = ("epochs", "data_dir", "download", "progress")

    def __post_init__(self) -> None:
        if self.betas is not None:
            self.betas = (float(self.betas[0]), float(self.betas[1]))
        if isinstance(self.image_size, str):  # "32" or "32x32"; validate() names a bad one
            try:
                self.image_size = parse_image_size(self.image_size)
            except ValueError:
                pass

    @property
    def out_dir(self) -> Path:
        return (Path(self.out) if self.out else
                Path("runs") / f"{self.model}-{run_name(self.data)}")

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
        if self.image_size is not None:
            try:
                parse_image_size(self.image_size)
            except ValueError as exc:
                raise RunError(f"--image-size: {exc}") from None
        # DatasetError for an unknown name; for folder:PATH, any problem with the folder.
        get_dataset_info(self.data, self.image_size)
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

        The per-batch schedules (``PER_BATCH_SCHEDULERS``) count lengths in
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
    """The optimizer described by ``config`` (see ``TrainConfig.optimizer_config``)."""
    kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in config.items() if k != "name"}
    return OPTIMIZERS[config["name"]](params, **kwargs)


def build_scheduler(optimizer: Optimizer, config: Mapping[str, Any] | None) -> LRScheduler | None:
    """The scheduler described by ``config`` (see ``TrainConfig.scheduler_config``)."""
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
    """The number of batches in an epoch (the last one may be smaller); under mpiexec,
    of each rank's shard (padded to the same length on every rank)."""
    k = dist.world_size()
    return len(range(0, -(-len(data.train[0]) // k), max(cfg.batch_size // k, 1)))


def prepare_data(cfg: TrainConfig, stats: tuple[list, list] | None = None) -> Dataset:
    """Load the run's data set (``--limit`` applied, cast to ``--dtype``)."""
    ds = load_dataset(cfg.data, cfg.data_dir, cfg.download, cfg.val_fraction, cfg.seed, stats,
                      image_size=cfg.image_size)
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
    """Where a run stands: ``epoch`` epochs done, its per-epoch ``history`` rows (as
    ``fit``'s History) and ``best`` (``{"metric", "value", "epoch"}``)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


@dataclass
class RunResult:
    out: Path
    epochs: int
    best: dict[str, Any] | None
    test: dict[str, float] | None


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return list(value) if isinstance(value, tuple) else value


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The metrics.csv header, and the History key each column holds.
CSV_KEYS = {"epoch": "epoch", "train_loss": "loss", "train_accuracy": "accuracy",
            "val_loss": "val_loss", "val_accuracy": "val_accuracy", "lr": "lr",
            "time_s": "time_s"}


def _upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint written before ``fit`` ran the command line's loop,
    with the callback states ``fit`` restores: the best-checkpoint's best value and the
    scheduler's state (then kept in ``best`` and ``scheduler_config``). The history rows'
    older names (``train_loss``) ``fit`` reads itself."""
    if "callbacks" in meta:
        return meta
    states: dict[str, Any] = {}
    if meta.get("best") is not None:
        states["ModelCheckpoint"] = {"best": meta["best"]["value"],
                                     "best_epoch": meta["best"]["epoch"]}
    if meta.get("scheduler_config") is not None:
        states["LRSchedulerStep"] = meta["scheduler_config"]["state"]
    return {**meta, "callbacks": states}


class _RunFolder(Callback):
    """The run's own bookkeeping after each epoch: ``run.state``, curves.png and the
    epoch's line on the log (after the checkpoints and metrics.csv are written)."""

    order = 20
    rank_zero_only = True

    def __init__(self, run: "TrainingRun", best: ModelCheckpoint, last: ModelCheckpoint) -> None:
        self.run, self.best, self.last = run, best, last

    def on_train_begin(self, logs: Any = None) -> None:
        if self.loop.epoch == 0 and self.loop.step == 0 and self.loop.epochs > 0:
            self.last._save(self.run.out / LAST)  # so that even epoch 1 has a last good one

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        run, cfg = self.run, self.run.cfg
        run.state.epoch, run.state.best = epoch + 1, run.best_record()
        plot_curves(run.state.history, run.out / CURVES, title=f"{cfg.model} on {cfg.data}")
        val = (f"  val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.2%}"
               if "val_loss" in logs else "")
        width = len(str(cfg.epochs))
        improved = self.best.best_epoch == epoch + 1
        run.log(f"epoch {epoch + 1:>{width}}/{cfg.epochs}  train loss {logs['loss']:.4f} "
                f"acc {logs['accuracy']:.2%}{val}  lr {logs['lr']:.2e}  "
                f"{logs['time_s']:.1f}s{'  *best*' if improved else ''}")

    def last_good(self) -> str:
        epoch = self.last._saved_at[0] if self.last._saved_at else 0
        return f". The last good checkpoint, {self.run.out / LAST} (epoch {epoch}), is intact"


class TrainingRun:
    """One run: a model, its optimizer and scheduler, the data, and the run folder.

    Build it with ``start`` (a fresh run) or ``resume`` (from a run folder),
    then call ``train``, which runs ``chainrule.fit`` with the run's callbacks.
    """

    def __init__(self, cfg: TrainConfig, data: Dataset, model: Layer, optimizer: Optimizer,
                 scheduler: LRScheduler | None, scheduler_config: Mapping[str, Any] | None,
                 checkpoint: Checkpoint | None = None, log: Callable[[str], None] = print
                 ) -> None:
        self.cfg, self.data, self.model = cfg, data, model
        self.optimizer, self.scheduler = optimizer, scheduler
        # What the scheduler was built from (build_scheduler), saved with its state: a
        # resume with more --epochs rebuilds it with these lengths, not new ones.
        self.scheduler_config = scheduler_config
        self.checkpoint = checkpoint   # the one to resume from, or None
        meta = checkpoint.metadata if checkpoint is not None else {}
        self.state = RunState(epoch=meta.get("epoch", 0), history=list(meta.get("history", [])),
                              best=meta.get("best"))
        self.out = cfg.out_dir
        # Optional per-step callback on_batch(epoch, step, loss), and more callbacks
        # (e.g. the inspect Recorder).
        self.on_batch: Callable[[int, int, float], None] | None = None
        self.callbacks: list[Callback] = []
        self.log = log if dist.rank() == 0 else (lambda message: None)
        self.loss_fn = CrossEntropyLoss()
        info = get_dataset_info(cfg.data, cfg.image_size)
        self.max_shift = info.max_shift if cfg.augment else 0
        self.hflip = info.hflip and cfg.augment
        # Shifted-in pixels are black: the normalized value of a zero pixel.
        self.fill = (-np.asarray(data.mean) / np.asarray(data.std)).astype(DTYPES[cfg.dtype])
        self._best: ModelCheckpoint | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, cfg: TrainConfig, overwrite: bool = False,
              log: Callable[[str], None] = print) -> "TrainingRun":
        """A fresh run; refuses a folder that already holds one unless ``overwrite``."""
        cfg.validate()
        if (cfg.out_dir / LAST).exists() and not overwrite:
            raise RunError(f"{cfg.out_dir} already holds a run; continue it with --resume "
                           f"{cfg.out_dir}, or pass --overwrite to start over")
        dist.barrier()  # every rank has looked before rank 0 deletes anything below
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
        for name in (LAST, BEST, METRICS, CURVES) if dist.rank() == 0 else ():
            (cfg.out_dir / name).unlink(missing_ok=True)
        return cls(cfg, data, model, optimizer, scheduler, scheduler_config, None, log)

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
        steps_per_epoch = _steps_per_epoch(cfg, data)
        if (isinstance(scheduler, OneCycleLR)
                and cfg.epochs * steps_per_epoch > scheduler.total_steps):
            raise RunError(f"--epochs {cfg.epochs} runs past the one-cycle schedule, built for "
                           f"{scheduler.total_steps // steps_per_epoch} epochs; a "
                           "one-cycle schedule cannot be extended (start a new run)")
        ckpt.metadata = _upgrade(meta)
        return cls(cfg, data, model, optimizer, scheduler, scheduler_config, ckpt, log)

    # ------------------------------------------------------------------ checkpoints

    def _sync_history(self, rows: list[dict[str, Any]]) -> None:
        # The run's rows keep the names of metrics.csv (train_loss, ...), as checkpoints
        # of every earlier version have them.
        self.state.history = [{k: row.get(key) for k, key in CSV_KEYS.items()} for row in rows]

    def best_record(self) -> dict[str, Any] | None:
        """``{"metric", "value", "epoch"}`` of the best checkpoint so far, or None."""
        best = self._best
        if best is None or best.best is None:
            return self.state.best
        metric = "val_accuracy" if best.monitor == "val_accuracy" else "train_accuracy"
        return {"metric": metric, "value": best.best, "epoch": best.best_epoch}

    def _metadata(self) -> dict[str, Any]:
        """What the command line keeps beside ``fit``'s state: the options (``args``), how
        the optimizer and scheduler were built, the best epoch, and what ``evaluate`` and
        ``predict`` need to read images the way training did (classes, input size and
        channels, mean and std)."""
        meta: dict[str, Any] = {
            "format": RUN_FORMAT, "data": self.cfg.data, "classes": self.data.classes,
            "in_channels": self.data.in_channels, "input_size": self.data.input_size,
            "mean": self.data.mean, "std": self.data.std, "model_name": self.cfg.model,
            "optimizer_config": self.cfg.optimizer_config(),
            "scheduler_config": None, "best": self.best_record(), "args": self.cfg.to_dict(),
            "history": self.state.history,
        }
        if self.scheduler is not None:  # (also in fit's callback states; read by older runs)
            meta["scheduler_config"] = {**self.scheduler_config,
                                        "state": self.scheduler.state_dict()}
        return meta

    # ------------------------------------------------------------------ the loop

    def _augment(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return augment(xb, rng, self.max_shift, self.hflip, self.fill)

    def train(self) -> RunResult:
        """Train up to ``cfg.epochs`` epochs with ``chainrule.fit``, then evaluate the
        best checkpoint on the test split.

        Raises:
            Interrupted: after Ctrl-C, once a resumable checkpoint is saved.
            NonFiniteLossError: the loss became NaN/Inf (epoch and step named); nothing
                is saved, so the last checkpoint on disk is the last good one.
        """
        cfg = self.cfg
        k = dist.world_size()   # > 1 under mpiexec: data-parallel, cfg.batch_size in all
        if cfg.batch_size % k:
            raise RunError(f"--batch-size {cfg.batch_size} does not split among {k} "
                           "processes; give a multiple of their number")
        self.out.mkdir(parents=True, exist_ok=True)
        X, y = self.data.train
        self.log(f"{cfg.model} ({self.model.num_parameters():,} parameters) on {cfg.data}: "
                 f"{len(X)} training, {len(self.data.val[0])} validation, "
                 f"{len(self.data.test[0])} test images; {cfg.optimizer} lr "
                 f"{self.optimizer.param_groups[0]['lr']:g}, batch {cfg.batch_size}, "
                 f"{cfg.dtype}{', augmented' if cfg.augment else ''}"
                 f"{f', {k} processes' if k > 1 else ''} -> {self.out}")
        if self.state.epoch >= cfg.epochs:
            self.log(f"already trained {self.state.epoch} epochs; pass --epochs N "
                     f"(N > {self.state.epoch}) to train further")
        has_val = len(self.data.val[0]) > 0
        self._best = best = ModelCheckpoint(
            self.out / BEST, monitor="val_accuracy" if has_val else "accuracy",
            save_best_only=True, mode="max", metadata=self._metadata)
        last = ModelCheckpoint(self.out / LAST, metadata=self._metadata)
        folder = _RunFolder(self, best, last)
        sync = LambdaCallback(on_epoch_end=lambda e, logs: self._sync_history(
            folder.loop.history.rows))
        callbacks: list[Callback] = [sync,
            TerminateOnNaN(advice="lower the learning rate (--lr) or check the data",
                           epilogue=folder.last_good),
            best, last, CSVLogger(self.out / METRICS, columns=CSV_KEYS), folder,
            *self.callbacks]
        if cfg.progress:
            callbacks.append(ProgressBar())
        if self.scheduler is not None:
            interval = "batch" if cfg.scheduler in PER_BATCH_SCHEDULERS else "epoch"
            callbacks.append(LRSchedulerStep(self.scheduler, interval))
        if self.on_batch is not None:
            on_batch = self.on_batch
            callbacks.append(LambdaCallback(
                on_batch_end=lambda b, logs: on_batch(folder.loop.epoch, b, logs["loss"])))
        loader = DataLoader(self.data.train, cfg.batch_size // k, shuffle=True, seed=cfg.seed,
                            transform=self._augment if cfg.augment else None)
        fit(self.model, self.loss_fn, self.optimizer, loader, epochs=cfg.epochs,
            val=self.data.val if has_val else None, callbacks=callbacks, seed=cfg.seed,
            progress=False, resume=self.checkpoint, clip_grad_norm=cfg.clip_grad_norm,
            distributed=k > 1)
        self.state.epoch = folder.loop.epoch
        return RunResult(self.out, self.state.epoch, self.state.best, self._test())

    def _test(self) -> dict[str, float] | None:
        """Loss and accuracy of the best checkpoint on the test split (None without one)."""
        best = self.out / BEST
        if dist.rank() != 0 or not best.exists() or not len(self.data.test[0]):
            return None
        model = load(best)
        metrics = evaluate(model, *self.data.test, loss_fn=CrossEntropyLoss(),
                           batch_size=max(self.cfg.batch_size, 256))
        total = sum(row["time_s"] for row in self.state.history)
        self.log(f"test (best checkpoint, epoch {self.state.best['epoch']}): loss "
                 f"{metrics['loss']:.4f}  accuracy {metrics['accuracy']:.2%} on "
                 f"{len(self.data.test[0])} images; {self.state.epoch} epochs took {total:.1f}s")
        return metrics
