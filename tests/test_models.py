"""models: every zoo model builds for small and large inputs, has a stable size, is
seeded, and trains."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
from chainrule.models import (MODELS, cifar_cnn, describe_models, lenet5, mobilenet_v2_mini,
                              resnet_mini)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_and_backward(name, shape):
    channels, size, _ = shape
    model = MODELS[name](in_channels=channels, input_size=size, num_classes=7, seed=0)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    out = model.forward(x)
    assert out.shape == (2, 7) and out.dtype == np.float32
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    redundant = linear_bottleneck_shifts(model)
    for key, p in model.named_parameters():
        assert np.all(np.isfinite(p.grad)), key
        assert np.any(p.grad != 0) or key in redundant, key


def linear_bottleneck_shifts(model: cr.Layer) -> set[str]:
    """The shifts (bias) of the BatchNorms that end MobileNetV2's blocks. Their output
    reaches the loss only through sums and 1x1 convolutions followed by another
    BatchNorm, which subtracts any per-channel shift again: their gradient is 0 in exact
    arithmetic (rounding leaves ~1e-9 on larger maps, exactly 0 on 1x1 maps)."""
    shifts = set()
    for name, block in model.named_modules():
        if isinstance(block, cr.Sequential) and name and len(block) >= 5 \
                and isinstance(block[len(block) - 1], cr.BatchNorm2d) \
                and any(isinstance(m, cr.Conv2d) and m.groups > 1 for m in block):
            shifts.add(f"{name}.{len(block) - 1}.bias")
    return shifts


@pytest.mark.parametrize("name", list(MODELS))
def test_every_input_size_fits_the_head(name):
    # The flattened size is computed, not measured: check it for odd and even sizes,
    # around lenet5's switch between padded and unpadded second convolution (16).
    for size in [8, 9, 11, 15, 16, 17, 23, 33]:
        model = MODELS[name](in_channels=2, input_size=size, num_classes=3).eval()
        assert model.forward(np.zeros((1, 2, size, size))).shape == (1, 3), size


def test_parameter_counts_of_the_default_configurations():
    # lenet5 (1x28x28): 156 + 2416 + 400*120+120 + 120*84+84 + 84*10+10, the classic 61,706.
    assert lenet5().num_parameters() == 61_706
    # cifar_cnn (3x32x32): bias-free convs + BN (2 per channel), 4096 features to the head.
    assert cifar_cnn().num_parameters() == (
        (3 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + (32 * 64 * 9 + 128) + (64 * 64 * 9 + 128)
        + (64 * 8 * 8 * 128 + 128) + (128 * 10 + 10)) == 591_466
    # resnet_mini: stem, one block per stage (two 3x3 convs + BNs, 1x1 projection on 2 and 3).
    assert resnet_mini().num_parameters() == (
        (3 * 16 * 9 + 32) + 2 * (16 * 16 * 9 + 32)
        + (16 * 32 * 9 + 64) + (32 * 32 * 9 + 64) + (16 * 32 + 64)
        + (32 * 64 * 9 + 128) + (64 * 64 * 9 + 128) + (32 * 64 + 128)
        + (64 * 10 + 10)) == 78_042
    assert lenet5(in_channels=1, input_size=8).num_parameters() == 61_706 - 400 * 120 + 64 * 120
    # mobilenet_v2_mini (3x32x32): per block expand 1x1 + BN, depthwise 3x3 + BN (9 weights
    # and 2 BN parameters per hidden channel), project 1x1 + BN; hidden = 4 x input channels.
    def block(c_in, c_out, expansion):
        hidden = c_in * expansion
        expand = (c_in * hidden + 2 * hidden) if expansion != 1 else 0
        return expand + (9 * hidden + 2 * hidden) + (hidden * c_out + 2 * c_out)
    assert mobilenet_v2_mini().num_parameters() == (
        (3 * 16 * 9 + 32) + block(16, 16, 1) + block(16, 24, 4) + block(24, 24, 4)
        + block(24, 32, 4) + block(32, 32, 4) + block(32, 64, 4) + block(64, 64, 4)
        + (64 * 128 + 256) + (128 * 10 + 10)) == 86_922


def test_mobilenet_v2_mini_is_built_of_inverted_residual_blocks():
    model = mobilenet_v2_mini(in_channels=1, input_size=28, num_classes=10, seed=0)
    convs = [m for m in model.modules() if isinstance(m, cr.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 7 and all(c.groups == c.in_channels == c.out_channels
                                       and c.kernel_size == (3, 3) for c in depthwise)
    assert [c.stride for c in depthwise] == [(1, 1), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    # The stride-1 blocks that keep their width add their input: four Residuals.
    residuals = [m for m in model.modules() if isinstance(m, cr.Residual)]
    assert len(residuals) == 4 and all(r.shortcut is None for r in residuals)
    # The projection of every block is linear: its BatchNorm is the block's last layer.
    for block in residuals:
        assert isinstance(block.block[len(block.block) - 1], cr.BatchNorm2d)
    assert any(isinstance(m, cr.ReLU6) for m in model.modules())
    assert not any(type(m) is cr.ReLU for m in model.modules())
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert model.forward(x).shape == (2, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_seed_fixes_the_weights(name):
    def state(seed):
        return MODELS[name](1, 8, 10, seed=seed).state_dict()

    a, b, c = state(3), state(3), state(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", list(MODELS))
def test_trains_on_tiny_random_data(name):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    model = MODELS[name](1, 8, 4, seed=0)
    before = model.state_dict()
    history = cr.fit(model, cr.CrossEntropyLoss(), cr.optim.Adam(model.parameters(), lr=1e-2),
                     (X, y), epochs=6, batch_size=4, seed=0)
    assert all(np.isfinite(history.loss))
    assert history.loss[-1] < history.loss[0]
    first = next(iter(before))  # the first layer's weight: "0.weight", "stem.conv.weight", ...
    assert not np.array_equal(model.state_dict()[first], before[first])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="input_size must be >= 8"):
        lenet5(input_size=7)
    with pytest.raises(ValueError, match="num_classes"):
        cifar_cnn(num_classes=0)
    with pytest.raises(TypeError, match="in_channels"):
        resnet_mini(in_channels=1.5)


def test_describe_models_lists_every_model_in_one_line():
    listed = describe_models()
    assert [name for name, _ in listed] == list(MODELS)
    assert all(text and "\n" not in text for _, text in listed)
