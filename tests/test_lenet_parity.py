"""Whole-network parity: LeNet-5 trained side by side with PyTorch from the same weights
on the same batches must follow torch's loss curve step by step; and a LeNet with
Dropout must be able to overfit a tiny batch (the end-to-end sanity check)."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.train import train_step
from tests.helpers import rel_error

torch = pytest.importorskip("torch")
nn = torch.nn

STEPS = 50
BATCH = 16
CLASSES = 10


def cr_lenet(dropout: float | None = None, rng: int = 0) -> cr.Sequential:
    """LeNet-5 for 28x28 inputs: (N, 1, 28, 28) -> (N, 10)."""
    layers = [
        cr.Conv2d(1, 6, 5, padding=2), cr.ReLU(), cr.MaxPool2d(2),    # (N, 6, 14, 14)
        cr.Conv2d(6, 16, 5), cr.BatchNorm2d(16), cr.ReLU(), cr.MaxPool2d(2),  # (N, 16, 5, 5)
        cr.Flatten(),                                                  # (N, 400)
        cr.Linear(400, 120), cr.ReLU(),
    ]
    if dropout is not None:
        layers.append(cr.Dropout(dropout))
    layers += [cr.Linear(120, 84), cr.ReLU(), cr.Linear(84, CLASSES)]
    return cr.Sequential(*layers).reset_parameters(rng)


def torch_lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, CLASSES))


def batches(seed: int = 0, distinct: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The batch of every step, (STEPS, BATCH, 1, 28, 28) and (STEPS, BATCH): ``distinct``
    random batches visited in turn, so that there is something to learn (random labels
    of always-new data could not be fitted) and the loss must go down."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((distinct, BATCH, 1, 28, 28))
    Y = rng.integers(0, CLASSES, (distinct, BATCH))
    order = np.arange(STEPS) % distinct
    return X[order], Y[order]


OPTIMIZERS = {
    "sgd_momentum": (lambda params: cr.optim.SGD(params, lr=0.02, momentum=0.9),
                     lambda params: torch.optim.SGD(params, lr=0.02, momentum=0.9)),
    "adam": (lambda params: cr.optim.Adam(params, lr=1e-3),
             lambda params: torch.optim.Adam(params, lr=1e-3)),
}


@pytest.fixture
def torch_single_thread():
    """One torch thread: these tiny float64 ops gain nothing from more, and on a busy
    2-core machine torch's spinning worker threads cost 30x the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_lenet_training_tracks_torch_step_by_step(opt_name, torch_single_thread):
    make_ours, make_torch = OPTIMIZERS[opt_name]
    torch.manual_seed(0)
    ref = torch_lenet().double().train()
    model = cr_lenet().to(np.float64)
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    optimizer, ref_optimizer = make_ours(model.parameters()), make_torch(ref.parameters())
    loss_fn, ref_loss_fn = cr.CrossEntropyLoss(), nn.CrossEntropyLoss()
    X, Y = batches()

    losses, ref_losses = [], []
    for step in range(STEPS):
        loss, _ = train_step(model, loss_fn, optimizer, X[step], Y[step])
        ref_optimizer.zero_grad()
        ref_loss = ref_loss_fn(ref(torch.from_numpy(X[step])), torch.from_numpy(Y[step]))
        ref_loss.backward()
        ref_optimizer.step()
        losses.append(loss)
        ref_losses.append(ref_loss.item())
        assert abs(loss - ref_losses[-1]) <= 1e-7 * abs(ref_losses[-1]), (
            f"{opt_name}: step {step}: loss {loss!r} vs torch {ref_losses[-1]!r}")

    assert losses[-1] < 0.8 * losses[0], f"{opt_name}: the loss did not go down: {losses}"
    ref_state = {k: v.numpy() for k, v in ref.state_dict().items()}
    ours_state = model.state_dict()
    assert list(ours_state) == list(ref_state)
    # Most arrays agree to ~1e-14. The loosest is "3.bias": BatchNorm cancels the bias of
    # the convolution before it, so its gradient is rounding noise that Adam magnifies
    # (~1e-8 relative after 50 steps); nothing else depends on it.
    errors = {key: rel_error(ours_state[key], value) for key, value in ref_state.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, f"{opt_name}: final weights differ, worst {worst}: {errors}"
    assert int(ours_state["4.num_batches_tracked"]) == STEPS


def test_lenet_with_dropout_overfits_a_tiny_batch():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % CLASSES
    model = cr_lenet(dropout=0.2, rng=2)
    optimizer = cr.optim.Adam(model.parameters(), lr=2e-3)
    history = cr.fit(model, cr.CrossEntropyLoss(), optimizer, (X, y), epochs=60, batch_size=8,
                     seed=3)
    assert model.dtype == np.float32
    assert len(history.loss) == 60 and history.loss[-1] < 0.1 * history.loss[0], history.loss
    metrics = cr.evaluate(model, X, y)
    assert metrics["accuracy"] == 1.0
    assert metrics["loss"] < 0.02, metrics
