"""docs/how-to/interop.md's examples run as written, in order, and print what they promise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "interop.md"


def test_interop_doc_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 5, f"expected 5 python examples in {DOC.name}, found {len(blocks)}"
    monkeypatch.chdir(tmp_path)  # the examples write lenet5.onnx etc. in the working dir
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} example {index + 1}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    torch_diff, error, onnx_diff_1, onnx_diff_2, import_diff, saliency, checkpoint_diff, meta = \
        printed
    assert saliency == "(28, 28) True", printed
    for diff in (torch_diff, onnx_diff_1, onnx_diff_2, import_diff, checkpoint_diff):
        assert float(diff) < 1e-5, printed
    assert error.startswith("1.0: torch.nn.Softsign is not supported")
    assert meta == "{'in_channels': 1, 'input_size': 28} Sequential"
