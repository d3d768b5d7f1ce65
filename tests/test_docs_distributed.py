"""docs/how-to/distributed.md runs as a reader runs it (tools.docexec: `chainrule train
--workers 2` and `mpiexec -n 2 python train_ddp.py` on two processes): rank 0 alone
prints, and the checkpoint is the last epoch's."""

from __future__ import annotations

import chainrule as cr
from tests.test_distributed import ROOT, needs_mpi
from tools import docexec

DOC = ROOT / "docs" / "how-to" / "distributed.md"


@needs_mpi
def test_the_page_runs_on_two_processes(tmp_path):
    page = docexec.run_page(DOC, tmp_path)
    bash = [run for run in page.runs if run.block.language == "bash"]
    script = [run for run in bash if "train_ddp.py" in run.block.source]
    assert len(bash) == 2 and len(script) == 1, [run.block.source for run in bash]

    cli = [line for line in bash[0].output.splitlines() if line]
    assert sum(line.startswith("epoch 1/2 ") for line in cli) == 1, cli    # rank 0 only
    assert sum(line.startswith("epoch 2/2 ") for line in cli) == 1, cli
    assert "2 processes -> runs/digits" in cli[0], cli
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png"):
        assert name in cli, cli
        assert (tmp_path / "runs" / "digits" / name).is_file()

    lines = [line for line in script[0].output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("2 processes, loss "), lines  # rank 0 only
    assert cr.load_checkpoint(tmp_path / "ddp.safetensors").metadata["epoch"] == 3
