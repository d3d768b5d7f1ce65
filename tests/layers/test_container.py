"""Sequential and Residual: the chain rule across children, naming, and parity."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from tests.helpers import assert_torch_parity

torch = pytest.importorskip("torch")
nn = torch.nn

DTYPES = [np.float64, np.float32]


def data(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


class TorchResidual(nn.Module):
    """The hand-built torch computation ``block(x) + shortcut(x)``, with the same
    attribute names so that state-dict keys agree."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x):
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


# ------------------------------------------------------------------------- Sequential
def small_mlp(seed: int = 0) -> cr.Sequential:
    return cr.Sequential(cr.Linear(5, 4, rng=seed), cr.Tanh(), cr.Linear(4, 3, rng=seed + 1),
                         cr.Sigmoid())


def test_sequential_forward_and_backward_are_the_composition():
    model = small_mlp().to(np.float64)
    twin = model.copy()
    layers = list(twin)
    x, g = data((3, 5)), data((3, 3), seed=1)

    y = model.forward(x)
    h = x
    for layer in layers:
        h = layer.forward(h)
    np.testing.assert_array_equal(y, h)

    dx = model.backward(g)
    d = g
    for layer in reversed(layers):
        d = layer.backward(d)
    np.testing.assert_array_equal(dx, d)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_sequential_indexing_len_iteration_and_append():
    a, b, c = cr.Linear(2, 3), cr.ReLU(), cr.Linear(3, 1)
    model = cr.Sequential(a, b)
    assert len(model) == 2
    assert model[0] is a and model[1] is b and model[-1] is b
    assert list(model) == [a, b]
    assert model.append(c) is model
    assert len(model) == 3 and model[2] is c
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    head = model[1:]
    assert isinstance(head, cr.Sequential) and list(head) == [b, c]
    with pytest.raises(IndexError):
        model[3]
    with pytest.raises(TypeError, match="Sequential"):
        cr.Sequential(a, "relu")
    with pytest.raises(TypeError, match="Sequential"):
        model.append(np.zeros(3))
    assert len(cr.Sequential()) == 0


def test_sequential_state_dict_keys_match_torch_including_nesting():
    ours = cr.Sequential(cr.Linear(4, 3), cr.Sequential(cr.Linear(3, 3), cr.BatchNorm1d(3)),
                         cr.ReLU(), cr.Linear(3, 2, bias=False))
    ref = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)),
                        nn.ReLU(), nn.Linear(3, 2, bias=False))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "0.weight" in ours.state_dict() and "1.0.weight" in ours.state_dict()
    assert "1.1.running_mean" in ours.state_dict()
    for key, value in ref.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape), key


SEQ_CASES = ["mlp", "convnet", "nested"]


def make_sequential(kind: str):
    # A convolution right before BatchNorm has no bias: BatchNorm cancels it, its true
    # gradient is 0 and a relative error of rounding noise would mean nothing.
    if kind == "mlp":
        return (cr.Sequential(cr.Linear(6, 5), cr.LeakyReLU(0.2), cr.Linear(5, 4), cr.Tanh()),
                nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.2), nn.Linear(5, 4), nn.Tanh()),
                (3, 6))
    if kind == "convnet":
        return (cr.Sequential(cr.Conv2d(2, 3, 3, padding=1, bias=False), cr.BatchNorm2d(3),
                              cr.Tanh(), cr.AvgPool2d(2), cr.Flatten(), cr.Linear(12, 4)),
                nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3),
                              nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)),
                (2, 2, 4, 4))
    return (cr.Sequential(cr.Sequential(cr.Linear(3, 4), cr.Sigmoid()),
                          cr.Sequential(cr.Linear(4, 2))),
            nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid()),
                          nn.Sequential(nn.Linear(4, 2))),
            (1, 3))


@pytest.mark.parametrize("kind", SEQ_CASES)
def test_sequential_gradcheck(kind):
    ours, _, shape = make_sequential(kind)
    err = cr.gradcheck(ours, data(shape, seed=2))
    assert err < 1e-6, f"Sequential {kind}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", SEQ_CASES)
def test_sequential_matches_torch(kind, dtype):
    torch.manual_seed(0)
    ours, ref, shape = make_sequential(kind)
    assert_torch_parity(ours, ref, data(shape, seed=3), dtype=dtype)


