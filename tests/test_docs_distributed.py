"""docs/how-to/distributed.md's example runs as written on two processes under mpiexec."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import chainrule as cr
from tests.test_distributed import ROOT, mpi_env, mpiexec, needs_mpi

DOC = ROOT / "docs" / "how-to" / "distributed.md"


@needs_mpi
def test_the_two_process_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "train_ddp.py").write_text(blocks[0])
    done = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", sys.executable,
                           "train_ddp.py"], cwd=tmp_path, env=mpi_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # Numba imports colorama when it is installed, whose colorama.init() writes a colour
    # reset (ESC[0m) at exit when stdout is a terminal, as mpiexec's forwarding pty is.
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout).splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("2 processes, loss "), lines  # rank 0 only
    assert cr.load_checkpoint(tmp_path / "ddp.safetensors").metadata["epoch"] == 3
