"""The two runs of one property: a quick test and its ``fuzz`` twin (see ``conftest.py``)."""

from __future__ import annotations

from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis.strategies import SearchStrategy

QUICK = settings.get_profile("chainrule-quick")
FUZZ = settings.get_profile("chainrule-fuzz")


def quick_and_fuzz(strategy: SearchStrategy) -> Callable[[Callable], Callable]:
    """Decorate ``def test_x(case)``: ``test_x`` becomes the quick test (the
    ``chainrule-quick`` profile) of ``case`` drawn from ``strategy``, and ``test_x_fuzz``,
    added beside it in the test's module, the ``fuzz``-marked twin (the ``chainrule-fuzz``
    profile). Both run the same body, so they share Hypothesis's example database: a
    failure the long run found is replayed by the quick one."""
    def decorate(test: Callable) -> Callable:
        test.__globals__[f"{test.__name__}_fuzz"] = pytest.mark.fuzz(FUZZ(given(strategy)(test)))
        return QUICK(given(strategy)(test))
    return decorate
