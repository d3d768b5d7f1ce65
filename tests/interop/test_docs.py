"""docs/how-to/interop.md runs as a reader runs it (tools.docexec: every python and bash
block, in order) and prints what it promises; its own asserts check the differences."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from tools import docexec  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "interop.md"


def test_interop_doc_examples_run(tmp_path):
    page = docexec.run_page(DOC, tmp_path)
    printed = "".join(run.output for run in page.runs).splitlines()

    def value(prefix: str) -> float:
        lines = [line for line in printed if line.startswith(prefix)]
        assert len(lines) == 1, (prefix, printed)
        return float(lines[0].rsplit(" ", 1)[1])

    for prefix in ("to_torch: max difference", "ONNX Runtime, batch 1: max difference",
                   "ONNX Runtime, batch 8: max difference", "from_onnx: max difference",
                   "checkpoint in torch: max difference", "imported: max difference",
                   "fine-tuned, in torch: max difference"):
        assert value(prefix) < 1e-5, printed
    assert "(28, 28) True" in printed
    assert any(line.startswith("1.0: torch.nn.Softsign is not supported") for line in printed)
    assert "{'in_channels': 1, 'input_size': 28} Sequential" in printed
    assert printed.count("wrote model.onnx: input (N, 1, 28, 28) -> output (N, 10)") == 2
    assert any(line.startswith("wrote net.safetensors:") for line in printed)
    accuracy = [line for line in printed if line.startswith("val accuracy on all 10 digits")]
    assert len(accuracy) == 1, printed
    for name in ("model.onnx", "lenet5.onnx", "net.onnx", "net.safetensors"):
        assert (tmp_path / name).is_file(), name