# ------------------------------------------------------------------------- Residual
def make_residual(kind: str):
    """(chainrule Residual, equivalent torch module, input shape)."""
    if kind == "identity":
        ours = cr.Residual(cr.Sequential(cr.Conv2d(3, 3, 3, padding=1, bias=False),
                                         cr.BatchNorm2d(3), cr.Tanh()))
        ref = TorchResidual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, bias=False),
                                          nn.BatchNorm2d(3), nn.Tanh()))
        return ours, ref, (2, 3, 5, 5)
    if kind == "conv_shortcut":
        ours = cr.Residual(cr.Sequential(cr.Conv2d(3, 4, 3, padding=1), cr.Tanh()),
                           cr.Conv2d(3, 4, 1))
        ref = TorchResidual(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh()),
                            nn.Conv2d(3, 4, 1))
        return ours, ref, (1, 3, 5, 4)
    if kind == "strided_shortcut":
        ours = cr.Residual(cr.Sequential(cr.Conv2d(2, 4, 3, stride=2, padding=1), cr.Sigmoid()),
                           cr.Sequential(cr.Conv2d(2, 4, 1, stride=2, bias=False),
                                         cr.BatchNorm2d(4)))
        ref = TorchResidual(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Sigmoid()),
                            nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, bias=False),
                                          nn.BatchNorm2d(4)))
        return ours, ref, (2, 2, 5, 5)
    # a linear residual on features, and the same block used inside a Sequential
    ours = cr.Sequential(cr.Linear(4, 4), cr.Residual(cr.Linear(4, 4)), cr.Tanh())
    ref = nn.Sequential(nn.Linear(4, 4), TorchResidual(nn.Linear(4, 4)), nn.Tanh())
    return ours, ref, (3, 4)


RES_CASES = ["identity", "conv_shortcut", "strided_shortcut", "in_sequential"]


@pytest.mark.parametrize("kind", RES_CASES)
def test_residual_gradcheck(kind):
    ours, _, shape = make_residual(kind)
    err = cr.gradcheck(ours, data(shape, seed=4))
    assert err < 1e-6, f"Residual {kind}: gradcheck relative error {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", RES_CASES)
def test_residual_matches_hand_built_torch(kind, dtype):
    torch.manual_seed(1)
    ours, ref, shape = make_residual(kind)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert_torch_parity(ours, ref, data(shape, seed=5), dtype=dtype)


def test_identity_residual_adds_the_gradient_of_the_skip():
    # block = a zero-weight Linear: y = x + b, so dx must be exactly g (skip) + 0 (block).
    block = cr.Linear(3, 3, dtype=np.float64)
    block.weight.data[...] = 0
    res = cr.Residual(block)
    x, g = data((2, 3)), data((2, 3), seed=1)
    np.testing.assert_array_equal(res.forward(x), x + block.bias.data)
    np.testing.assert_array_equal(res.backward(g), g)
    np.testing.assert_array_equal(block.bias.grad, g.sum(axis=0))


def test_residual_state_dict_keys():
    res = cr.Residual(cr.Sequential(cr.Conv2d(1, 2, 3)), cr.Conv2d(1, 2, 3, bias=False))
    assert list(res.state_dict()) == ["block.0.weight", "block.0.bias", "shortcut.weight"]
    assert list(cr.Residual(cr.Linear(2, 2)).state_dict()) == ["block.weight", "block.bias"]


@pytest.mark.parametrize("block, shortcut, shape", [
    (cr.Conv2d(3, 5, 3, padding=1), None, (2, 3, 4, 4)),            # channels differ
    (cr.Conv2d(3, 3, 3), None, (1, 3, 6, 6)),                       # spatial size shrinks
    (cr.Conv2d(3, 4, 3, padding=1), cr.Conv2d(3, 4, 1, stride=2), (1, 3, 6, 6)),
    (cr.Linear(4, 2), None, (3, 4)),
])
def test_residual_with_mismatched_shapes_raises(block, shortcut, shape):
    res = cr.Residual(block, shortcut)
    with pytest.raises(ValueError, match=r"Residual.*shape.*does not match.*shape"):
        res.forward(np.zeros(shape, np.float32))


def test_residual_rejects_non_layers():
    with pytest.raises(TypeError, match="Residual"):
        cr.Residual(lambda x: x)
    with pytest.raises(TypeError, match="Residual"):
        cr.Residual(cr.ReLU(), shortcut="identity")
