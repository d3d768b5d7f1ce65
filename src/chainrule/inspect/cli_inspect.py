"""The command-line pieces of ``chainrule.inspect``, for ``chainrule.cli`` to mount.

- ``add_inspect_parser`` / ``run_inspect``: ``chainrule inspect RUN_DIR [--image PNG]``;
- ``add_explain_parser`` / ``run_explain``: ``chainrule explain --model lenet5 ...``;
- ``add_train_arguments``, ``start_recorder``, ``finish_recorder``: ``chainrule train
  --inspect [--inspect-every N]``, recording statistics into the run folder.

The parsers follow ``cli.py``'s convention: ``set_defaults(func=...)``, and the function
returns the exit code (0 ok, 1 error).
"""

from __future__ import annotations

import argparse
# The standard library's inspect (this package shadows the name only as chainrule.inspect).
import inspect as _stdlib_inspect
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .recorder import STATS_FILENAME, Recorder

EXIT_OK, EXIT_ERROR = 0, 1


# ---------------------------------------------------------------------- train --inspect

def add_train_arguments(train_parser: argparse.ArgumentParser) -> None:
    """Add ``--inspect`` and ``--inspect-every`` to the ``train`` subcommand."""
    train_parser.add_argument(
        "--inspect", action="store_true",
        help=f"record per-layer activation and gradient statistics into {STATS_FILENAME} "
             "in the run folder, for `chainrule inspect` (no extra forward/backward pass)")
    train_parser.add_argument(
        "--inspect-every", type=int, default=1, metavar="N",
        help="with --inspect, record one training step in N (default 1: every step)")


def start_recorder(args: argparse.Namespace, model: Any, optimizer: Any,
                   run_dir: str | Path) -> Recorder | None:
    """A recorder attached to ``model`` and ``optimizer`` when ``--inspect`` was given,
    else None. A run folder that already holds statistics (a resumed run) is continued.
    """
    if not getattr(args, "inspect", False):
        return None
    every = getattr(args, "inspect_every", 1)
    existing = Path(run_dir) / STATS_FILENAME
    if getattr(args, "resume", None) and existing.is_file():
        recorder = Recorder.load(existing)
    else:
        recorder = Recorder(every=every)
    return recorder.attach(model, optimizer)


def finish_recorder(recorder: Recorder | None, run_dir: str | Path,
                    log: Callable[[str], None] = print) -> Path | None:
    """Detach ``recorder``, save its statistics into ``run_dir`` and log the flags;
    nothing when ``recorder`` is None. Call it in a ``finally``, so an interrupted run
    keeps what it recorded."""
    if recorder is None:
        return None
    recorder.detach()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    path = recorder.save(run_dir)
    log(f"inspect: wrote {path}\n{recorder.summary()}")
    return path


# ---------------------------------------------------------------------- inspect

def add_inspect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``chainrule inspect RUN_DIR [--image PNG] [--out DIR] [--seed N]``."""
    p = subparsers.add_parser(
        "inspect", help="HTML report of a run: gradient flow, activations, filters, "
                        "feature maps, saliency, max-pool routing",
        description="Write report.html (self-contained: images embedded, no network) and "
                    "its PNGs for a training run folder. The gradient-flow plot needs a run "
                    "trained with --inspect; every other figure needs only the checkpoint.")
    p.add_argument("run_dir", type=Path, help="a `chainrule train` run folder (holding "
                                              "best.safetensors or last.safetensors)")
    p.add_argument("--image", type=Path, help="an image file to explain (gray or RGB, resized "
                                              "to the model's input); default: a test image "
                                              "of the run's data set")
    p.add_argument("--out", type=Path, help="where to write the report (default RUN_DIR)")
    p.add_argument("--seed", type=int, default=0, help="picks the test images (default 0)")
    p.set_defaults(func=run_inspect)
    return p


def run_inspect(args: argparse.Namespace) -> int:
    from .report import inspect_run

    try:
        path = inspect_run(args.run_dir, image=args.image, out_dir=args.out, seed=args.seed)
    except ValueError as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {path}")
    return EXIT_OK


# ---------------------------------------------------------------------- explain

def add_explain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``chainrule explain --model NAME [--data NAME | --checkpoint CKPT] ...``."""
    from ..models import MODELS

    p = subparsers.add_parser(
        "explain", help="walk one input through one training step, layer by layer",
        description="Run one training step (forward, loss, backward, SGD update) on one "
                    "input and print, for each layer, the forward shape, the local "
                    "derivative in words and as a formula, the shapes and norms of dL/dx "
                    "and dL/dW, and the update of one weight.")
    p.add_argument("--model", choices=list(MODELS), default="lenet5",
                   help="the architecture (default lenet5)")
    p.add_argument("--checkpoint", type=Path,
                   help="explain this trained model instead of a freshly initialized one")
    p.add_argument("--data", help="take the input from this data set's test split (default: "
                                  "the checkpoint's data set, else a random input)")
    p.add_argument("--data-dir", help="where file-based data sets live")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the weights and picks (or draws) the input (default 0)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    p.set_defaults(func=run_explain)
    return p


def _explain_input(args: argparse.Namespace, in_channels: int, input_size: int,
                   num_classes: int, meta: dict[str, Any]) -> tuple[np.ndarray, int, str]:
    rng = np.random.default_rng(args.seed)
    name = args.data or meta.get("data")
    if name:
        from ..data import load_dataset
        from ..data.folder import is_folder

        stats = (meta["mean"], meta["std"]) if "mean" in meta and "std" in meta else None
        size = meta.get("args", {}).get("image_size") if is_folder(name) else None
        x, y = load_dataset(name, args.data_dir, stats=stats, image_size=size).test
        k = int(rng.integers(len(x)))
        return x[k], int(y[k]), f"test image #{k} of {name}"
    x = rng.standard_normal((in_channels, input_size, input_size)).astype(np.float32)
    return x, int(rng.integers(num_classes)), "a random N(0, 1) input with a random label"


def _declared(model: Any) -> tuple[int, int, int] | None:
    from .inputs import declared_image_shape

    declared = declared_image_shape(model)
    return None if declared is None or declared[2] is None else declared


def run_explain(args: argparse.Namespace) -> int:
    from ..models import MODELS
    from .explain import explain

    meta: dict[str, Any] = {}
    if args.checkpoint is not None:
        from ..checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.checkpoint)
        model, meta = checkpoint.model, checkpoint.metadata
        name = f"{args.checkpoint}"
    else:
        model, name = None, args.model
    if args.data:
        from ..data import get_dataset_info

        info = get_dataset_info(args.data)
        shape = (info.in_channels, info.input_size, len(info.classes))
    elif meta and {"in_channels", "input_size", "classes"} <= meta.keys():
        shape = (meta["in_channels"], meta["input_size"], len(meta["classes"]))
    elif model is not None and _declared(model) is not None:
        shape = _declared(model)     # a graph's cr.Input gives the image's shape
    else:
        defaults = {k: v.default for k, v in
                    _stdlib_inspect.signature(MODELS[args.model]).parameters.items()}
        shape = (defaults["in_channels"], defaults["input_size"], defaults["num_classes"])
    if model is None:
        model = MODELS[args.model](*shape, seed=args.seed)
    try:
        x, label, source = _explain_input(args, *shape, meta)
        text = explain(model, x, label, lr=args.lr,
                       title=f"chainrule explain: {name}, one SGD step on {source} "
                             f"(label {label}, seed {args.seed})")
    except ValueError as exc:
        print(f"chainrule: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(text)
    return EXIT_OK
