"""The inspection report: one self-contained ``report.html`` plus the PNGs it embeds.

``build_report`` draws the figures of a model for one input; ``inspect_run`` does the
same for a training run's folder (checkpoint, recorded statistics, data set). The HTML
embeds every image as a base64 ``data:`` URI and loads nothing else, so it opens
offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..layers.base import Layer
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.linear import Flatten
from ..layers.pooling import MaxPool2d
from ._hooks import capture_outputs, eval_mode, leaf_layers
from .inputs import (ReportInput, dataset_input, declared_image_shape, load_image,
                     synthetic_input)
from .recorder import STATS_FILENAME, flags_of, format_flags, load_stats
from .saliency import maxpool_routing, saliency, saliency_map

REPORT_NAME = "report.html"
CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")
HISTOGRAM_VALUES = 100_000  # values per layer kept for its histogram


@dataclass
class _Figure:
    filename: str
    heading: str
    caption: str
    png: bytes


def _subsample(y: np.ndarray) -> np.ndarray:
    flat = y.ravel()
    step = max(1, flat.size // HISTOGRAM_VALUES)
    return flat[::step].copy()


def _class_name(classes: list[str] | None, k: int | None) -> str:
    if k is None:
        return "unknown"
    return f"{k} ({classes[k]})" if classes and 0 <= k < len(classes) else str(k)


def _figures(model: Layer, inp: ReportInput, stats: dict[str, Any] | None,
             classes: list[str] | None, mean: Any, std: Any, notes: list[str]) -> list[_Figure]:
    from . import figures as fg  # matplotlib loads only when a report is drawn

    figs = []
    if stats is not None and stats.get("step"):
        figs.append(_Figure(
            "gradient_flow.png", "Gradient flow over training",
            "Recorded during training (--inspect). Top left: the norm of each layer's input "
            "gradient; bottom right: its ratio between the first and the last layer, the "
            "vanishing/exploding check. Top right and bottom left: each weight's gradient norm "
            "and the relative size of each optimizer update.", fg.gradient_flow(stats)))
    leaves = leaf_layers(model)
    shown = [(n, m) for n, m in leaves if not isinstance(m, (Flatten, Dropout))]
    with eval_mode(model), capture_outputs(shown, reduce=_subsample) as outputs:
        model.forward(inp.batch)
    figs.append(_Figure(
        "activation_histograms.png", "Activation histograms",
        f"The output values of each layer (eval mode) over {len(inp.batch)} input(s), "
        "log-scaled counts. A ReLU's spike at 0 is its inactive units; a sigmoid/tanh "
        "piled up at its bounds is saturated.",
        fg.activation_histograms([(f"{n} {type(m).__name__}", outputs[n][1])
                                  for n, m in shown if n in outputs])))

    convs = [(n, m) for n, m in leaves if isinstance(m, Conv2d)]
    if convs:
        name, first = convs[0]
        figs.append(_Figure(
            "filters.png", "First-layer filters",
            f"The kernels of the first convolution ({name}: {first!r}), each scaled to its "
            "own range.", fg.filter_grid(first.weight.data, f"{name} weight "
                                         f"{tuple(first.weight.shape)}")))
        with eval_mode(model), capture_outputs(convs) as conv_io:
            logits = model.forward(inp.image[None])
        figs.append(_Figure(
            "feature_maps.png", "Feature maps",
            f"The output of each convolution for the input below (first "
            f"{fg.MAX_CHANNELS} channels, before the activation).",
            fg.feature_maps([(f"{n} {type(m).__name__}", conv_io[n][1][0]) for n, m in convs])))
    else:
        notes.append("The model has no convolution: no filters or feature maps to show.")
        with eval_mode(model):
            logits = model.forward(inp.image[None])

    predicted = int(np.argmax(logits[0]))
    display = fg.to_display(inp.image, mean, std)
    grad = saliency(model, inp.image, predicted)
    figs.append(_Figure(
        "saliency.png", "Saliency map",
        "The gradient of the predicted class's score (its logit) with respect to each input "
        "pixel, computed by the model's own backward pass in eval mode: bright pixels are "
        "the ones whose change would move the score most.",
        fg.saliency_figure(display, saliency_map(grad),
                           f"score of class {_class_name(classes, predicted)} (predicted); "
                           f"true label {_class_name(classes, inp.label)}")))

    if any(isinstance(m, MaxPool2d) for _, m in leaves):
        routes = maxpool_routing(model, inp.image, predicted)
        figs.append(_Figure(
            "maxpool_routing.png", "Max-pool gradient routing",
            "Max pooling sends each window's gradient to the one input that won its max; "
            "every other position gets none. Middle: how many windows picked each position "
            "(black: none, so no gradient can reach it through this layer). Right: the "
            "predicted class's gradient that actually arrived.",
            fg.routing_figure(routes)))
    else:
        notes.append("The model has no MaxPool2d layer: no routing map.")
    return figs


def _stats_tables(stats: dict[str, Any]) -> str:
    """The last recorded step's values, per layer and per parameter, as HTML tables."""
    def cell(value: Any) -> str:
        if value is None:
            return "<td>&ndash;</td>"
        return f"<td>{value:.4g}</td>" if isinstance(value, float) else f"<td>{value}</td>"

    keys = ("mean", "std", "zero_fraction", "dead_units", "saturation", "grad_input_norm")
    rows = []
    for entry in stats["layers"]:
        values = stats["layer_stats"][entry["name"]]
        rows.append(f"<tr><td>{html.escape(entry['name'])}</td><td>{entry['type']}</td>"
                    + "".join(cell(values[k][-1]) for k in keys) + "</tr>")
    layer_table = ("<table><tr><th>layer</th><th>type</th><th>mean</th><th>std</th>"
                   "<th>zero fraction</th><th>dead units</th><th>saturation</th>"
                   "<th>||dL/dx||</th></tr>" + "".join(rows) + "</table>")
    rows = []
    for entry in stats["params"]:
        values = stats["param_stats"][entry["name"]]
        rows.append(f"<tr><td>{html.escape(entry['name'])}</td><td>{tuple(entry['shape'])}</td>"
                    + "".join(cell(values[k][-1])
                              for k in ("weight_norm", "grad_norm", "update_ratio")) + "</tr>")
    param_table = ("<table><tr><th>parameter</th><th>shape</th><th>||w||</th><th>||dL/dw||</th>"
                   "<th>||&Delta;w|| / ||w||</th></tr>" + "".join(rows) + "</table>")
    return layer_table + param_table


