"""`chainrule export CKPT OUT.onnx`, driven through its own argparse sub-parser."""

from __future__ import annotations

import argparse

import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import chainrule as cr  # noqa: E402
from chainrule.interop.cli_export import add_export_parser  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import inputs, warm_up  # noqa: E402


def export(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="chainrule")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    return args.func(args)


@pytest.fixture
def checkpoint(tmp_path):
    model = warm_up(cr.models.lenet5(in_channels=1, input_size=12, num_classes=3, seed=0), (1, 12, 12))
    path = tmp_path / "best.safetensors"
    cr.save(model, path, in_channels=1, input_size=12)
    return model.eval(), path


def test_export_reads_the_input_shape_from_metadata(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    out = tmp_path / "onnx" / "model.onnx"
    assert export(str(path), str(out)) == 0
    assert "input (N, 1, 12, 12) -> output (N, 3)" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = inputs((1, 12, 12), batch, batch)
        assert rel_error(session.run(None, {"input": x})[0], model.forward(x)) <= 1e-5


def test_export_input_shape_flag_and_errors(tmp_path):
    model = cr.Sequential(cr.Conv2d(2, 3, 3), cr.AdaptiveAvgPool2d(1), cr.Flatten())
    cr.save(model, tmp_path / "plain.safetensors")  # no shape metadata
    with pytest.raises(SystemExit, match="pass --input-shape C,H,W"):
        export(str(tmp_path / "plain.safetensors"), str(tmp_path / "m.onnx"))
    assert export(str(tmp_path / "plain.safetensors"), str(tmp_path / "m.onnx"),
                  "--input-shape", "2,7,9") == 0
    with pytest.raises(SystemExit, match="expected 2 input channels"):
        export(str(tmp_path / "plain.safetensors"), str(tmp_path / "m.onnx"), "--input-shape", "3,7,9")
    with pytest.raises(SystemExit, match="no checkpoint file"):
        export(str(tmp_path / "missing.safetensors"), str(tmp_path / "m.onnx"))
    with pytest.raises(SystemExit):  # argparse rejects a malformed shape
        export(str(tmp_path / "plain.safetensors"), str(tmp_path / "m.onnx"), "--input-shape", "2,x")
