"""Recorder: each recorded number equals the same quantity computed independently, and
recording changes nothing about training."""

from __future__ import annotations

import json

import numpy as np
import pytest

import chainrule as cr
from chainrule.inspect import Recorder, load_stats
from chainrule.train import train_step
from tests.inspect.conftest import batch, small_convnet


def mixed_mlp(seed: int = 0) -> cr.Sequential:
    """ReLU, Sigmoid and Tanh layers with weights large enough that some units saturate."""
    model = cr.Sequential(cr.Linear(6, 16), cr.ReLU(), cr.Linear(16, 16), cr.Sigmoid(),
                          cr.Linear(16, 16), cr.Tanh(), cr.Linear(16, 3))
    model.reset_parameters(seed).double()
    for p in model.parameters():
        p.data *= 4.0
    return model


def reference_pass(model: cr.Sequential, x: np.ndarray, y: np.ndarray):
    """Outputs and input gradients of each layer, by calling the layers one at a time."""
    outputs, h = [], x
    for layer in model:
        h = layer.forward(h)
        outputs.append(h)
    loss_fn = cr.CrossEntropyLoss()
    loss_fn(h, y)
    grads, g = [], loss_fn.backward()
    for layer in reversed(list(model)):
        g = layer.backward(g)
        grads.append(g)
    return outputs, grads[::-1]


def test_recorded_statistics_equal_independent_values():
    model = mixed_mlp()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    recorder = Recorder().attach(model, optimizer)
    rng = np.random.default_rng(0)
    for step in range(3):
        x, y = rng.standard_normal((32, 6)), rng.integers(0, 3, 32)
        twin = model.copy()  # same weights; its hooks are inert copies
        outputs, input_grads = reference_pass(twin, x, y)
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        train_step(model, cr.CrossEntropyLoss(), optimizer, x, y)
        stats = recorder.records["layer_stats"]
        for i, (out, dx) in enumerate(zip(outputs, input_grads)):
            s = {k: v[step] for k, v in stats[str(i)].items()}
            assert s["mean"] == pytest.approx(out.mean(), rel=1e-12)
            assert s["std"] == pytest.approx(out.std(), rel=1e-12)
            assert s["grad_input_norm"] == pytest.approx(np.linalg.norm(dx), rel=1e-12)
        relu, sigmoid, tanh = outputs[1], outputs[3], outputs[5]
        assert stats["1"]["zero_fraction"][step] == np.mean(relu == 0)
        assert stats["1"]["dead_units"][step] == int(np.sum(np.all(relu == 0, axis=0)))
        assert stats["3"]["saturation"][step] == np.mean((sigmoid < 0.01) | (sigmoid > 0.99))
        assert stats["5"]["saturation"][step] == np.mean(np.abs(tanh) > 0.99)
        assert 0 < stats["3"]["saturation"][step] < 1  # the case is not trivial
        assert stats["0"]["zero_fraction"][step] is None  # Linear: not an activation
        for name, p in model.named_parameters():
            ps = {k: v[step] for k, v in recorder.records["param_stats"][name].items()}
            # optimizer.step does not touch p.grad: it still holds this step's gradient.
            assert ps["grad_norm"] == np.linalg.norm(p.grad)
            assert ps["weight_norm"] == np.linalg.norm(before[name])
            assert ps["update_ratio"] == pytest.approx(
                np.linalg.norm(p.data - before[name]) / np.linalg.norm(before[name]), rel=1e-12)
        assert recorder.records["gradient_ratio"][step] == pytest.approx(
            np.linalg.norm(input_grads[0]) / np.linalg.norm(input_grads[-1]), rel=1e-12)
    assert recorder.records["step"] == [0, 1, 2]
    recorder.detach()


def test_on_step_without_optimizer_records_gradient_norms():
    model = small_convnet(dtype=np.float64)
    recorder = Recorder().attach(model)
    x, y = batch(dtype=np.float64)
    loss_fn = cr.CrossEntropyLoss()
    model.zero_grad()
    loss_fn(model.forward(x), y)
    model.backward(loss_fn.backward())
    recorder.on_step()
    for name, p in model.named_parameters():
        assert recorder.records["param_stats"][name]["grad_norm"] == [np.linalg.norm(p.grad)]
        assert recorder.records["param_stats"][name]["update_ratio"] == [None]
    recorder.detach()


def _train(model, record: bool, every: int = 1):
    optimizer = cr.optim.Adam(model.parameters(), lr=1e-2)
    recorder = Recorder(every=every).attach(model, optimizer) if record else None
    x, y = batch(n=48, shape=(1, 8, 8), classes=3)
    cr.fit(model, cr.CrossEntropyLoss(), optimizer, (x, y), epochs=2, batch_size=16, seed=3,
           on_batch=recorder.on_batch if recorder else None)
    if recorder:
        recorder.detach()
    return model, optimizer, recorder


