"""The ``chainrule`` command end to end: real subprocesses on tiny slices of ``digits``
for training (artifacts, resume, Ctrl-C, non-finite loss), in-process ``main`` for the
quick commands."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.data.datasets import normalize
from chainrule.runner import CSV_COLUMNS

pytest.importorskip("sklearn", reason="the CLI tests train on digits (chainrule[datasets])")

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--data", "digits", "--batch-size", "16", "--limit", "256", "--scheduler", "step",
        "--step-size", "1", "--gamma", "0.5"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def chainrule(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chainrule", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Two uninterrupted epochs, with the progress bar on."""
    root = tmp_path_factory.mktemp("cli")
    done = chainrule("train", *TINY, "--epochs", "2", "--out", "a", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "a", done


def _load(path: Path):
    ckpt = cr.load_checkpoint(path)
    return ckpt.model.state_dict(), ckpt.optimizer_state, ckpt.metadata


def test_train_writes_every_artifact(run_a):
    out, done = run_a
    for name in ("last.safetensors", "best.safetensors", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and tuple(rows[0]) == CSV_COLUMNS
    assert float(rows[1]["lr"]) == pytest.approx(float(rows[0]["lr"]) * 0.5)  # step schedule
    summaries = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(summaries) == 2 and "val loss" in summaries[0] and "acc" in summaries[0]
    assert "test (best checkpoint" in done.stdout
    assert "img/s" in done.stderr  # the tqdm bar's postfix
    meta = _load(out / "last.safetensors")[2]
    assert meta["epoch"] == 2 and meta["data"] == "digits" and len(meta["history"]) == 2


def test_resume_ends_with_the_same_weights(run_a, tmp_path):
    first = chainrule("train", *TINY, "--epochs", "1", "--out", "b", "--no-progress",
                      cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = chainrule("train", "--resume", "b", "--epochs", "2", "--no-progress", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    (wa, oa, ma), (wb, ob, mb) = _load(run_a[0] / "last.safetensors"), _load(
        tmp_path / "b" / "last.safetensors")
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    for index, state in oa["state"].items():
        for name, value in state.items():
            np.testing.assert_array_equal(value, ob["state"][index][name])
    assert ma["scheduler_config"]["state"] == mb["scheduler_config"]["state"]
    assert mb["epoch"] == 2


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainrule", "train", *TINY, "--epochs", "1000", "--out", "c",
         "--no-progress"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:  # wait until an epoch has finished: training is under way
            if line.startswith("epoch ") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "saved a resumable checkpoint" in stderr and "--resume c" in stderr
    meta = _load(tmp_path / "c" / "last.safetensors")[2]
    assert meta["epoch"] >= 1
    target = meta["epoch"] + 1
    resumed = chainrule("train", "--resume", "c", "--epochs", str(target), "--no-progress",
                        cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _load(tmp_path / "c" / "last.safetensors")[2]["epoch"] == target


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    done = chainrule("train", "--data", "digits", "--limit", "64", "--batch-size", "16",
                     "--optimizer", "sgd", "--lr", "1e12", "--epochs", "2", "--out", "n",
                     "--no-progress", cwd=tmp_path)
    assert done.returncode == 1
    assert "the loss became" in done.stderr and "at epoch 1, step" in done.stderr
    weights, _, meta = _load(tmp_path / "n" / "last.safetensors")
    assert meta["epoch"] == 0 and all(np.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "n" / "best.safetensors").exists()


def test_evaluate_prints_a_table_and_writes_the_confusion_matrix(run_a, tmp_path, capsys):
    assert main(["evaluate", str(run_a[0] / "best.safetensors"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "precision   recall  support" in out
    table = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [row[0] for row in table] == [str(k) for k in range(10)]
    assert sum(int(row[-1]) for row in table) == 359  # the supports add up to the test split
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG_MAGIC


def test_predict_reads_png_and_jpeg_like_training_data(run_a, tmp_path, capsys):
    image_module = pytest.importorskip("PIL.Image", reason="predict needs Pillow")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)          # the model's own size
    image_module.fromarray(gray, mode="L").save(tmp_path / "digit.png")
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)      # colour, other size
    image_module.fromarray(rgb, mode="RGB").save(tmp_path / "photo.jpg")

    ckpt = run_a[0] / "best.safetensors"
    assert main(["predict", str(ckpt), str(tmp_path / "digit.png"),
                 str(tmp_path / "photo.jpg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.count("%") == 3 for line in lines)

    # The first line must be what the model says about the same pixels, normalized alike.
    loaded = cr.load_checkpoint(ckpt)
    x = normalize(gray[None, None], 255.0, loaded.metadata["mean"], loaded.metadata["std"])
    logits = cr.predict(loaded.model, x)[0].astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = int(probs.argmax())
    assert lines[0].split(": ", 1)[1].startswith(f"{top} {probs[top]:.2%}")


def test_models_and_datasets_commands(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("lenet5", "cifar_cnn", "resnet_mini"):
        assert name in out
    assert "61,706 parameters" in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist-5k", "mnist", "fashion-mnist", "kmnist", "cifar10"):
        assert f"\n{name} " in "\n" + out


def test_user_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["train", "--data", "mnist", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chainrule: error:") and "--download" in err
    assert main(["evaluate", str(tmp_path / "missing.safetensors")]) == 1
    assert "no checkpoint file" in capsys.readouterr().err


def test_inspect_export_and_explain_commands_are_wired(tmp_path):
    done = chainrule("train", *TINY, "--epochs", "1", "--out", "r", "--inspect", "--no-progress",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "r" / "inspect.json").read_text())
    assert stats["epoch"][:2] == [0, 0] and all(np.isfinite(stats["loss"])), "steps not labelled"

    done = chainrule("inspect", "r", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "report.html").read_bytes().count(b"data:image/png;base64,") >= 6

    done = chainrule("export", "r/best.safetensors", "m.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 1000

    done = chainrule("explain", "--model", "lenet5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "dL/dx = dL/dy * [x > 0]" in done.stdout


def test_evaluate_a_checkpoint_without_shape_metadata_is_a_clear_error(tmp_path, capsys):
    # A checkpoint of cr.save (no metadata) whose model takes 28x28 images, on 8x8 digits.
    model = cr.models.MODELS["lenet5"](in_channels=1, input_size=28, num_classes=10, seed=0)
    cr.save(model, tmp_path / "plain.safetensors")
    assert main(["evaluate", str(tmp_path / "plain.safetensors"), "--data", "digits"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chainrule: error:") and "Traceback" not in err
    assert "no in_channels/input_size metadata" in err and "1x8x8 images" in err
