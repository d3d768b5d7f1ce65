"""The pictures of a run: learning curves and the confusion matrix, written as PNG files.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
not through ``pyplot``, so no window opens, no global backend is switched, and nothing
piles up in pyplot's figure registry over a long run.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._files import write_atomically


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)  # attaches itself to the figure
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    write_atomically(path, png.getvalue())   # a reader never sees half a PNG
    return path


def plot_curves(history: Sequence[Mapping[str, float | None]], path: str | Path,
                title: str = "") -> Path:
    """Loss and accuracy per epoch, training and validation, side by side.

    Args:
        history: one mapping per epoch with ``epoch``, ``train_loss``, ``train_accuracy``
            and, when there is a validation split, ``val_loss``, ``val_accuracy``
            (missing or None values are skipped).
        path: the PNG to write.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = [row["epoch"] for row in history]
    for ax, metric, label in zip(fig.subplots(1, 2), ("loss", "accuracy"),
                                 ("cross-entropy loss", "accuracy")):
        for split, style in (("train", "o-"), ("val", "s--")):
            points = [(e, row.get(f"{split}_{metric}")) for e, row in zip(epochs, history)]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, label="training" if split == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if epochs:
            ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """A confusion matrix as a heat map, rows = true class, columns = predicted class,
    each cell labelled with its count; colours are normalized per row (recall) so that
    small classes are as readable as large ones."""
    matrix = np.asarray(matrix)
    k = len(classes)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(4.0, 0.55 * k + 2)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    long_names = max(map(len, classes), default=0) > 3  # e.g. "automobile": slant them
    ax.set_xticks(range(k), labels=list(classes), rotation=45 if long_names else 0,
                  ha="right" if long_names else "center")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path)
