"""The documentation site, built once for the tests of tests/docs/ (strict, with every
page's blocks run by tools/mkdocs_hooks.py, which reports what each block printed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@dataclass
class BuiltSite:
    """``site``: the built HTML; ``reports``: page (``tutorial/backprop.md``) -> the hook's
    report of its run (its kept ``workdir``; blocks with line, language, source, seconds,
    output, figures)."""

    site: Path
    reports: dict[str, dict]
    log: str


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> BuiltSite:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    base = tmp_path_factory.mktemp("docs")
    site, report_dir = base / "site", base / "reports"
    report_dir.mkdir()
    env = dict(os.environ, CHAINRULE_DOCS_REPORT=str(report_dir), CHAINRULE_DOCS_EXECUTE="1",
               NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    reports = {}
    for path in report_dir.glob("*.json"):
        report = json.loads(path.read_text())
        reports[report["page"]] = report
    return BuiltSite(site, reports, done.stderr)