_STYLE = """
body { font-family: sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
figure { margin: 0 0 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child { text-align: left; }
.note { background: #fff6d8; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; }
.flag { background: #fde2e2; border-left: 4px solid #c00; padding: 0.4em 0.8em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""

# Marks the body with how many images decoded, so a headless browser test (and a reader
# of the DOM) can check the report without a network or a screenshot.
_CHECK_IMAGES = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
});
</script>"""


def _html(title: str, model: Layer, inp: ReportInput, figs: list[_Figure],
          stats: dict[str, Any] | None, notes: list[str], meta: dict[str, Any]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    facts = [f"<b>input</b>: {html.escape(inp.source)}"]
    facts += [f"<b>{html.escape(str(k))}</b>: {html.escape(str(v))}" for k, v in meta.items()]
    parts.append("<p>" + "<br>".join(facts) + "</p>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    if stats is not None and stats.get("step"):
        flags = flags_of(stats)
        css = "flag" if flags["dead_units"] or flags["vanishing"] or flags["exploding"] else "note"
        parts.append(f"<h2>Flags (last recorded step, step {stats['step'][-1]})</h2>"
                     f"<pre class='{css}'>{html.escape(format_flags(flags))}</pre>")
    for fig in figs:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(f"<h2>{html.escape(fig.heading)}</h2><figure>"
                     f"<img src='data:image/png;base64,{data}' alt='{html.escape(fig.heading)}'>"
                     f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    if stats is not None and stats.get("step"):
        parts.append("<h2>Recorded statistics at the last step</h2>" + _stats_tables(stats))
    parts.append(f"<h2>Model</h2><pre>{html.escape(repr(model))}</pre>")
    parts.append(_CHECK_IMAGES + "</body></html>")
    return "\n".join(parts)


def build_report(model: Layer, out_dir: str | os.PathLike, inp: ReportInput,
                 stats: dict[str, Any] | None = None, classes: list[str] | None = None,
                 mean: Any = None, std: Any = None, title: str = "chainrule inspect",
                 notes: list[str] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Draw every figure of ``model`` for ``inp`` into ``out_dir`` (PNGs and
    ``report.html``); returns the HTML's path. ``stats`` (from ``load_stats``) adds the
    gradient-flow plot and tables; without it the report says so. ``mean``/``std``
    undo the input normalization for display. The model is left as it was."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(inp.notes) + list(notes or [])
    if stats is None or not stats.get("step"):
        notes.insert(0, f"No recorded statistics ({STATS_FILENAME}): train with --inspect to "
                        "record the gradient flow, activation statistics and flags. The "
                        "figures below need only the checkpoint.")
    figs = _figures(model, inp, stats, classes, mean, std, notes)
    for fig in figs:
        (out_dir / fig.filename).write_bytes(fig.png)
    path = out_dir / REPORT_NAME
    path.write_text(_html(title, model, inp, figs, stats, notes, meta or {}), encoding="utf-8")
    return path


def _report_input(image: str | os.PathLike | None, meta: dict[str, Any], in_channels: int,
                  input_size: int, seed: int) -> ReportInput:
    from ..data import DatasetError

    mean, std = meta.get("mean"), meta.get("std")
    sample, why = None, ""
    name = meta.get("data")  # what `chainrule train` stores (runner.TrainingRun._metadata)
    if name:
        try:
            sample = dataset_input(name, mean, std, seed=seed,
                                   data_dir=meta.get("args", {}).get("data_dir"),
                                   image_size=meta.get("args", {}).get("image_size"))
        except (DatasetError, OSError, ValueError) as err:
            # The data set is not available here (not downloaded, a package missing):
            # no reason to give up the report, which falls back and says so.
            why = f"the data set {name!r} could not be loaded ({err})"
    else:
        why = "the checkpoint names no data set"
    if image is not None:
        x = load_image(image, in_channels, input_size, mean, std)
        batch = sample.batch if sample is not None else x[None]
        notes = [] if sample is not None else [
            f"Activation histograms use only the given image: {why}."]
        return ReportInput(x, None, batch, f"{image} (--image)", notes)
    if sample is not None:
        return sample
    fallback = synthetic_input(in_channels, input_size, seed)
    fallback.notes.insert(0, f"No real input: {why}, and no --image was given.")
    return fallback


def find_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``best.safetensors`` in ``run_dir``, else ``last.safetensors``."""
    run_dir = Path(run_dir)
    for name in CHECKPOINT_NAMES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir}: no {' or '.join(CHECKPOINT_NAMES)}; is it a "
                            "chainrule train run folder?")


def inspect_run(run_dir: str | os.PathLike, image: str | os.PathLike | None = None,
                out_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write the report of a training run folder (default: into the folder itself).

    Reads the checkpoint (``best`` else ``last``), the statistics file if training
    recorded one, and the input: ``image`` if given, else a seeded test image of the
    checkpoint's data set, else synthetic noise (the report then says so).
    """
    from ..checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    checkpoint_path = find_checkpoint(run_dir)
    checkpoint = load_checkpoint(checkpoint_path)
    model, meta = checkpoint.model, checkpoint.metadata
    convs = [m for _, m in leaf_layers(model) if isinstance(m, Conv2d)]
    declared = declared_image_shape(model)     # a graph's cr.Input((C, S, S))
    in_channels = meta.get("in_channels") or (declared[0] if declared else None) or (
        convs[0].in_channels if convs else None)
    input_size = meta.get("input_size") or (declared[1] if declared else None)
    if in_channels is None or input_size is None:
        raise ValueError(f"{checkpoint_path}: the metadata lacks in_channels/input_size, "
                         "so the input shape is unknown")
    stats = load_stats(run_dir) if (run_dir / STATS_FILENAME).is_file() else None
    inp = _report_input(image, meta, int(in_channels), int(input_size), seed)
    shown = {"run": str(run_dir), "checkpoint": checkpoint_path.name}
    shown.update({k: meta[k] for k in ("model_name", "data", "epoch") if k in meta})
    best = meta.get("best")
    if isinstance(best, dict) and {"metric", "value", "epoch"} <= best.keys():
        shown["best"] = f"{best['metric']} {best['value']:.4g} at epoch {best['epoch']}"
    return build_report(model, out_dir if out_dir is not None else run_dir, inp, stats=stats,
                        classes=meta.get("classes"), mean=meta.get("mean"),
                        std=meta.get("std"), title=f"chainrule inspect: {run_dir.name}",
                        meta=shown)
