"""cr.fit(resume=...): a run interrupted by Ctrl-C in the middle of an epoch (or stopped
between epochs), then resumed, ends bit for bit where one uninterrupted run does, with
shuffling, augmentation, Dropout, BatchNorm, Adam and a per-batch schedule all in play;
its History covers the whole run."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import chainrule as cr
from chainrule.callbacks import (EarlyStopping, LambdaCallback, LRSchedulerStep,
                                 ModelCheckpoint)
from chainrule.data import DataLoader
from tests.helpers import interrupt_after
from tests.test_train import blobs, classifier

EPOCHS, BATCH, N = 3, 8, 44      # 6 steps per epoch, the last one of 4


def noise(xb, rng):
    return xb + 0.1 * rng.standard_normal(xb.shape)


def setup(seed: int = 4):
    """A fresh model, optimizer, per-batch schedule, loader and callbacks."""
    X, y = blobs(N, seed=12)
    model = classifier(seed=0)          # BatchNorm1d and Dropout
    optimizer = cr.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = cr.optim.OneCycleLR(optimizer, max_lr=1e-2, total_steps=EPOCHS * 6)
    loader = DataLoader((X, y), batch_size=BATCH, transform=noise, seed=seed)
    early = EarlyStopping(monitor="val_loss", patience=10)
    return model, optimizer, loader, [LRSchedulerStep(scheduler, "batch"), early]


def run(tmp_path, name, resume=None, extra=()):
    model, optimizer, loader, callbacks = setup()
    val = blobs(12, seed=13)
    history = cr.fit(model, cr.CrossEntropyLoss(), optimizer, loader, epochs=EPOCHS, val=val,
                     callbacks=[*callbacks, ModelCheckpoint(tmp_path / f"{name}.safetensors"),
                                *extra], progress=False, resume=resume)
    return model, optimizer, history


def assert_same_end(a, b) -> None:
    (ma, oa, ha), (mb, ob, hb) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    assert list(sa) == list(sb)
    for key in sa:  # parameters and buffers (BatchNorm's running statistics), bitwise
        assert np.array_equal(sa[key], sb[key]), key
    for pa, pb in zip(oa.state_dict()["state"].values(), ob.state_dict()["state"].values()):
        for name in pa:
            assert np.array_equal(pa[name], pb[name]), name
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(ha.rows) == strip(hb.rows) and len(ha.rows) == EPOCHS


@pytest.mark.parametrize("steps", [8, 12])  # mid-epoch 2; right at the end of epoch 2
def test_ctrl_c_then_resume_equals_one_uninterrupted_run(tmp_path, monkeypatch, steps):
    before = signal.getsignal(signal.SIGINT)  # Python's, or SIG_IGN in a background job
    straight = run(tmp_path, "a")

    interrupt_after(monkeypatch, steps)
    with pytest.raises(cr.Interrupted) as info:
        run(tmp_path, "b")
    path = tmp_path / "b.safetensors"
    assert info.value.path == path and (info.value.epoch, info.value.step) == (
        (1, 2) if steps == 8 else (2, 0))
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    meta = cr.load_checkpoint(path).metadata
    assert (meta["epoch"], meta["step"]) == (info.value.epoch, info.value.step)
    monkeypatch.undo()

    resumed = run(tmp_path, "b", resume=path)
    assert_same_end(straight, resumed)


def test_a_run_stopped_between_epochs_resumes_with_more_epochs(tmp_path):
    straight = run(tmp_path, "a")
    stop = LambdaCallback(on_epoch_end=lambda e, logs: setattr(stopper.loop, "stop_training",
                                                                e == 0))
    stopper = stop
    _, _, history = run(tmp_path, "b", extra=[stop])
    assert len(history.rows) == 1
    resumed = run(tmp_path, "b", resume=tmp_path / "b.safetensors")
    assert_same_end(straight, resumed)
    assert resumed[2].epoch == [0, 1, 2]


def test_resume_refuses_what_would_not_continue_the_run(tmp_path):
    run(tmp_path, "a")
    model, optimizer, loader, _ = setup(seed=5)  # another seed: other batches
    with pytest.raises(ValueError, match="trained with seed 4, this call has seed 5"):
        cr.fit(model, cr.CrossEntropyLoss(), optimizer, loader, epochs=4, progress=False,
               resume=tmp_path / "a.safetensors")
    model, _, loader, _ = setup()
    with pytest.raises(ValueError, match="holds no SGD state"):
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1), loader,
               epochs=4, progress=False, resume=tmp_path / "a.safetensors")
    plain = tmp_path / "plain.safetensors"
    cr.save(model, plain)
    with pytest.raises(ValueError, match=r"holds no training state .*callbacks\.ModelCheckpoint"):
        cr.fit(model, cr.CrossEntropyLoss(), optimizer, loader, progress=False, resume=plain)


def test_initial_epoch_and_an_already_finished_run():
    X, y = blobs(16, seed=1)
    model = classifier()
    seen = []
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
                     (X, y), epochs=3, batch_size=8, initial_epoch=1, progress=False,
                     on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2] and history.epoch == [1, 2]
    with pytest.raises(ValueError, match="fit: initial_epoch must be an int >= 0, got -1"):
        cr.fit(model, cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1),
               (X, y), initial_epoch=-1)
