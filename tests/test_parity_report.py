"""The parity report: the worst error per layer class and dtype, over every call."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import WORST_PARITY, _WorstParity, assert_torch_parity


def test_the_report_keeps_the_worst_error_per_class_and_dtype():
    report = _WorstParity()
    report.record(cr.ReLU(), np.float64, {"forward": 1e-16, "input_grad": 3e-16})
    report.record(cr.ReLU(), np.float64, {"forward": 2e-16, "input_grad": 0.0})
    report.record(cr.ReLU(), np.float32, {"forward": 5e-8, "input_grad": 1e-7})
    report.record(cr.Tanh(), np.float64, {"forward": 4e-16})
    assert report.worst[("ReLU", "float64")] == (3e-16, "input_grad of ReLU()")
    lines = report.table().splitlines()
    assert lines[2] == "| ReLU | 3.0e-16 | 1.0e-07 | input_grad of ReLU() |"
    assert lines[3] == "| Tanh | 4.0e-16 | nan |  |"


def test_assert_torch_parity_records_into_the_session_report():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(0.5, 1.5, (2, 3)) * np.array([1, -1, 1])
    errors = assert_torch_parity(cr.SiLU(), torch.nn.SiLU(), x)
    assert WORST_PARITY.worst[("SiLU", "float64")][0] >= max(errors.values())
