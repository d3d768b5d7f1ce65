"""cr.callbacks: every callback of fit's loop, with Keras' hooks, names and arguments."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import numpy as np
import pytest

import chainrule as cr
from chainrule.callbacks import (Callback, CSVLogger, EarlyStopping, LambdaCallback,
                                 LRSchedulerStep, ModelCheckpoint, ProgressBar, TerminateOnNaN)
from tests.test_train import blobs, classifier, regression_data

X, Y = blobs(40, seed=20)
XV, YV = blobs(16, seed=21)


def fit(model=None, epochs=3, lr=0.1, callbacks=(), val=(XV, YV), **kwargs):
    model = model if model is not None else classifier(dropout=False)
    optimizer = kwargs.pop("optimizer", None) or cr.optim.SGD(model.parameters(), lr=lr)
    return cr.fit(model, cr.CrossEntropyLoss(), optimizer, (X, Y), epochs=epochs,
                  batch_size=16, val=val, callbacks=callbacks, progress=False, **kwargs)


class Recording(Callback):
    """Writes down every hook call."""

    def __init__(self) -> None:
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: self.calls.append((name, *args[:-1]))
        return super().__getattribute__(name)


def test_the_hooks_run_in_keras_order():
    rec = Recording()
    fit(epochs=2, callbacks=[rec])
    names = [c[0] for c in rec.calls]
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    per_epoch = (["on_epoch_begin"] + ["on_batch_begin", "on_batch_end"] * 3
                 + ["on_epoch_end"])
    assert names[1:-1] == per_epoch * 2
    assert [c[1] for c in rec.calls if c[0] == "on_batch_end"] == [0, 1, 2] * 2
    assert [c[1] for c in rec.calls if c[0] == "on_epoch_end"] == [0, 1]
    assert rec.loop.model is rec.model and rec.loop.epoch == 2


def test_lambda_callback_and_the_logs_it_sees():
    seen = {"batches": [], "epochs": [], "begin": 0, "end": 0}
    cb = LambdaCallback(on_batch_end=lambda b, logs: seen["batches"].append(logs["size"]),
                        on_epoch_end=lambda e, logs: seen["epochs"].append(dict(logs)),
                        on_train_begin=lambda logs: seen.__setitem__("begin", 1),
                        on_train_end=lambda logs: seen.__setitem__("end", 1))
    history = fit(epochs=2, callbacks=[cb])
    assert seen["batches"] == [16, 16, 8] * 2 and seen["begin"] == seen["end"] == 1
    logs = seen["epochs"][-1]
    assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time_s"}
    assert logs["loss"] == history.loss[-1] and logs["lr"] == 0.1
    with pytest.raises(TypeError, match="LambdaCallback: on_epoch_end must be callable"):
        LambdaCallback(on_epoch_end=3)
    with pytest.raises(TypeError, match=r"fit: callbacks\[0\] is a function, expected a "
                                        r"chainrule.callbacks.Callback"):
        fit(callbacks=[lambda: None])


def test_a_callback_stops_training_after_the_batch_as_in_keras():
    stopper = LambdaCallback(on_batch_end=lambda b, logs: setattr(
        stopper.loop, "stop_training", stopper.loop.epoch == 1 and b == 0))
    rec = Recording()
    history = fit(epochs=4, callbacks=[stopper, rec])
    assert len(history.rows) == 1                    # epoch 2 stopped after its first step
    assert [c[0] for c in rec.calls][-3:] == ["on_batch_begin", "on_batch_end", "on_train_end"]


def test_setting_model_stop_training_stops_as_in_keras_and_the_next_fit_resets_it():
    model = classifier(dropout=False)
    stopper = LambdaCallback(on_epoch_end=lambda e, logs: setattr(stopper.model,
                                                                  "stop_training", True))
    assert len(fit(model, epochs=4, callbacks=[stopper]).rows) == 1
    assert model.stop_training is True           # left as Keras leaves it
    assert len(fit(model, epochs=2).rows) == 2    # a new fit starts with it cleared
    assert model.stop_training is False


# ---------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_every_epoch_with_a_formatted_name_and_metadata(tmp_path):
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.safetensors",
                           metadata={"note": "hi"})
    history = fit(epochs=2, callbacks=[ckpt])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"m-{e + 1:02d}-{v:.3f}.safetensors"
                     for e, v in enumerate(history.val_loss)]
    loaded = cr.load_checkpoint(ckpt.last_path)
    assert loaded.metadata["note"] == "hi" and loaded.metadata["epoch"] == 2
    assert loaded.optimizer_type == "SGD" and loaded.metadata["history"] == history.rows
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_checkpoint_save_best_only(tmp_path):
    model = classifier(dropout=False)
    ckpt = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy",
                           save_best_only=True)
    history = fit(model, epochs=4, callbacks=[ckpt])
    best = int(np.argmax(history.val_accuracy))  # the first epoch with the highest value
    assert ckpt.best == history.val_accuracy[best] and ckpt.best_epoch == best + 1
    assert cr.load_checkpoint(tmp_path / "best.safetensors").metadata["epoch"] == best + 1
    with pytest.raises(KeyError, match="monitor 'val_loss' is not in the epoch's logs"):
        fit(epochs=1, val=None, callbacks=[ModelCheckpoint(tmp_path / "x.safetensors",
                                                           save_best_only=True)])
    with pytest.raises(ValueError, match="ModelCheckpoint: mode must be 'auto', 'min' or "
                                         "'max', got 'up'"):
        ModelCheckpoint("x", mode="up")


# ---------------------------------------------------------------------- EarlyStopping
def loop_stub(model=None):
    return SimpleNamespace(model=model, stop_training=False)


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_early_stopping_waits_patience_epochs(patience):
    stop = EarlyStopping(monitor="val_loss", patience=patience)
    stop.set_loop(loop_stub())
    values = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]
    for epoch, value in enumerate(values):
        stop.on_epoch_end(epoch, {"val_loss": value})
        if stop.loop.stop_training:
            break
    # Keras' count: stopped once `patience` epochs (at least one) did not improve
    assert stop.stopped_epoch == 1 + max(patience, 1) and stop.best == 0.9


def test_early_stopping_min_delta_mode_and_baseline():
    stop = EarlyStopping(monitor="val_accuracy", min_delta=0.05, patience=1)
    stop.set_loop(loop_stub())
    for epoch, value in enumerate([0.5, 0.54, 0.6]):   # +0.04 is no improvement
        stop.on_epoch_end(epoch, {"val_accuracy": value})
        if stop.loop.stop_training:
            break
    assert stop.stopped_epoch == 1 and stop.best == 0.5
    base = EarlyStopping(monitor="loss", baseline=0.1, patience=0)
    base.set_loop(loop_stub())
    base.on_epoch_end(0, {"loss": 0.2})
    assert base.loop.stop_training


def test_early_stopping_in_fit_restores_the_best_weights():
    # lr 0 after the first epoch: no later epoch improves, so it stops after patience.
    model = classifier(dropout=False)
    kept = {}
    snap = LambdaCallback(on_epoch_end=lambda e, logs: kept.setdefault(
        e, {k: v.copy() for k, v in model.state_dict().items()}))
    drop_lr = LambdaCallback(on_epoch_end=lambda e, logs: optimizer.param_groups[0].update(
        lr=0.0 if e == 0 else optimizer.param_groups[0]["lr"]))
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    stop = EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = fit(model, epochs=10, callbacks=[snap, drop_lr, stop], optimizer=optimizer)
    assert len(history.rows) < 10 and stop.stopped_epoch == len(history.rows) - 1
    best = int(np.argmin(history.loss))
    for key, value in model.state_dict().items():
        assert np.array_equal(value, kept[best][key]), key


# ---------------------------------------------------------------------- CSVLogger
def test_csv_logger_writes_every_epoch_with_chosen_columns(tmp_path):
    plain, named = tmp_path / "all.csv", tmp_path / "named.csv"
    history = fit(epochs=2, callbacks=[CSVLogger(plain),
                                       CSVLogger(named, separator=";",
                                                 columns={"ep": "epoch", "train": "loss",
                                                          "missing": "nope"})])
    rows = list(csv.DictReader(plain.open()))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr",
                             "time_s"]
    assert [float(r["loss"]) for r in rows] == history.loss
    lines = named.read_text().splitlines()
    assert lines[0] == "ep;train;missing" and lines[2] == f"2;{history.loss[1]};"


# ---------------------------------------------------------------------- TerminateOnNaN
def nan_fit(callbacks=()):
    Xr, yr = regression_data(32)
    model = cr.Sequential(cr.Linear(3, 4, rng=0), cr.Linear(4, 1, rng=1))
    with np.errstate(over="ignore", invalid="ignore"):
        return model, cr.fit(model, cr.MSELoss(), cr.optim.SGD(model.parameters(), lr=1e8),
                             (Xr, yr), epochs=5, batch_size=8, callbacks=callbacks,
                             progress=False)


def test_terminate_on_nan_names_the_layer_and_raises_by_default():
    with pytest.raises(cr.NonFiniteLossError, match=r"at epoch \d+, step \d+; lower the "
                                                    r"learning rate .* Diagnosis: .*layer '\d'"):
        nan_fit()


def test_terminate_on_nan_without_raising_stops_with_the_last_finite_weights(capsys):
    model, history = nan_fit([TerminateOnNaN(raise_error=False)])
    err = capsys.readouterr().err
    assert "TerminateOnNaN: the loss became" in err and "Diagnosis" in err
    assert len(history.rows) < 5
    assert all(np.isfinite(p.data).all() for p in model.parameters())


# ---------------------------------------------------------------------- ProgressBar
def test_progress_bar_shows_loss_accuracy_and_speed():
    out = io.StringIO()
    fit(epochs=2, callbacks=[ProgressBar(leave=True, file=out)])
    text = out.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text
    assert "loss=" in text and "acc=" in text and "img/s=" in text and "3/3" in text


# ---------------------------------------------------------------------- LRSchedulerStep
def test_lr_scheduler_step_per_batch_and_per_epoch():
    model = classifier(dropout=False)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    scheduler = cr.optim.StepLR(optimizer, step_size=1, gamma=0.5)
    lrs = []
    seen = LambdaCallback(on_batch_end=lambda b, logs: lrs.append(
        optimizer.param_groups[0]["lr"]))
    history = fit(model, epochs=2, optimizer=optimizer,
                  callbacks=[LRSchedulerStep(scheduler, "batch"), seen])
    assert lrs == [0.1 * 0.5 ** k for k in range(6)]          # the lr each step used
    assert history.lr == [0.1, 0.1 * 0.5 ** 3]               # each epoch's first lr
    with pytest.raises(ValueError, match="interval must be 'epoch' or 'batch', got 'step'"):
        LRSchedulerStep(scheduler, "step")


def test_reduce_lr_on_plateau_reacts_to_the_monitored_metric():
    model = classifier(dropout=False)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the loss never improves
    plateau = cr.optim.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    optimizer.param_groups[0]["lr"] = 0.0
    fit(model, epochs=3, optimizer=optimizer, callbacks=[LRSchedulerStep(plateau,
                                                                         monitor="loss")])
    assert plateau.num_bad_epochs == 0 and plateau.best == pytest.approx(
        cr.evaluate(model, X, Y)["loss"], rel=0.5)
    with pytest.raises(ValueError, match="ReduceLROnPlateau reacts to an epoch's metric"):
        LRSchedulerStep(plateau, "batch")


# ---------------------------------------------------------------------- Recorder
def test_the_inspect_recorder_is_a_callback():
    recorder = cr.inspect.Recorder(every=2)
    model = classifier(dropout=False)
    history = fit(model, epochs=2, callbacks=[recorder])
    assert not recorder.attached                     # fit attached it, and detached it
    rec = recorder.records
    assert rec["step"] == [0, 2, 4] and rec["epoch"] == [0, 0, 1]
    assert rec["loss"][0] is not None
    assert history.loss


def test_a_non_finite_validation_loss_stops_after_its_epoch():
    bad_val = (np.full_like(XV, np.nan), YV)
    with pytest.raises(cr.NonFiniteLossError, match="the validation loss became nan after "
                                                    "epoch 1"):
        fit(epochs=3, val=bad_val)


def test_validation_data_may_be_a_loader():
    a = fit(model=classifier(dropout=False), epochs=2)
    b = fit(model=classifier(dropout=False), epochs=2,
            val=cr.data.DataLoader((XV, YV), batch_size=5, shuffle=True, seed=9))
    assert a.val_loss == b.val_loss and a.val_accuracy == b.val_accuracy
