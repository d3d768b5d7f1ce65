"""Classification metrics from predicted and true labels: confusion matrix, per-class
precision and recall."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Args:
        y_true: the true integer labels in [0, num_classes), shape (N,).
        y_pred: the predicted integer labels in [0, num_classes), shape (N,).
        num_classes: the number of classes.

    Returns:
        int64 (num_classes, num_classes); row sums are the class supports.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"confusion_matrix: expected two (N,) label arrays, got "
                         f"{y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} has labels outside [0, {num_classes})")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision ``C[k, k] / sum_i C[i, k]``, recall ``C[k, k] / sum_j C[k, j]``
    and support ``sum_j C[k, j]`` of a confusion matrix; a class never predicted (or never
    present) gets precision (recall) 0 rather than a division by zero, as scikit-learn does."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    return precision, recall, support.astype(np.int64)
