"""The tutorial's notebook (docs/tutorial/backprop.ipynb) is the page's twin, paired by
Jupytext, and runs from top to bottom in a Jupyter kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .conftest import DOCS

PAGE = DOCS / "tutorial" / "backprop.md"
NOTEBOOK = DOCS / "tutorial" / "backprop.ipynb"


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_the_notebook_is_the_page_paired_by_jupytext():
    jupytext = pytest.importorskip("jupytext")
    from_page = jupytext.read(PAGE)
    committed = jupytext.read(NOTEBOOK)
    assert cells(committed) == cells(from_page), (
        "docs/tutorial/backprop.ipynb differs from its page: run "
        "`jupytext --sync docs/tutorial/backprop.md`")
    assert any(source.startswith("%%bash\nchainrule train") for _, source in cells(committed))


def test_the_notebook_runs_from_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter; its %%bash cells find this venv's `chainrule`.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError, with the cell and traceback, on any failure
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert printed.count("worst relative error") == 4
    assert "test accuracy" in printed and "dL/dweight" in printed
    assert (tmp_path / "run" / "report.html").exists()