def test_recording_does_not_change_training_bitwise():
    # cifar_cnn has BatchNorm and Dropout, the layers with state beyond their weights.
    plain, plain_opt, _ = _train(cr.models.cifar_cnn(1, 8, 3, seed=0), record=False)
    watched, watched_opt, recorder = _train(cr.models.cifar_cnn(1, 8, 3, seed=0), record=True)
    assert len(recorder.records["step"]) == 6
    a, b = plain.state_dict(), watched.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    sa, sb = plain_opt.state_dict()["state"], watched_opt.state_dict()["state"]
    for index in sa:
        for name, value in sa[index].items():
            assert np.array_equal(value, sb[index][name]), (index, name)


def test_detach_leaves_no_trace():
    model = small_convnet()
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    with Recorder().attach(model, optimizer) as recorder:
        assert all("forward" in m.__dict__ for m in model.modules() if not m._children)
        assert "step" in optimizer.__dict__
    assert not recorder.attached
    assert not any({"forward", "backward"} & m.__dict__.keys() for m in model.modules())
    assert "step" not in optimizer.__dict__


def test_every_n_steps_and_epoch_labels():
    _, _, recorder = _train(small_convnet(), record=True, every=2)
    assert recorder.records["step"] == [0, 2, 4]
    assert recorder.records["epoch"] == [0, 0, 1]
    assert all(isinstance(v, float) for v in recorder.records["loss"])
    assert all(len(v["mean"]) == 3 for v in recorder.records["layer_stats"].values())


def test_copy_of_a_watched_model_computes_with_its_own_weights_and_records_nothing():
    model = small_convnet()
    recorder = Recorder().attach(model)
    clone = model.copy()
    for p in clone.parameters():
        p.data += 1.0
    x, _ = batch()
    fresh = small_convnet()
    for p in fresh.parameters():
        p.data += 1.0
    assert np.array_equal(clone.forward(x), fresh.forward(x))
    assert recorder._pending_layers == {}  # the clone did not report to the recorder
    recorder.detach()


def test_save_writes_strict_json_and_load_continues(tmp_path):
    model = small_convnet()
    _, _, recorder = _train(model, record=True)
    path = recorder.save(tmp_path)
    assert path == tmp_path / "inspect.json"

    def no_constants(name):
        raise AssertionError(f"{name} in JSON")
    data = json.loads(path.read_text(), parse_constant=no_constants)
    assert data["format"] == "chainrule-inspect"
    assert data == load_stats(tmp_path)
    for name, stats in recorder.records["layer_stats"].items():  # 7 significant digits
        assert data["layer_stats"][name]["std"] == pytest.approx(stats["std"], rel=1e-6)
    flags = recorder.flags()
    assert data["flags"] == {**flags, "gradient_ratio": pytest.approx(flags["gradient_ratio"],
                                                                      rel=1e-6)}

    resumed = Recorder.load(path)
    optimizer = cr.optim.SGD(model.parameters(), lr=0.01)
    resumed.attach(model, optimizer)
    x, y = batch(n=16, classes=3)
    train_step(model, cr.CrossEntropyLoss(), optimizer, x, y)
    resumed.detach()
    assert resumed.records["step"] == list(range(7))
    with pytest.raises(ValueError, match="another architecture"):
        Recorder.load(path).attach(cr.Sequential(cr.Linear(2, 2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        Recorder(every=0)
    with pytest.raises(ValueError, match="ratio_threshold"):
        Recorder(ratio_threshold=0.5)
    recorder = Recorder().attach(small_convnet())
    with pytest.raises(RuntimeError, match="already attached"):
        recorder.attach(small_convnet())
    recorder.detach()


def test_the_first_layer_skips_its_input_gradient_on_steps_not_recorded(monkeypatch):
    """train_step asks for no gradient of the data; a watched first layer still computes
    it on recorded steps (the recorder shows ||dL/dx|| there) and skips it otherwise."""
    calls = []
    plain = cr.Conv2d.backward

    def spy(self, grad, needs_input_grad=True):
        calls.append(needs_input_grad)
        return plain(self, grad, needs_input_grad)

    monkeypatch.setattr(cr.Conv2d, "backward", spy)
    model = cr.Sequential(cr.Conv2d(1, 2, 3, rng=0), cr.ReLU(), cr.Flatten(),
                          cr.Linear(18, 3, rng=1))
    optimizer = cr.optim.SGD(model.parameters(), lr=0.1)
    recorder = Recorder(every=2).attach(model, optimizer)
    x = np.random.default_rng(0).standard_normal((4, 1, 5, 5)).astype(np.float32)
    for _ in range(4):
        train_step(model, cr.CrossEntropyLoss(), optimizer, x, np.array([0, 1, 2, 0]))
    recorder.detach()
    assert calls == [True, False, True, False]
    norms = recorder.records["layer_stats"]["0"]["grad_input_norm"]
    assert len(norms) == 2 and all(n is not None and n > 0 for n in norms)
