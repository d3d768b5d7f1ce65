"""The ``chainrule import MODEL.onnx OUT.safetensors`` command: an ONNX model as a
chainrule checkpoint, which ``cr.load``, ``chainrule evaluate``, ``explain`` and
``export`` read.

``chainrule/cli.py`` wires it in as it does ``export``: ``add_import_parser(subparsers)``
sets ``func=run_import``. The checkpoint's metadata holds ``source`` (the ONNX file),
``in_channels`` and ``input_size`` (from the graph input's shape, when it is one image
of known size) and ``data`` when ``--data`` names the data set the model is for.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_import_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``import`` sub-command to ``subparsers`` (from ``add_subparsers()``)."""
    parser = subparsers.add_parser(
        "import", help="read an ONNX model into a chainrule checkpoint",
        description="Import an ONNX model (opsets 7 to 21; see chainrule.interop.from_onnx "
                    "for the operators) as a trainable chainrule graph and save it as a "
                    'checkpoint. Needs the onnx extra: pip install "chainrule[onnx]".')
    parser.add_argument("model", type=Path, help="the .onnx file to read")
    parser.add_argument("output", type=Path, help="the .safetensors checkpoint to write")
    parser.add_argument("--data", help="the data set the model is for (recorded, so that "
                                       "`chainrule evaluate` needs no --data)")
    parser.set_defaults(func=run_import)
    return parser


def _image_metadata(model: Any) -> dict[str, Any]:
    shapes = model.input_shapes
    if len(shapes) != 1 or shapes[0] is None or len(shapes[0]) != 3 or None in shapes[0]:
        return {}
    channels, height, width = shapes[0]
    return {"in_channels": channels, "input_size": height if height == width else [height, width]}


def run_import(args: argparse.Namespace) -> int:
    """Read ``args.model``, save the graph to ``args.output``; returns 0. Expected
    failures (no file, not ONNX, unsupported operators, no onnx package) exit with
    their message."""
    from .. import checkpoint
    from .onnx_import import from_onnx

    try:
        model = from_onnx(args.model)
        metadata = {"source": str(args.model), **_image_metadata(model)}
        if args.data:
            metadata["data"] = args.data
        args.output.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(model, args.output, **metadata)
    except (OSError, ValueError, TypeError, ImportError) as err:
        raise SystemExit(f"chainrule import: {err}") from err
    except Exception as err:   # onnx's DecodeError for a file that is not a model
        if type(err).__name__ != "DecodeError":
            raise
        raise SystemExit(f"chainrule import: {args.model} is not an ONNX model: {err}") from err
    params = sum(p.size for p in model.parameters())
    print(f"wrote {args.output}: {len(model.nodes)} nodes, {params:,} parameters, inputs "
          f"{list(model.input_names)} -> outputs {list(model.output_names)}")
    return 0
