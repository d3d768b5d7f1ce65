"""Timing helpers the A/B benchmarks share: per-call wall-clock and process CPU time,
and the quartiles of per-round ratios."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_calls(fn: Callable[[], object], steps: int) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds per call of ``fn`` over ``steps`` calls. The
    process CPU time is the steadier clock on a loaded machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values`` (one value: itself three times)."""
    if len(values) < 2:
        return (values[0],) * 3
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, statistics.median(values), q3
