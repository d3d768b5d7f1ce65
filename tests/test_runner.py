"""The resumable training run behind ``chainrule train``, in process: a Ctrl-C in the
middle of an epoch, then a resume, ends with exactly the weights of a run never stopped
(shuffling, augmentation and dropout all included)."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import chainrule as cr
from chainrule.runner import Interrupted, RunError, TrainConfig, TrainingRun
from tests.helpers import interrupt_after

pytest.importorskip("sklearn", reason="the runs train on digits (chainrule[datasets])")

# cifar_cnn has BatchNorm and Dropout; --augment adds shifts: every source of randomness.
CONFIG = dict(data="digits", model="cifar_cnn", epochs=2, batch_size=16, limit=64,
              augment=True, seed=3, progress=False, optimizer="sgd", momentum=0.9,
              scheduler="cosine")
STEPS_PER_EPOCH = 4


def _quiet(message: str) -> None:
    pass


def _weights_and_state(path):
    ckpt = cr.load_checkpoint(path)
    return ckpt.model.state_dict(), ckpt.optimizer_state, ckpt.metadata


def _assert_same_run(a, b):
    (wa, oa, ma), (wb, ob, mb) = a, b
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)  # bitwise
    for index, state in oa["state"].items():
        for name, value in state.items():
            np.testing.assert_array_equal(value, ob["state"][index][name], err_msg=name)
    assert oa["param_groups"] == ob["param_groups"]
    assert ma["epoch"] == mb["epoch"] and ma["step"] == mb["step"] == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"])


def test_interrupt_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGINT)  # Python's, or SIG_IGN in a background job
    straight = TrainingRun.start(TrainConfig(**CONFIG, out=str(tmp_path / "a")), log=_quiet)
    straight.train()

    interrupt_after(monkeypatch, STEPS_PER_EPOCH + 2)  # step 2 of epoch 2
    stopped = TrainingRun.start(TrainConfig(**CONFIG, out=str(tmp_path / "b")), log=_quiet)
    with pytest.raises(Interrupted) as info:
        stopped.train()
    assert (info.value.epoch, info.value.step) == (1, 2)
    meta = cr.load_checkpoint(tmp_path / "b" / "last.safetensors").metadata
    assert (meta["epoch"], meta["step"]) == (1, 2)
    assert meta["partial"]["seen"] == 32 and len(meta["dropout_states"]) == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored

    monkeypatch.undo()
    TrainingRun.resume(tmp_path / "b", log=_quiet).train()
    a = _weights_and_state(tmp_path / "a" / "last.safetensors")
    b = _weights_and_state(tmp_path / "b" / "last.safetensors")
    _assert_same_run(a, b)
    assert a[2]["best"] == b[2]["best"]


def test_resume_refuses_options_that_change_the_run(tmp_path):
    out = tmp_path / "r"
    TrainingRun.start(TrainConfig(data="digits", epochs=1, limit=32, batch_size=16,
                                  progress=False, out=str(out)), log=_quiet).train()
    with pytest.raises(RunError, match="--lr cannot change when resuming"):
        TrainingRun.resume(out, {"lr": 0.5}, log=_quiet)
    with pytest.raises(RunError, match="already holds a run"):
        TrainingRun.start(TrainConfig(data="digits", out=str(out)), log=_quiet)
    meta = cr.load_checkpoint(out / "best.safetensors").metadata
    for key in ("data", "classes", "in_channels", "input_size", "mean", "std", "epoch",
                "optimizer_config", "rng_state", "best", "args"):
        assert key in meta, key
    assert meta["rng_state"] == np.random.default_rng([0, 1]).bit_generator.state


@pytest.mark.parametrize("options, message", [
    (dict(momentum=0.9), "--momentum applies to sgd and rmsprop"),
    (dict(optimizer="sgd", betas=(0.9, 0.99)), "--betas applies to adam"),
    (dict(epochs=0), "--epochs must be >= 1"),
    (dict(val_fraction=1.0), "--val-fraction"),
])
def test_bad_options(options, message):
    with pytest.raises(RunError, match=message):
        TrainConfig(**options).validate()


def _as_before_fit(path) -> None:
    """Rewrite a run checkpoint's metadata as `chainrule train` wrote it before it ran
    cr.fit: no callback states or seed (the best value lived in "best", the scheduler's
    state in "scheduler_config"), and no "counted" in a mid-epoch checkpoint's sums."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), "numpy") as f:
        header = f.metadata()
    meta = json.loads(header["metadata"])
    del meta["callbacks"], meta["seed"]
    if "partial" in meta:
        del meta["partial"]["counted"]
    header["metadata"] = json.dumps(meta)
    save_file(load_file(str(path)), str(path), metadata=header)


def test_a_checkpoint_from_before_fit_resumes_bit_for_bit(tmp_path, monkeypatch):
    config = CONFIG  # a cosine schedule: its lr depends on the restored scheduler state
    TrainingRun.start(TrainConfig(**config, out=str(tmp_path / "a")), log=_quiet).train()
    interrupt_after(monkeypatch, STEPS_PER_EPOCH + 2)
    with pytest.raises(Interrupted):
        TrainingRun.start(TrainConfig(**config, out=str(tmp_path / "b")), log=_quiet).train()
    monkeypatch.undo()
    _as_before_fit(tmp_path / "b" / "last.safetensors")
    assert "callbacks" not in cr.load_checkpoint(tmp_path / "b" / "last.safetensors").metadata
    TrainingRun.resume(tmp_path / "b", log=_quiet).train()
    a = _weights_and_state(tmp_path / "a" / "last.safetensors")
    b = _weights_and_state(tmp_path / "b" / "last.safetensors")
    _assert_same_run(a, b)
    assert a[2]["best"] == b[2]["best"]
