"""Hypothesis profiles of the property tests, and the switch that keeps long runs opt-in.

Every property in this directory exists twice: a quick test that runs in the default
suite with the ``chainrule-quick`` profile (25 examples), and a ``@pytest.mark.fuzz``
twin with the ``chainrule-fuzz`` profile (``CHAINRULE_FUZZ_EXAMPLES`` examples, 2000
unless set); ``twins.quick_and_fuzz`` makes both from one test. The fuzz twins are
skipped unless the run selects them::

    pytest -m fuzz tests/fuzz                              # 2000 examples per property
    CHAINRULE_FUZZ_EXAMPLES=10000 pytest -m fuzz tests/fuzz
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("chainrule-quick", max_examples=25, **_COMMON)
settings.register_profile(
    "chainrule-fuzz", max_examples=int(os.environ.get("CHAINRULE_FUZZ_EXAMPLES", "2000")), **_COMMON)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("fuzz") and "fuzz" not in (item.config.getoption("markexpr") or ""):
        pytest.skip("long property-based run: select it with `pytest -m fuzz`")
