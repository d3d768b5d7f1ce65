"""What the how-to pages promise, read from the site build's run of them (the report and
the files each page wrote in its working directory): no page runs twice in the suite."""

from __future__ import annotations

from pathlib import Path

import chainrule as cr


def printed(report: dict) -> list[str]:
    return "".join(block["output"] for block in report["blocks"]).splitlines()


def test_the_interop_page_prints_what_it_promises(built_site):
    report = built_site.reports["how-to/interop.md"]
    lines = printed(report)

    def value(prefix: str) -> float:
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, lines)
        return float(found[0].rsplit(" ", 1)[1])

    for prefix in ("to_torch: max difference", "ONNX Runtime, batch 1: max difference",
                   "ONNX Runtime, batch 8: max difference", "from_onnx: max difference",
                   "checkpoint in torch: max difference", "imported: max difference",
                   "fine-tuned, in torch: max difference"):
        assert value(prefix) < 1e-5, lines
    assert "(28, 28) True" in lines
    assert any(line.startswith("1.0: torch.nn.Softsign is not supported") for line in lines)
    assert "{'in_channels': 1, 'input_size': 28} Sequential" in lines
    assert lines.count("wrote model.onnx: input (N, 1, 28, 28) -> output (N, 10)") == 2
    assert any(line.startswith("wrote net.safetensors:") for line in lines)
    accuracy = [line for line in lines if line.startswith("val accuracy on all 10 digits")]
    assert len(accuracy) == 1, lines
    for name in ("model.onnx", "lenet5.onnx", "net.onnx", "net.safetensors"):
        assert (Path(report["workdir"]) / name).is_file(), name


def test_the_distributed_page_runs_on_two_processes(built_site):
    # `chainrule train --workers 2` and `mpiexec -n 2 python train_ddp.py`: rank 0 alone
    # prints, and the checkpoint is the last epoch's.
    report = built_site.reports["how-to/distributed.md"]
    workdir = Path(report["workdir"])
    bash = [block for block in report["blocks"] if block["language"] == "bash"]
    script = [block for block in bash if "train_ddp.py" in block["source"]]
    assert len(bash) == 2 and len(script) == 1, [block["source"] for block in bash]

    cli = [line for line in bash[0]["output"].splitlines() if line]
    assert sum(line.startswith("epoch 1/2 ") for line in cli) == 1, cli    # rank 0 only
    assert sum(line.startswith("epoch 2/2 ") for line in cli) == 1, cli
    assert "2 processes -> runs/digits" in cli[0], cli
    for name in ("best.safetensors", "last.safetensors", "metrics.csv", "curves.png"):
        assert name in cli, cli
        assert (workdir / "runs" / "digits" / name).is_file()

    lines = [line for line in script[0]["output"].splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("2 processes, loss "), lines  # rank 0 only
    assert cr.load_checkpoint(workdir / "ddp.safetensors").metadata["epoch"] == 3
