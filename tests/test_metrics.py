"""Confusion matrix and per-class precision/recall."""

from __future__ import annotations

import numpy as np
import pytest

from chainrule.metrics import confusion_matrix, precision_recall


def test_counts_and_rates_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 1])
    matrix = confusion_matrix(y_true, y_pred, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 1] = 2, 1, 2, 1
    np.testing.assert_array_equal(matrix, expected)
    precision, recall, support = precision_recall(matrix)
    np.testing.assert_allclose(precision, [1.0, 0.5, 0.0, 0.0])  # class 3: never predicted
    np.testing.assert_allclose(recall, [2 / 3, 1.0, 0.0, 0.0])   # class 3: never present
    np.testing.assert_array_equal(support, [3, 2, 1, 0])


def test_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    matrix = confusion_matrix(y_true, y_pred, 5)
    np.testing.assert_array_equal(matrix, metrics.confusion_matrix(y_true, y_pred, labels=range(5)))
    precision, recall, _ = precision_recall(matrix)
    np.testing.assert_allclose(precision, metrics.precision_score(y_true, y_pred, average=None))
    np.testing.assert_allclose(recall, metrics.recall_score(y_true, y_pred, average=None))


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"y_pred has labels outside \[0, 3\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)
