"""The report's figures, each returned as PNG bytes.

Matplotlib is used through ``matplotlib.figure.Figure`` only, never ``pyplot``: no global
backend is selected and no window can open, so this works headless and inside any
program that uses pyplot for something else.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

from .recorder import series
from .stats import DEFAULT_RATIO_THRESHOLD
from .saliency import PoolRouting

MAX_CHANNELS = 16  # feature maps / routing maps shown per layer


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No bbox_inches="tight": the constrained layout already fits everything, and
    # "tight" would draw the whole figure twice.
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _log_y(ax: Any) -> None:
    """A log y axis without minor ticks: matplotlib lays out every minor tick label of
    every axis, which made up most of a report's drawing time."""
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def to_display(x: np.ndarray, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> np.ndarray:
    """A normalized (C, H, W) image back to pixels in [0, 1] for ``imshow``:
    (H, W) for one channel, (H, W, 3) for three; other channel counts show channel 0.
    Without mean/std the image is min-max scaled."""
    x = np.asarray(x, dtype=np.float64)
    c = x.shape[0]
    if mean is not None and std is not None:
        x = x * np.asarray(std, dtype=np.float64).reshape(-1, 1, 1) \
            + np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    x = np.clip(x, 0.0, 1.0)
    return x.transpose(1, 2, 0) if c == 3 else x[0]


def _show(ax: Any, image: np.ndarray, **kwargs: Any) -> None:
    if image.ndim == 2:
        kwargs.setdefault("cmap", "gray")
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def gradient_flow(records: dict[str, Any]) -> bytes:
    """Four panels over the recorded steps: ||dL/dx|| of each layer, ||dL/dW|| and
    ||Δw||/||w|| of each weight, and the first/last gradient ratio with its thresholds."""
    steps = np.asarray(records["step"], dtype=np.float64)
    layers = records["layers"]
    # Weights only: biases and BatchNorm shifts would double the legend for little news.
    weights = [p["name"] for p in records["params"] if p["name"].endswith("weight")]
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    axes = fig.subplots(2, 2)

    ax = axes[0, 0]
    for color, entry in zip(_colors(len(layers)), layers):
        values = series(records["layer_stats"][entry["name"]]["grad_input_norm"])
        ax.plot(steps, values, color=color, lw=1, label=f"{entry['name']} {entry['type']}")
    _log_y(ax)
    ax.set(xlabel="step", title="||dL/dx|| at each layer's input")
    _legend(ax)

    for ax, key, title in ((axes[0, 1], "grad_norm", "||dL/dW|| of each weight"),
                           (axes[1, 0], "update_ratio", "update ratio ||Δw|| / ||w|| per step")):
        for color, name in zip(_colors(len(weights)), weights):
            ax.plot(steps, series(records["param_stats"][name][key]), color=color, lw=1,
                    label=name)
        _log_y(ax)
        ax.set(xlabel="step", title=title)
        _legend(ax)
    axes[1, 0].axhline(1e-3, color="gray", ls="--", lw=1)
    axes[1, 0].text(steps[0] if len(steps) else 0, 1e-3, " 1e-3 (rule of thumb)",
                    color="gray", fontsize=7, va="bottom")

    ax = axes[1, 1]
    threshold = records.get("ratio_threshold", DEFAULT_RATIO_THRESHOLD)
    ax.plot(steps, series(records["gradient_ratio"]), color="k", lw=1)
    for bound in (threshold, 1.0 / threshold):
        ax.axhline(bound, color="tab:red", ls="--", lw=1)
    first, last = records["ratio_layers"]
    _log_y(ax)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes[1, 1].set(xlabel="step",
                   title=f"||dL/dx|| at {first} / at {last} (red: vanishing / exploding)")
    return _png(fig)


def _legend(ax: Any) -> None:
    """Beside the panel, not on it: a deep network's legend would hide its lines."""
    n = len(ax.get_lines())
    ax.legend(fontsize=6.5, ncol=1 if n <= 16 else 2, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)


def _colors(n: int) -> list[tuple[float, ...]]:
    """n colors along viridis: early layers dark, late layers yellow."""
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def activation_histograms(outputs: list[tuple[str, np.ndarray]]) -> bytes:
    """One histogram per (title, array) of layer outputs, with mean and std in the title."""
    n = max(len(outputs), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    # Fixed spacing rather than a constrained layout, which measured every tick label of
    # every panel and took as long as the drawing itself.
    fig = Figure(figsize=(3.4 * cols, 2.6 * rows))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.5 / (2.6 * rows),
                        top=1 - 0.55 / (2.6 * rows), hspace=0.6, wspace=0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (title, values) in zip(axes, outputs):
        flat = np.asarray(values, dtype=np.float64).ravel()
        ax.hist(flat, bins=60, color="tab:blue")
        _log_y(ax)
        ax.set_title(f"{title}\nmean {flat.mean():.3g}, std {flat.std():.3g}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(outputs):]:
        ax.axis("off")
    return _png(fig)


def filter_grid(weight: np.ndarray, title: str) -> bytes:
    """The kernels of a conv weight (C_out, C_in, kh, kw) as a grid: RGB when C_in is 3,
    else one gray tile per (output, input) channel pair (at most 8 inputs). Each kernel
    is scaled to its own range, so the pattern shows, not the size."""
    c_out, c_in = weight.shape[:2]
    rgb = c_in == 3
    shown_in = 1 if rgb else min(c_in, 8)
    cols = min(c_out, 16) if shown_in == 1 else shown_in
    rows = math.ceil(c_out / cols) if shown_in == 1 else c_out
    tile = 1.1 if max(rows, cols) <= 8 else 0.8
    fig = Figure(figsize=(tile * cols + 0.5, tile * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    tiles = []
    for o in range(c_out):
        if rgb:
            tiles.append(to_display(weight[o]))
        else:
            tiles += [to_display(weight[o, i][None]) for i in range(shown_in)]
    for ax, tile in zip(axes, tiles):
        _show(ax, tile)
    for ax in axes[len(tiles):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def feature_maps(maps: list[tuple[str, np.ndarray]]) -> bytes:
    """One row per convolution: its output channels (C, H, W) for one input, the first
    ``MAX_CHANNELS``, each scaled to its own range."""
    cols = min(MAX_CHANNELS, max(m.shape[0] for _, m in maps))
    fig = Figure(figsize=(1.0 * cols + 1.5, 1.25 * len(maps) + 0.3), layout="constrained")
    axes = np.array(fig.subplots(len(maps), cols, squeeze=False))
    for row, (title, fmap) in zip(axes, maps):
        for c, ax in enumerate(row):
            if c < fmap.shape[0]:
                _show(ax, fmap[c], cmap="viridis")
            else:
                ax.axis("off")
        row[0].set_ylabel(title, fontsize=7)
    return _png(fig)


def saliency_figure(image: np.ndarray, grad_map: np.ndarray, title: str) -> bytes:
    """The input, its saliency map max_c |dScore/dx| and the two overlaid."""
    fig = Figure(figsize=(9, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    _show(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    _show(axes[1], grad_map, cmap="hot")
    axes[1].set_title("max over channels of |dScore/dx|", fontsize=9)
    _show(axes[2], image)
    axes[2].imshow(grad_map, cmap="hot", alpha=0.55, interpolation="nearest")
    axes[2].set_title("overlay", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def routing_figure(routes: list[PoolRouting], channels: int = 4) -> bytes:
    """Per MaxPool2d layer and for its first ``channels`` channels: the layer's input,
    the number of windows routing their gradient to each position (0 = none, black),
    and the class-score gradient that arrived there."""
    rows = len(routes) * min(channels, max(r.input.shape[0] for r in routes))
    fig = Figure(figsize=(8, 2.2 * rows + 0.4), layout="constrained")
    axes = np.array(fig.subplots(rows, 3, squeeze=False))
    row = 0
    for route in routes:
        for c in range(min(channels, route.input.shape[0])):
            ax_in, ax_count, ax_grad = axes[row]
            _show(ax_in, route.input[c], cmap="viridis")
            ax_in.set_ylabel(f"{route.name}, ch {c}", fontsize=8)
            _show(ax_count, route.count[c], cmap="gray", vmin=0,
                  vmax=max(int(route.count.max()), 1))
            g = np.abs(route.grad[c])
            _show(ax_grad, g, cmap="hot", vmin=0, vmax=max(float(g.max()), 1e-30))
            if row == 0:
                ax_in.set_title("pool input", fontsize=9)
                ax_count.set_title("windows routed here (white = argmax)", fontsize=9)
                ax_grad.set_title("|dScore/dx| that arrived", fontsize=9)
            row += 1
    return _png(fig)
