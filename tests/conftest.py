"""Session-wide test hooks: the parity report (see ``tests.helpers.WORST_PARITY``)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import WORST_PARITY


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("CHAINRULE_PARITY_REPORT")
    if path and WORST_PARITY.worst:
        Path(path).write_text(WORST_PARITY.table())
