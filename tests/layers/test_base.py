"""Layer, the base class: naming, modes, caches, errors, dtype and state dicts."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr

torch = pytest.importorskip("torch")
nn = torch.nn


def data(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def ours_model() -> cr.Sequential:
    """A model using every kind of layer with parameters or buffers, nested."""
    return cr.Sequential(
        cr.Conv2d(2, 4, 3, padding=1, bias=False), cr.BatchNorm2d(4), cr.ReLU(),
        cr.Residual(cr.Sequential(cr.Conv2d(4, 4, 3, padding=1), cr.Tanh()), cr.Conv2d(4, 4, 1)),
        cr.MaxPool2d(2), cr.Dropout(0.25, rng=0), cr.Flatten(), cr.Linear(16, 6),
        cr.BatchNorm1d(6), cr.Linear(6, 3))


class TorchResidual(nn.Module):
    def __init__(self, block, shortcut):
        super().__init__()
        self.block, self.shortcut = block, shortcut

    def forward(self, x):
        return self.block(x) + self.shortcut(x)


def torch_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        TorchResidual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh()), nn.Conv2d(4, 4, 1)),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(16, 6),
        nn.BatchNorm1d(6), nn.Linear(6, 3))


X_SHAPE = (3, 2, 4, 4)


def torch_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def assert_states_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------------------- naming
def test_named_parameters_order_names_and_shapes_match_torch():
    ours, ref = ours_model(), torch_model()
    ours_named = [(name, p.shape) for name, p in ours.named_parameters()]
    ref_named = [(name, tuple(p.shape)) for name, p in ref.named_parameters()]
    assert ours_named == ref_named
    assert [p.shape for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert ours.parameters()[0] is ours[0].weight
    assert [name for name, _ in ours.named_buffers()] == [name for name, _ in ref.named_buffers()]
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_state_dict_keys_order_and_shapes_match_torch():
    ours, ref = ours_model(), torch_model()
    ours_state, ref_state = ours.state_dict(), ref.state_dict()
    assert list(ours_state) == list(ref_state)
    for key, value in ref_state.items():
        assert ours_state[key].shape == tuple(value.shape), key
    assert ours_state["1.num_batches_tracked"].dtype == np.int64


# ----------------------------------------------------------------------------- grads, modes
def test_zero_grad_zeroes_every_gradient_in_place():
    model = ours_model()
    model.forward(data(X_SHAPE))
    model.backward(data((3, 3), seed=1).astype(np.float32))
    grads = [p.grad for p in model.parameters()]
    # 7.bias feeds BatchNorm1d, which cancels it: its true gradient is 0.
    empty = [name for name, p in model.named_parameters()
             if name != "7.bias" and not np.any(p.grad)]
    assert not empty, f"no gradient reached {empty}"
    model.zero_grad()
    for p, g in zip(model.parameters(), grads):
        assert p.grad is g, "zero_grad must keep the arrays (optimizers may hold them)"
        assert not np.any(p.grad), "gradient not zeroed"


def test_train_and_eval_are_recursive():
    model = ours_model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not any(m.training for m in model.modules())
    # a child switched on its own does not change the parent
    model[3].train()
    assert not model.training and all(m.training for m in model[3].modules())


def test_eval_mode_keeps_no_caches():
    model = ours_model()
    model.forward(data(X_SHAPE))
    cached = [m for m in model.modules() if m._cache is not None]
    assert len(cached) > 5, "training forward should cache in the layers"
    model.eval()
    assert all(m._cache is None for m in model.modules()), "eval() must release the caches"
    model.forward(data(X_SHAPE, seed=1))
    leftover = [repr(m) for m in model.modules() if m._cache is not None]
    assert not leftover, f"eval forward kept caches in: {leftover}"


def test_gradients_in_eval_allows_a_backward_in_eval_mode_and_can_be_turned_off():
    model = ours_model().eval().gradients_in_eval()
    model.forward(data(X_SHAPE))
    assert model.backward(np.ones((3, 3), np.float32)).shape == X_SHAPE
    model.gradients_in_eval(False)
    model.forward(data(X_SHAPE))
    assert all(m._cache is None for m in model.modules())


def test_running_stats_are_frozen_in_eval():
    model = ours_model().eval()
    before = model.state_dict()
    model.forward(data(X_SHAPE))
    assert_states_equal(model.state_dict(), before)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("layer, x", [
    (cr.Linear(3, 2), np.ones((2, 3))),
    (cr.Conv2d(1, 2, 3), np.ones((1, 1, 4, 4))),
    (cr.BatchNorm1d(3), np.arange(6.0).reshape(2, 3)),
    (cr.ReLU(), np.ones((2, 2))),
    (cr.Dropout(0.5), np.ones((2, 2))),
    (cr.MaxPool2d(2), np.ones((1, 1, 4, 4))),
], ids=lambda v: type(v).__name__ if isinstance(v, cr.Layer) else "")
def test_backward_without_forward_or_after_eval_forward_raises(layer, x):
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"{name}.*without a cached forward"):
        layer.copy().backward(np.ones((1, 1)))  # never ran forward
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match=rf"{name}.*without a cached forward"):
        layer.backward(np.ones_like(y))  # the cache was released by the first backward
    layer.eval()
    layer.forward(x)
    with pytest.raises(RuntimeError, match=rf"{name}.*without a cached forward"):
        layer.backward(np.ones_like(y))


def test_backward_error_in_a_sequential_names_the_layer_without_cache():
    model = cr.Sequential(cr.Linear(3, 4), cr.ReLU(), cr.Linear(4, 2))
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=4, out_features=2\)"):
        model.backward(np.ones((1, 2)))


def test_wrongly_shaped_gradient_names_layer_and_both_shapes():
    layer = cr.Linear(4, 3)
    layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError) as info:
        layer.backward(np.ones((2, 5), np.float32))
    message = str(info.value)
    assert "Linear" in message and "(2, 3)" in message and "(2, 5)" in message, message


def test_gradient_must_be_an_array():
    layer = cr.Tanh()
    layer.forward(np.ones((2, 2)))
    with pytest.raises(TypeError, match="Tanh.*ndarray.*list"):
        layer.backward([[1.0, 1.0], [1.0, 1.0]])


# ----------------------------------------------------------------------------- dtype
def test_to_float64_casts_parameters_grads_and_buffers():
    model = ours_model()
    assert model.dtype == np.float32
    assert model.to(np.float64) is model
    for name, p in model.named_parameters():
        assert p.dtype == np.float64 and p.grad.dtype == np.float64, name
    for name, b in model.named_buffers():
        expected = np.int64 if name.endswith("num_batches_tracked") else np.float64
        assert b.dtype == expected, name
    y = model.forward(data(X_SHAPE).astype(np.float32))
    dx = model.backward(np.ones(y.shape))
    assert y.dtype == dx.dtype == np.float64
    model.float()
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model.state_dict()["1.running_var"].dtype == np.float32


def test_to_refuses_non_float_dtypes():
    with pytest.raises(TypeError, match="float32 or float64.*int32"):
        cr.Linear(2, 2).to(np.int32)


def test_to_keeps_parameter_objects():
    model = ours_model()
    before = model.parameters()
    model.to(np.float64)
    assert all(a is b for a, b in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- state dict
def trained_torch_model() -> nn.Sequential:
    torch.manual_seed(0)
    ref = torch_model()
    with torch.no_grad():  # two training forwards: running stats and counters move
        for seed in (1, 2):
            ref(torch.tensor(data(X_SHAPE, seed=seed), dtype=torch.float32))
    return ref


def test_load_state_dict_from_torch_loads_everything_as_is():
    ref = trained_torch_model()
    state = torch_state(ref)
    assert state["1.num_batches_tracked"] == 2
    ours = ours_model()
    assert ours.load_state_dict(state) is ours
    assert_states_equal(ours.state_dict(), state)
    assert ours.state_dict()["1.num_batches_tracked"].dtype == np.int64
    # and the loaded model computes what torch computes
    ours.eval()
    ref.eval()
    x = data(X_SHAPE, seed=3).astype(np.float32)
    np.testing.assert_allclose(ours.forward(x), ref(torch.tensor(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_load_state_dict_casts_float64_arrays_into_a_float32_model():
    state64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v)
               for k, v in torch_state(trained_torch_model()).items()}
    ours = ours_model()
    ours.load_state_dict(state64)
    loaded = ours.state_dict()
    for key, value in state64.items():
        expected_dtype = np.int64 if key.endswith("num_batches_tracked") else np.float32
        assert loaded[key].dtype == expected_dtype, key
        np.testing.assert_array_equal(loaded[key], value.astype(expected_dtype), err_msg=key)
    assert all(p.dtype == np.float32 for p in ours.parameters())


def test_load_state_dict_tolerates_missing_num_batches_tracked():
    state = torch_state(trained_torch_model())
    ours = ours_model()
    ours.load_state_dict({k: v for k, v in state.items() if "num_batches_tracked" not in k})
    assert int(ours[1].num_batches_tracked) == 0
    np.testing.assert_array_equal(ours[1].running_mean, state["1.running_mean"])


def test_load_state_dict_names_every_problem_in_one_error_and_changes_nothing():
    state = torch_state(trained_torch_model())
    del state["7.bias"]                                    # missing
    del state["8.running_var"]                             # missing buffer
    state["7.scale"] = np.ones(6, np.float32)              # unexpected
    state["extra.weight"] = np.ones(1, np.float32)         # unexpected
    state["9.weight"] = np.ones((3, 5), np.float32)        # mis-shaped (3, 6)
    state["0.weight"] = state["0.weight"][:2]              # mis-shaped (4, 2, 3, 3)
    ours = ours_model()
    before = ours.state_dict()
    with pytest.raises(ValueError) as info:
        ours.load_state_dict(state)
    message = str(info.value)
    for needle in ("Sequential", "missing", "7.bias", "8.running_var", "unexpected", "7.scale",
                   "extra.weight", "9.weight", "(3, 6)", "(3, 5)", "0.weight", "(4, 2, 3, 3)",
                   "(2, 2, 3, 3)"):
        assert needle in message, f"{needle!r} not in: {message}"
    assert "3.block.0.weight" not in message, "a correct key was reported"
    assert_states_equal(ours.state_dict(), before)


def test_load_state_dict_with_strict_false_ignores_missing_and_unexpected():
    state = torch_state(trained_torch_model())
    del state["9.bias"]
    state["junk"] = np.zeros(2)
    ours = ours_model()
    bias = ours[9].bias.data.copy()
    ours.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(ours[9].bias.data, bias)
    np.testing.assert_array_equal(ours[9].weight.data, state["9.weight"])


def test_load_state_dict_keeps_parameter_objects():
    ours = ours_model()
    params = ours.parameters()
    ours.load_state_dict(torch_state(trained_torch_model()))
    assert all(a is b for a, b in zip(params, ours.parameters()))


def test_state_dict_returns_copies():
    model = ours_model()
    state = model.state_dict()
    state["0.weight"][...] = 123.0
    state["1.running_mean"][...] = 123.0
    state["1.num_batches_tracked"][...] = 99
    fresh = model.state_dict()
    assert not np.any(fresh["0.weight"] == 123.0)
    assert not np.any(fresh["1.running_mean"] == 123.0)
    assert int(fresh["1.num_batches_tracked"]) == 0


def test_loaded_arrays_are_not_shared_with_the_source():
    state = torch_state(trained_torch_model())
    ours = ours_model()
    ours.load_state_dict(state)
    state["0.weight"][...] = 0.0
    state["1.running_mean"][...] = 0.0
    assert np.any(ours[0].weight.data != 0) and np.any(ours[1].running_mean != 0)


# ----------------------------------------------------------------------------- init
def test_reset_parameters_with_a_seed_is_reproducible():
    a, b = ours_model(), ours_model()
    for layer, seed in ((a, 1), (b, 2)):
        for module in layer.modules():  # start from different weights
            if isinstance(module, cr.Linear):
                module.reset_parameters(seed)
    assert a.reset_parameters(7) is a
    b.reset_parameters(7)
    assert_states_equal(a.state_dict(), b.state_dict())
    c = ours_model().reset_parameters(8)
    assert not np.array_equal(c[0].weight.data, a[0].weight.data)
    d = ours_model().reset_parameters(np.random.default_rng(7))
    assert_states_equal(d.state_dict(), a.state_dict())


def test_reset_parameters_restores_batchnorm_affine_defaults():
    bn = cr.BatchNorm2d(3)
    bn.weight.data[...] = 5.0
    bn.bias.data[...] = 5.0
    bn.reset_parameters(0)
    np.testing.assert_array_equal(bn.weight.data, 1.0)
    np.testing.assert_array_equal(bn.bias.data, 0.0)


def test_setting_attributes_before_init_is_refused():
    class Broken(cr.Layer):
        def __init__(self):
            self.w = 1

    with pytest.raises(RuntimeError, match="super"):
        Broken()
