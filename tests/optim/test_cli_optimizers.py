"""Every optimizer on the command line: ``chainrule train --optimizer`` offers each one in
runner.OPTIMIZERS with a default learning rate, builds it with the options that apply,
and a short run with a new optimizer trains, checkpoints and resumes bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.cli import build_parser, main
from chainrule.parameter import Parameter
from chainrule.runner import (BETAS_OPTIMIZERS, DEFAULT_LR, OPTIMIZERS, RunError, TrainConfig,
                              build_optimizer)

# The cheap run of tests/test_cli.py, in process: 64 digits, batches of 16.
TINY = ["--data", "digits", "--batch-size", "16", "--limit", "64", "--scheduler", "step",
        "--step-size", "1", "--gamma", "0.5", "--no-progress"]


def test_every_optimizer_is_offered_with_a_default_lr():
    assert set(OPTIMIZERS) == set(DEFAULT_LR)
    assert {"adagrad", "adadelta", "adamax", "nadam", "radam"} <= set(OPTIMIZERS)
    assert set(BETAS_OPTIMIZERS) <= set(OPTIMIZERS)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = next(a.choices for a in train._actions if a.dest == "optimizer")
    assert list(choices) == list(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_config_builds_the_optimizer(name):
    betas = (0.8, 0.95) if name in BETAS_OPTIMIZERS else None
    momentum = 0.5 if name in ("sgd", "rmsprop") else 0.0
    cfg = TrainConfig(optimizer=name, weight_decay=0.01, betas=betas, momentum=momentum)
    cfg.validate()
    opt = build_optimizer([Parameter(np.zeros(3))], cfg.optimizer_config())
    assert type(opt) is OPTIMIZERS[name]
    group = opt.param_groups[0]
    assert group["lr"] == DEFAULT_LR[name] and group["weight_decay"] == 0.01
    assert group.get("betas") == betas
    assert group.get("momentum", 0.0) == momentum


@pytest.mark.parametrize("name", ["adagrad", "adadelta", "sgd", "rmsprop"])
def test_betas_is_refused_where_it_does_not_apply(name):
    with pytest.raises(RunError, match="--betas applies to adam, adamw, adamax, nadam, radam"):
        TrainConfig(optimizer=name, betas=(0.9, 0.99)).validate()


def _load(path):
    ckpt = cr.load_checkpoint(path)
    return ckpt.model.state_dict(), ckpt.optimizer_state, ckpt.optimizer_type, ckpt.metadata


@pytest.mark.parametrize("name, cls, state_keys", [
    ("adagrad", "Adagrad", ["step", "sum"]),
    ("nadam", "NAdam", ["step", "mu_product", "exp_avg", "exp_avg_sq"]),
])
def test_train_and_resume_with_a_new_optimizer(tmp_path, capsys, name, cls, state_keys):
    assert main(["train", *TINY, "--optimizer", name, "--epochs", "2", "--out",
                 str(tmp_path / "a")]) == 0
    assert f"{name} lr {DEFAULT_LR[name]:g}" in capsys.readouterr().out
    weights, opt_state, opt_type, meta = _load(tmp_path / "a" / "last.safetensors")
    assert opt_type == cls and set(opt_state["state"][0]) == set(state_keys)
    assert opt_state["state"][0]["step"] == 2 * 4  # 64 samples in batches of 16
    losses = [row["train_loss"] for row in meta["history"]]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0]

    # Stopped after one epoch and resumed: the same weights and state, bit for bit.
    assert main(["train", *TINY, "--optimizer", name, "--epochs", "1", "--out",
                 str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "2",
                 "--no-progress"]) == 0
    weights_b, opt_state_b, _, _ = _load(tmp_path / "b" / "last.safetensors")
    for key in weights:
        np.testing.assert_array_equal(weights[key], weights_b[key], err_msg=key)
    assert opt_state["param_groups"] == opt_state_b["param_groups"]
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, opt_state_b["state"][index][key], err_msg=key)
