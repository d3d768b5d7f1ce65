"""ONNX's own operator tests through from_onnx, at the backend runner's tolerances (see
tests/interop/onnx_node_cases.py): every generated case of the importer's operators
either matches the expected outputs or is skipped with the reason the importer gives
(the unsupported node, its op type and why). ``pytest -rs`` lists the reasons."""

from __future__ import annotations

import collections
import warnings

import pytest

pytest.importorskip("onnx")

from .onnx_node_cases import node_cases, run_case  # noqa: E402

with warnings.catch_warnings():   # the generators' own overflow warnings (cast tests)
    warnings.simplefilter("ignore")
    CASES = node_cases()

# What this onnx release generates for the operators, and how many of them run: a
# regression that skips more cases fails here rather than hiding among the skips.
MIN_PASSED = 159


@pytest.mark.parametrize("op, case", CASES, ids=[c.name for _, c in CASES])
def test_operator_case(op, case):
    status, reason = run_case(op, case)
    if status == "skipped":
        pytest.skip(f"{op}: {reason}")


def test_the_counts():
    counts = collections.Counter(run_case(op, case)[0] for op, case in CASES)
    print(f"\nONNX operator tests: {len(CASES)} cases, {counts['passed']} passed, "
          f"{counts['skipped']} skipped")
    assert counts["passed"] >= MIN_PASSED, counts
    assert set(counts) <= {"passed", "skipped"}
