"""The per-batch schedules of ``chainrule train`` (``--scheduler onecycle`` and
``warmup-cosine``): the lr of every batch is torch's, and a run interrupted in the middle
of an epoch, then resumed, ends bit for bit where an uninterrupted run does."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.runner import Interrupted, RunError, TrainConfig, TrainingRun
from tests.helpers import interrupt_after
from tests.test_runner import _assert_same_run, _quiet, _weights_and_state

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn", reason="the runs train on digits (chainrule[datasets])")

# 56 training images in batches of 16: 4 steps per epoch, the last one of 8.
BASE = dict(data="digits", model="lenet5", epochs=3, batch_size=16, limit=56, seed=1,
            progress=False)
STEPS_PER_EPOCH = 4
SETUPS = {
    "onecycle-sgd": dict(scheduler="onecycle", optimizer="sgd", lr=0.05, momentum=0.9),
    "onecycle-adam": dict(scheduler="onecycle", optimizer="adam"),
    "onecycle-plain-sgd": dict(scheduler="onecycle", optimizer="sgd", lr=0.05),
    "warmup-cosine-adamw": dict(scheduler="warmup-cosine", optimizer="adamw", warmup_epochs=2),
}


def _torch_schedule(setup: dict, lr: float, total: int):
    """torch's scheduler for the run: (optimizer, scheduler) on one parameter."""
    name = setup["optimizer"]
    kwargs = {"momentum": setup["momentum"]} if setup.get("momentum") else {}
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}[name]([torch.zeros(1, requires_grad=True)], lr=lr,
                                             **kwargs)
    L = torch.optim.lr_scheduler
    if setup["scheduler"] == "onecycle":
        cycle = name != "sgd" or bool(setup.get("momentum"))
        return opt, L.OneCycleLR(opt, max_lr=lr, total_steps=total, cycle_momentum=cycle)
    warmup = setup["warmup_epochs"] * STEPS_PER_EPOCH
    return opt, L.SequentialLR(opt, [L.LinearLR(opt, 1 / warmup, total_iters=warmup),
                                     L.CosineAnnealingLR(opt, T_max=total - warmup)],
                               milestones=[warmup])


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_every_batch_has_torchs_lr(tmp_path, setup):
    cfg = TrainConfig(**BASE, **SETUPS[setup], out=str(tmp_path))
    run = TrainingRun.start(cfg, log=_quiet)
    seen = []

    def record(epoch, step, loss):  # the lr (and momentum) this step was taken with
        group = run.optimizer.param_groups[0]
        seen.append((group["lr"], group.get("momentum"), group.get("betas", (None,))[0]))

    run.on_batch = record
    run.train()
    total = BASE["epochs"] * STEPS_PER_EPOCH
    assert len(seen) == total

    lr = cfg.optimizer_config()["lr"]
    topt, tsched = _torch_schedule(SETUPS[setup], lr, total)
    for i, (our_lr, momentum, beta1) in enumerate(seen):
        group = topt.param_groups[0]
        assert our_lr == pytest.approx(group["lr"], rel=1e-12), f"step {i}"
        if momentum is not None:
            assert momentum == pytest.approx(group["momentum"], rel=1e-12), f"step {i}"
        if beta1 is not None:
            assert beta1 == pytest.approx(group["betas"][0], rel=1e-12), f"step {i}"
        topt.step()
        tsched.step()
    assert len({round(s[0], 12) for s in seen}) == total  # a new lr every batch

    rows = run.state.history
    assert [row["lr"] for row in rows] == [seen[e * STEPS_PER_EPOCH][0] for e in range(3)]
    meta = cr.load_checkpoint(tmp_path / "last.safetensors").metadata
    assert meta["scheduler_config"]["state"]["last_epoch"] == total


