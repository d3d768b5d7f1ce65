"""from_torch / to_torch: same numbers, same state dicts, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chainrule as cr  # noqa: E402
from chainrule.interop import UnsupportedModuleError, from_torch, to_torch  # noqa: E402
from chainrule.interop.torch import TorchResidual  # noqa: E402

from ..helpers import rel_error  # noqa: E402
from .cases import ALL_CASES, MODEL_CASES, float32_output_tolerance, inputs, warm_up  # noqa: E402

# torch's own note on even-kernel "same" padding; the case is there on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
nn = torch.nn


def torch_forward(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b), f"keys differ: {list(a)} vs {list(b)}"
    for key in a:
        assert a[key].dtype == b[key].dtype, f"{key}: dtype {a[key].dtype} vs {b[key].dtype}"
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name, build, shape", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_to_torch_gives_the_same_outputs(name, build, shape):
    model = warm_up(build(), shape)
    module = to_torch(model)
    assert not module.training
    for batch, seed in ((2, 1), (5, 2)):
        x = inputs(shape, batch, seed)
        tol = float32_output_tolerance(model, x)
        err = rel_error(torch_forward(module, x), model.forward(x))
        assert err <= tol, f"{name}, batch {batch}: torch vs chainrule relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, build, shape", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_round_trip_preserves_state_dict_mode_and_dtype(name, build, shape, dtype):
    model = warm_up(build(), shape).to(dtype)
    model.train()
    if isinstance(model, cr.Sequential):
        model[0].eval()  # a mixed-mode model keeps each module's own mode
    back = from_torch(to_torch(model))
    assert type(back) is type(model)
    assert_same_state(back.state_dict(), model.state_dict())
    assert [(n, type(m), m.training) for n, m in back.named_modules()] == \
        [(n, type(m), m.training) for n, m in model.named_modules()]
    assert repr(back) == repr(model)


def test_from_torch_copies_weights_buffers_mode_and_names():
    torch.manual_seed(0)
    module = nn.Sequential()
    module.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"),
                                                nn.BatchNorm2d(4, momentum=None), nn.ReLU()))
    module.add_module("res", TorchResidual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)), None))
    module.add_module("head", nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 3)))
    module.double()
    module(torch.randn(5, 3, 6, 6, dtype=torch.float64))  # non-trivial running stats
    module.eval()
    module.head.train()

    model = from_torch(module)
    expected = {k: v.numpy() for k, v in module.state_dict().items()}
    assert_same_state(model.state_dict(), expected)
    assert model.dtype == np.float64
    assert [(n, m.training) for n, m in model.named_modules()] == \
        [(n, m.training) for n, m in module.named_modules()]
    model.eval(), module.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    assert rel_error(model.forward(x), torch_forward(module, x)) <= 1e-12
    # No shared memory: changing the chainrule weights leaves torch's alone.
    model.features[0].weight.data += 1.0
    assert not np.allclose(model.features[0].weight.data, module.features[0].weight.detach().numpy())


def test_torch_model_trained_in_chainrule_and_converted_back():
    torch.manual_seed(1)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.25), nn.Linear(4 * 4 * 4, 3))
    model = from_torch(module)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    loss_fn, optimizer = cr.CrossEntropyLoss(), cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = [cr.train.train_step(model, loss_fn, optimizer, x, y)[0] for _ in range(5)]
    assert losses[-1] < losses[0]

    back = to_torch(model.eval())
    assert not np.allclose(back[0].weight.detach().numpy(), module[0].weight.detach().numpy())
    for batch, seed in ((3, 1), (7, 2)):
        xt = inputs((1, 8, 8), batch, seed)
        err = rel_error(torch_forward(back, xt), model.forward(xt))
        assert err <= float32_output_tolerance(model, xt), f"batch {batch}: relative error {err:.2e}"
    assert_same_state({k: v.numpy() for k, v in back.state_dict().items()}, model.state_dict())


def _unsupported_cases():
    return [
        (nn.Sequential(nn.ReLU(), nn.Sequential(nn.Conv3d(1, 1, 1), nn.GELU())), "1.0: torch.nn.Conv3d"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Softsign()), "1: torch.nn.Softsign"),
        (nn.Softsign(), "(root): torch.nn.Softsign"),
        (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
         "0: torch.nn.Conv2d(padding_mode='reflect')"),
        (nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True, ceil_mode=True)),
         "1: torch.nn.MaxPool2d(return_indices=True)"),
        (nn.Sequential(nn.MaxPool1d(2, return_indices=True)), "0: torch.nn.MaxPool1d(return_indices=True)"),
        (nn.Sequential(nn.AdaptiveMaxPool2d((None, 2), return_indices=True)),
         "0: torch.nn.AdaptiveMaxPool2d(return_indices=True)"),
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True, divisor_override=0)),
         "0: torch.nn.AvgPool2d(divisor_override=0)"),
        (nn.Sequential(nn.AvgPool2d(2, divisor_override=-3)), "0: torch.nn.AvgPool2d(divisor_override=-3)"),
        (TorchResidual(nn.Sequential(nn.BatchNorm2d(2, bias=False))),
         "block.0: torch.nn.BatchNorm2d(bias=False)"),
        (nn.Sequential(nn.Linear(2, 2).half()), "0: torch.nn.Linear with dtype torch.float16"),
        # A subclass may override forward: it is traced (never converted as its base
        # class), and what its forward calls decides.
        (nn.Sequential(type("MyReLU", (nn.ReLU,), {"forward": lambda self, x: torch.sin(x)})()),
         "traced node 'sin' (op call_function, target torch.sin)"),
    ]


@pytest.mark.parametrize("module, message", _unsupported_cases())
def test_unsupported_torch_module_is_named_with_its_path(module, message):
    with pytest.raises(UnsupportedModuleError) as info:
        from_torch(module)
    text = str(info.value).replace("tests.interop.", "")
    assert text.startswith(message), text


def test_unsupported_chainrule_layer_is_named_with_its_path():
    class Scale(cr.Layer):
        def forward(self, x):
            return 2 * x

    with pytest.raises(UnsupportedModuleError, match=r"^1\.block: .*Scale has no torch"):
        to_torch(cr.Sequential(cr.ReLU(), cr.Residual(Scale())))


def test_torch_residual_survives_torch_save(tmp_path):
    module = TorchResidual(nn.Linear(3, 3), nn.Linear(3, 3, bias=False))
    torch.save(module, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert type(loaded) is TorchResidual
    x = torch.randn(2, 3)
    assert torch.equal(loaded(x), module(x))


@pytest.mark.parametrize("name, build, shape", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_train_mode_outputs_agree_without_dropout(name, build, shape):
    """In training mode BatchNorm uses batch statistics and updates its running ones in
    both libraries alike (dropout masks differ, so those models are skipped here)."""
    model = warm_up(build(), shape)
    for m in model.modules():
        if isinstance(m, cr.Dropout):
            m.p = 0.0
    module = to_torch(model).train()
    model.train()
    x = inputs(shape, 4, 3)
    tol = float32_output_tolerance(model, x)
    err = rel_error(torch_forward(module, x), model.forward(x))
    assert err <= tol, f"train-mode relative error {err:.2e} (tolerance {tol:.2e})"
    ours = model.state_dict()
    for key, value in module.state_dict().items():
        theirs = value.numpy()
        if key.endswith("running_mean"):
            # A batch mean averages values of the size of the batch's std: its rounding
            # error scales with that, not with the mean, which after a normalized layer
            # is 0 up to rounding (~1e-9 here, where a relative error means nothing).
            std = np.sqrt(ours[key.replace("running_mean", "running_var")])
            error = np.max(np.abs(theirs - ours[key]) / np.maximum(np.abs(theirs), std))
        else:
            error = rel_error(theirs, ours[key])
        assert error <= tol, f"{key}: {error:.2e} > {tol:.2e}"
