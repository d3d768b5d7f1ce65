"""Faults: `chainrule train` killed with SIGKILL at arbitrary moments, including in the
middle of writing a checkpoint, always leaves a last checkpoint that loads, and
`--resume` from it ends with exactly the weights (and optimizer state) of a run that was
never interrupted. A checkpoint cut short at any byte is refused with CheckpointError.

SIGKILL cannot be caught: nothing in the process gets to clean up, so only the order of
the checkpoint writes protects the file (temporary file, fsync, rename). To kill during a
write every time rather than by luck, one run goes through a wrapper that makes
``os.fsync`` sleep, and is killed as soon as a temporary checkpoint file appears; the
checkpoint module itself is not changed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import chainrule as cr

SRC = Path(cr.__file__).resolve().parents[1]
EPOCHS = 2
ARGS = ["--data", "digits", "--model", "lenet5", "--epochs", str(EPOCHS), "--batch-size", "128",
        "--seed", "0", "--no-progress"]
TIMEOUT = 120

# Runs the CLI with a slow fsync, so that a checkpoint write lasts long enough to be
# killed in the middle of it.
SLOW_FSYNC = """
import os, sys, time
_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.5)
    _fsync(fd)
os.fsync = slow_fsync
from chainrule.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"   # the run's first line arrives when it is printed
    return env


def _train_command(out: Path, resume: bool, slow_fsync: bool = False) -> list[str]:
    head = [sys.executable, "-c", SLOW_FSYNC] if slow_fsync else [sys.executable, "-m", "chainrule"]
    return head + (["train", "--resume", str(out), "--no-progress"] if resume
                   else ["train", *ARGS, "--out", str(out)])


def _run(out: Path, resume: bool) -> list[float]:
    """Run to the end; returns the seconds from launch at which each output line came."""
    started = time.monotonic()
    process = subprocess.Popen(_train_command(out, resume), env=_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, times = [], []
    for line in process.stdout:
        lines.append(line)
        times.append(time.monotonic() - started)
    assert process.wait(timeout=TIMEOUT) == 0, "".join(lines)
    return times


def _temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".last.safetensors.*.tmp")) if out.exists() else []


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)


def _kill_after(out: Path, resume: bool, delay: float, from_training_start: bool) -> None:
    """SIGKILL a run ``delay`` seconds after it started, or after it printed its first
    line (the model summary, printed when the data is loaded and training begins)."""
    process = subprocess.Popen(_train_command(out, resume), env=_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if from_training_start:
            process.stdout.readline()
        process.wait(timeout=delay)   # it may finish first: then there is nothing to kill
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill(process)
        process.stdout.close()


def _kill_during_write(out: Path, nth: int) -> list[str]:
    """Start a fresh run with slow fsyncs and SIGKILL it while it writes its ``nth``
    last.safetensors; returns the temporary files left behind."""
    process = subprocess.Popen(_train_command(out, False, slow_fsync=True), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[str] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(seen) < nth and process.poll() is None and time.monotonic() < deadline:
            seen.update(_temporaries(out))
            time.sleep(0.005)
    finally:
        _kill(process)
    assert len(seen) >= nth, f"saw only {len(seen)} checkpoint writes before the run ended"
    return _temporaries(out)


def _checkpoint_epoch(path: Path) -> int:
    """Loads the checkpoint the way --resume does (model, optimizer, metadata)."""
    ckpt = cr.load_checkpoint(path)
    assert ckpt.optimizer_state is not None
    return int(ckpt.metadata["epoch"])


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(path)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path):
    reference = tmp_path / "uninterrupted"
    times = _run(reference, resume=False)
    # Its first line comes when training starts, the next at the end of epoch 1: the kill
    # moments below scale with these, so they land in the same phases on a busy machine.
    startup, epoch_time = times[0], times[1] - times[0]

    out = tmp_path / "killed"
    log = []
    # 1. Killed in the middle of writing the second last.safetensors (end of epoch 1):
    #    the temporary file is left behind, the previous checkpoint (epoch 0) is intact.
    left = _kill_during_write(out, nth=2)
    assert left, "the kill did not land inside a checkpoint write"
    assert _checkpoint_epoch(out / "last.safetensors") == 0
    log.append(("during write", 0))

    # 2. Killed at seeded random moments: one while starting up (imports, loading the
    #    checkpoint and the data), then during training, saving, testing or plotting.
    rng = np.random.default_rng(2024)
    moments = [(float(rng.uniform(0.1, 0.9)) * startup, False)]
    moments += [(float(f) * epoch_time, True) for f in rng.uniform(0.0, EPOCHS + 0.5, size=3)]
    for delay, from_training_start in moments:
        _kill_after(out, resume=True, delay=delay, from_training_start=from_training_start)
        epoch = _checkpoint_epoch(out / "last.safetensors")
        assert 0 <= epoch <= EPOCHS
        log.append((round(delay, 2), from_training_start, epoch))

    # 3. The last resume runs to the end and must equal the run never interrupted.
    _run(out, resume=True)
    assert _checkpoint_epoch(out / "last.safetensors") == EPOCHS, log
    ours, theirs = _tensors(out / "last.safetensors"), _tensors(reference / "last.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert any(k.startswith("optimizer.") for k in ours), "no optimizer state to compare"
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, key
        assert ours[key].tobytes() == theirs[key].tobytes(), f"{key} differs ({log})"


def test_a_checkpoint_cut_at_any_byte_is_refused(tmp_path):
    model = cr.Sequential(cr.Conv2d(1, 2, 3), cr.BatchNorm2d(2), cr.ReLU(), cr.Flatten(),
                          cr.Linear(8, 3)).reset_parameters(0)
    optimizer = cr.optim.Adam(model.parameters())
    cr.fit(model, cr.CrossEntropyLoss(), optimizer,
           (np.random.default_rng(0).standard_normal((4, 1, 4, 4)), np.array([0, 1, 2, 0])))
    path = cr.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    for length in range(path.stat().st_size - 1, -1, -1):
        os.truncate(path, length)      # (cheaper than rewriting the file each time)
        with pytest.raises(cr.CheckpointError):
            cr.load_checkpoint(path)