@pytest.mark.parametrize("setup", ["onecycle-sgd", "warmup-cosine-adamw"])
def test_interrupt_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch, setup):
    config = dict(BASE, **SETUPS[setup])
    TrainingRun.start(TrainConfig(**config, out=str(tmp_path / "a")), log=_quiet).train()

    # "Ctrl-C" right after step 3 of epoch 2 (in the warm-up's last epoch for
    # warmup-cosine).
    interrupt_after(monkeypatch, STEPS_PER_EPOCH + 3)
    stopped = TrainingRun.start(TrainConfig(**config, out=str(tmp_path / "b")), log=_quiet)
    with pytest.raises(Interrupted) as info:
        stopped.train()
    assert (info.value.epoch, info.value.step) == (1, 3)
    meta = cr.load_checkpoint(tmp_path / "b" / "last.safetensors").metadata
    assert (meta["epoch"], meta["step"]) == (1, 3)
    assert meta["scheduler_config"]["state"]["last_epoch"] == STEPS_PER_EPOCH + 3

    monkeypatch.undo()
    TrainingRun.resume(tmp_path / "b", log=_quiet).train()
    a = _weights_and_state(tmp_path / "a" / "last.safetensors")
    b = _weights_and_state(tmp_path / "b" / "last.safetensors")
    _assert_same_run(a, b)
    assert a[2]["scheduler_config"] == b[2]["scheduler_config"]


def test_onecycle_cannot_be_extended_on_resume(tmp_path):
    TrainingRun.start(TrainConfig(**dict(BASE, epochs=1), **SETUPS["onecycle-adam"],
                                  out=str(tmp_path)), log=_quiet).train()
    with pytest.raises(RunError, match="--epochs 2 runs past the one-cycle schedule, built "
                                       "for 1 epochs; a one-cycle schedule cannot be extended"):
        TrainingRun.resume(tmp_path, {"epochs": 2}, log=_quiet)


def test_warmup_cosine_keeps_its_length_on_resume(tmp_path):
    cfg = dict(BASE, epochs=2, warmup_epochs=1, scheduler="warmup-cosine", optimizer="adam")
    TrainingRun.start(TrainConfig(**cfg, out=str(tmp_path)), log=_quiet).train()
    run = TrainingRun.resume(tmp_path, {"epochs": 3}, log=_quiet)
    run.train()
    config = cr.load_checkpoint(tmp_path / "last.safetensors").metadata["scheduler_config"]
    assert (config["name"], config["warmup_steps"], config["T_max"]) == ("warmup-cosine", 4, 4)
    assert config["state"]["last_epoch"] == 12
    # The cosine reached 0 at the end of the original 2 epochs, then climbs back up (as
    # the per-epoch cosine does), a whole period later back at the base lr.
    assert [row["lr"] for row in run.state.history][2] == 0.0
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3, rel=1e-12)


@pytest.mark.parametrize("warmup, epochs", [(0, 3), (3, 3), (5, 3)])
def test_warmup_epochs_must_leave_room_for_the_cosine(warmup, epochs):
    cfg = TrainConfig(**dict(BASE, epochs=epochs), scheduler="warmup-cosine",
                      warmup_epochs=warmup)
    with pytest.raises(RunError, match=f"--warmup-epochs must be >= 1 and below --epochs "
                                       f"\\({epochs}\\), got {warmup}"):
        cfg.validate()


def test_the_command_line_offers_the_schedules(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--limit", "56", "--batch-size", "16",
                 "--epochs", "2", "--scheduler", "warmup-cosine", "--warmup-epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "w")])
    assert code == 0, capsys.readouterr().err
    meta = cr.load_checkpoint(tmp_path / "w" / "last.safetensors").metadata
    assert meta["args"]["warmup_epochs"] == 1
    assert {k: meta["scheduler_config"][k] for k in ("name", "warmup_steps", "T_max")} == {
        "name": "warmup-cosine", "warmup_steps": 4, "T_max": 4}
    with pytest.raises(SystemExit):
        main(["train", "--scheduler", "cyclic"])
    assert "onecycle" in capsys.readouterr().err  # argparse lists the choices
    assert np.isclose(meta["history"][0]["lr"], 2e-3 / 4)  # adam's default lr / warm-up steps
