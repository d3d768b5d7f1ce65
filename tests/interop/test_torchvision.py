"""torchvision's architectures through from_torch: resnet18, densenet121, mobilenet_v2 and
squeezenet1_1 (random initialization, weights=None: nothing is downloaded) give torch's
output, input gradient and every parameter gradient, in training and in eval mode."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.inspect._hooks import install, leaf_layers  # noqa: E402
from chainrule.interop import from_torch  # noqa: E402

from ..helpers import FLOAT32_UNIT_ROUNDOFF, rel_error  # noqa: E402
from .torchvision_models import MODULES, builder  # noqa: E402

SHAPE = (2, 3, 64, 64)
NUM_CLASSES = 1000


def build(name: str, dtype, training: bool):
    """The torch model, seeded, in the mode asked, with Dropout off (its masks differ
    between the libraries) and BatchNorm's running statistics and affine parameters drawn
    away from their 0/1 start, so that a converter that dropped or mixed them up shows."""
    torch.manual_seed(0)
    module = builder(name)(weights=None)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.to(dtype).train(training)


def torch_run(module, x: np.ndarray, grad: np.ndarray):
    xt = torch.from_numpy(x).requires_grad_(True)
    y = module(xt)
    y.backward(torch.from_numpy(grad))
    return (y.detach().numpy(), xt.grad.numpy(),
            {k: p.grad.numpy() for k, p in module.named_parameters()})


def rounding_tolerance(module, x: np.ndarray, factor: float = 16.0) -> float:
    """``factor * u * sum over the layers' calls of sqrt(elements of the input)``: the
    float32 bound of tests/interop/cases.py (float32_output_tolerance), measured on a
    fresh conversion in eval mode (nothing of the tested model changes)."""
    probe = from_torch(module).eval()
    sizes: list[int] = []
    for _, leaf in leaf_layers(probe):
        install(leaf, "forward", lambda _leaf, a, _y: sizes.append(
            sum(v.size for v in a) if isinstance(a, (list, tuple)) else a.size))
    probe.forward(x)
    return factor * FLOAT32_UNIT_ROUNDOFF * float(np.sum(np.sqrt(sizes)))


def parity_errors(name: str, dtype, training: bool) -> tuple[dict[str, float], object]:
    """Relative errors (chainrule vs torch autograd) of the output, the input gradient,
    every parameter gradient and, in training mode, the updated running statistics."""
    module = build(name, dtype, training)
    model = from_torch(module)
    assert isinstance(model, cr.Graph) and model.training == training
    assert set(model.state_dict()) == set(module.state_dict())
    if not training:
        model.gradients_in_eval()

    rng = np.random.default_rng(1)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x = rng.standard_normal(SHAPE).astype(np_dtype)
    grad = rng.standard_normal((SHAPE[0], NUM_CLASSES)).astype(np_dtype)
    y, dx = model.forward(x), model.backward(grad)
    y_t, dx_t, grads_t = torch_run(module, x, grad)

    errors = {"output": rel_error(y, y_t), "input gradient": rel_error(dx, dx_t)}
    ours = dict(model.named_parameters())
    assert set(ours) == set(grads_t)
    for key, g_t in grads_t.items():
        # Against the largest gradient of the same module: a BatchNorm's bias gradient is
        # zero up to rounding where its output reaches the loss only through a later
        # training-mode BatchNorm (which removes any constant shift), and its own scale
        # then means nothing; its weight gradient holds the same sums, not cancelled.
        owner = key.rsplit(".", 1)[0]
        scale = max(np.max(np.abs(g)) for k, g in grads_t.items() if k.rsplit(".", 1)[0] == owner)
        errors[f"{key}.grad"] = float(np.max(np.abs(ours[key].grad - g_t)) / max(scale, 1e-30))
    state_t = module.state_dict()
    errors.update({k: rel_error(v, state_t[k].numpy()) for k, v in model.state_dict().items()
                   if "running" in k})
    return errors, (module, x)


def assert_within(name: str, errors: dict[str, float], tol: float) -> None:
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, \
        f"{name}: worst relative error {errors[worst]:.2e} ({worst}) > {tol:.2e}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_torchvision_model_matches_torch_in_float64(name, training):
    errors, _ = parity_errors(name, torch.float64, training)
    assert_within(name, errors, 1e-9)


@pytest.mark.parametrize("name", list(MODULES))
def test_torchvision_model_matches_torch_in_float32(name):
    """Eval mode, with the tolerance float32 rounding explains over the network's layers.
    (Training mode is checked in float64 above.)"""
    errors, (module, x) = parity_errors(name, torch.float32, False)
    assert_within(name, errors, rounding_tolerance(module, x))
