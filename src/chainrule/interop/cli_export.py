"""The ``chainrule export CKPT OUT.onnx`` command: a checkpoint's model as an ONNX file.

``chainrule/cli.py`` wires it in with two calls::

    from .interop.cli_export import add_export_parser
    add_export_parser(subparsers)        # sets func=run_export on its sub-parser

and, after parsing, ``return args.func(args)`` (``run_export`` returns the exit code).

The input shape comes from ``--input-shape C,H,W`` or else from the checkpoint's
metadata keys ``in_channels`` and ``input_size`` (an int for square images, or [H, W]).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> (3, 32, 32): positive ints separated by commas."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive ints separated by commas, such as 3,32,32, got {text!r}")
    return shape


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` sub-command to ``subparsers`` (from ``add_subparsers()``)."""
    parser = subparsers.add_parser(
        "export", help="write a checkpoint's model as an ONNX file",
        description="Export the model of a chainrule checkpoint to ONNX (opset 17, dynamic "
                    "batch size, inference mode). Needs the onnx extra: "
                    'pip install "chainrule[onnx]".')
    parser.add_argument("checkpoint", type=Path, help="a .safetensors file written by cr.save")
    parser.add_argument("output", type=Path, help="the .onnx file to write")
    parser.add_argument("--input-shape", type=parse_shape, default=None, metavar="C,H,W",
                        help="shape of one input without the batch axis (default: from the "
                             "checkpoint's in_channels and input_size metadata)")
    parser.set_defaults(func=run_export)
    return parser


def _shape_from_metadata(metadata: dict[str, Any], checkpoint: Path) -> tuple[int, ...]:
    channels, size = metadata.get("in_channels"), metadata.get("input_size")
    if channels is None or size is None:
        raise SystemExit(f"chainrule export: {checkpoint} has no in_channels/input_size "
                         "metadata; pass --input-shape C,H,W")
    sizes = list(size) if isinstance(size, (list, tuple)) else [size, size]
    return tuple(int(v) for v in [channels, *sizes])


def run_export(args: argparse.Namespace) -> int:
    """Load ``args.checkpoint``, export its model to ``args.output``; returns 0.

    Every expected failure (missing file, not a checkpoint, a shape that does not fit,
    a layer ONNX cannot express, onnx not installed) exits with a one-line message.
    """
    from .. import checkpoint
    from .onnx import export_onnx

    try:
        loaded = checkpoint.load_checkpoint(args.checkpoint)
        shape = args.input_shape or _shape_from_metadata(loaded.metadata, args.checkpoint)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        proto = export_onnx(loaded.model, args.output, shape)
    except (OSError, ValueError, ImportError) as err:
        raise SystemExit(f"chainrule export: {err}") from err
    out_dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    print(f"wrote {args.output}: input (N, {', '.join(map(str, shape))}) -> output "
          f"({', '.join(map(str, out_dims))})")
    return 0
