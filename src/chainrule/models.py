"""A small model zoo: classic image classifiers sized for NumPy training.

Every builder takes the same four arguments and returns a ``Sequential``:

- ``in_channels``: C of the (N, C, H, W) input (1 for digits/MNIST, 3 for CIFAR);
- ``input_size``: H = W of the input, any size >= 8 (the sizes of the flattened
  features are computed from it, so the head always fits);
- ``num_classes``: the number of output logits;
- ``seed``: fixes the initial weights (``model.reset_parameters(seed)``) and the
  dropout masks; ``None`` draws fresh entropy.

``MODELS`` maps a name to its builder (what the command line offers) and
``describe_models()`` lists the names with a one-line description.
"""

from __future__ import annotations

from collections.abc import Callable

from .layers import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear,
                     MaxPool2d, ReLU, ReLU6, Residual, Sequential)
from .layers._args import positive_int

__all__ = ["lenet5", "cifar_cnn", "resnet_mini", "mobilenet_v2_mini", "MODELS", "describe_models"]

MIN_INPUT_SIZE = 8


def _check_args(model: str, in_channels: int, input_size: int, num_classes: int) -> None:
    positive_int(in_channels, "in_channels", model)
    positive_int(num_classes, "num_classes", model)
    positive_int(input_size, "input_size", model)
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"{model}: input_size must be >= {MIN_INPUT_SIZE}, got {input_size}")


def _seeded(model: Sequential, seed: int | None) -> Sequential:
    if seed is not None:
        model.reset_parameters(seed)
    return model


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[Layer]:
    """3x3 convolution ("same" size at stride 1, halved at stride 2), BatchNorm, ReLU.
    The convolution has no bias: BatchNorm's shift would cancel it."""
    return [Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            BatchNorm2d(out_channels), ReLU()]


def lenet5(in_channels: int = 1, input_size: int = 28, num_classes: int = 10,
           seed: int | None = None) -> Sequential:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling; 61,706 parameters on MNIST.

    Layout: conv 5x5 (6, padding 2) - ReLU - maxpool 2 - conv 5x5 (16) - ReLU - maxpool 2
    - Flatten - Linear 120 - ReLU - Linear 84 - ReLU - Linear ``num_classes``.

    The first convolution pads by 2, the usual adaptation to 28x28 digits, so its map
    has the input's size. The second is unpadded, as in the paper, when the map it sees
    is at least 8 wide (``input_size >= 16``); on smaller inputs (8x8 digits) it pads by
    2 as well, otherwise the 5x5 kernel would not fit or leave nothing to pool. The
    features reaching the head are then ``16 * s * s`` with
    ``s = (input_size // 2 - 4) // 2`` (unpadded) or ``s = input_size // 4`` (padded).

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("lenet5", in_channels, input_size, num_classes)
    size = input_size // 2                        # after conv1 (size kept) and pooling
    pad2 = 0 if size >= 8 else 2
    size = (size + 2 * pad2 - 4) // 2             # after conv2 and pooling
    model = Sequential(
        Conv2d(in_channels, 6, 5, padding=2), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5, padding=pad2), ReLU(), MaxPool2d(2),
        Flatten(),                                # (N, 16 * size * size)
        Linear(16 * size * size, 120), ReLU(),
        Linear(120, 84), ReLU(),
        Linear(84, num_classes),
    )
    return _seeded(model, seed)


def cifar_cnn(in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
              seed: int | None = None) -> Sequential:
    """VGG-style CNN: two conv3x3-BN-ReLU pairs per stage (32, 64), pooling, dropout head.

    Layout: [conv 32 - conv 32 - maxpool 2] - [conv 64 - conv 64 - maxpool 2] - Flatten
    - Linear 128 - ReLU - Dropout 0.5 - Linear ``num_classes``; each conv is a bias-free
    3x3 "same" convolution followed by BatchNorm2d and ReLU. The head sees
    ``64 * (input_size // 4) ** 2`` features (4096 for 32x32 images).

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("cifar_cnn", in_channels, input_size, num_classes)
    size = input_size // 2 // 2                   # the convs keep the size; two poolings
    model = Sequential(
        *_conv_bn_relu(in_channels, 32), *_conv_bn_relu(32, 32), MaxPool2d(2),
        *_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64), MaxPool2d(2),
        Flatten(),                                # (N, 64 * size * size)
        Linear(64 * size * size, 128), ReLU(), Dropout(0.5, rng=seed),
        Linear(128, num_classes),
    )
    return _seeded(model, seed)


def _basic_block(in_channels: int, out_channels: int, stride: int) -> list[Layer]:
    """ResNet's basic block followed by its ReLU: ``relu(block(x) + shortcut(x))``. The
    shortcut is the identity when the shape is kept, else a strided 1x1 conv and BN."""
    block = Sequential(*_conv_bn_relu(in_channels, out_channels, stride),
                       Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       BatchNorm2d(out_channels))
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        # A 3x3 conv with padding 1 and a 1x1 conv without padding give the same output
        # size at any stride, ceil(H / stride), so the two branches always add up.
        shortcut = Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                              BatchNorm2d(out_channels))
    return [Residual(block, shortcut), ReLU()]


def resnet_mini(in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
                seed: int | None = None) -> Sequential:
    """Small ResNet: a conv stem and three residual stages (16, 32, 64), global pooling.

    Layout: conv3x3 16 - BN - ReLU, then one basic block per stage (the 2nd and 3rd
    halve the size with a stride-2 conv and a 1x1 projection shortcut), each followed by
    ReLU, then AdaptiveAvgPool2d(1) - Flatten - Linear ``num_classes``. Global average
    pooling makes the head independent of ``input_size``.

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("resnet_mini", in_channels, input_size, num_classes)
    model = Sequential(
        *_conv_bn_relu(in_channels, 16),
        *_basic_block(16, 16, 1),
        *_basic_block(16, 32, 2),
        *_basic_block(32, 64, 2),
        AdaptiveAvgPool2d(1), Flatten(),          # (N, 64)
        Linear(64, num_classes),
    )
    return _seeded(model, seed)


def _inverted_residual(in_channels: int, out_channels: int, stride: int, expansion: int) -> Layer:
    """MobileNetV2's inverted residual block (Sandler et al., 2018).

    A 1x1 convolution widens the ``in_channels`` to ``expansion`` times as many (left out
    when ``expansion`` is 1), a 3x3 depthwise convolution (``groups`` = channels: each
    channel filtered alone, 9 weights each) works at ``stride``, and a 1x1 convolution
    projects to ``out_channels``: with BatchNorm after each convolution, ReLU6 after the
    first two and no activation after the projection (the linear bottleneck). Together
    the depthwise and the projecting convolution are a depthwise-separable convolution.
    With stride 1 and as many channels out as in, the block is a ``Residual`` with the
    identity shortcut, which adds the narrow bottleneck maps.
    """
    hidden = in_channels * expansion
    layers: list[Layer] = []
    if expansion != 1:
        layers += [Conv2d(in_channels, hidden, 1, bias=False), BatchNorm2d(hidden), ReLU6()]
    layers += [Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
               BatchNorm2d(hidden), ReLU6(),
               Conv2d(hidden, out_channels, 1, bias=False), BatchNorm2d(out_channels)]
    block = Sequential(*layers)
    return Residual(block) if stride == 1 and in_channels == out_channels else block


# MobileNetV2-mini's stages: (expansion t, output channels c, blocks n, first stride s),
# MobileNetV2's table shortened for 28-32 pixel images (its first stages run at 112x112).
MOBILENET_V2_MINI_STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2))


def mobilenet_v2_mini(in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
                      seed: int | None = None) -> Sequential:
    """Small MobileNetV2: depthwise-separable inverted residual blocks with ReLU6.

    Layout: conv 3x3 16 - BN - ReLU6 (stride 1: the images are small), then the stages
    of ``MOBILENET_V2_MINI_STAGES`` (expansion, channels, blocks, stride): 16 (x1), 24 (x2,
    stride 2), 32 (x2, stride 2), 64 (x2, stride 2), each block an inverted residual
    (1x1 expand - 3x3 depthwise - 1x1 linear projection; the repeated blocks of a stage
    add their input through ``Residual``), then conv 1x1 128 - BN - ReLU6,
    AdaptiveAvgPool2d(1) - Flatten - Dropout 0.2 - Linear ``num_classes``. Three stride-2
    stages take 28x28 to 4x4; global average pooling makes the head independent of
    ``input_size``.

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("mobilenet_v2_mini", in_channels, input_size, num_classes)
    layers: list[Layer] = [Conv2d(in_channels, 16, 3, padding=1, bias=False), BatchNorm2d(16),
                           ReLU6()]
    channels = 16
    for expansion, out_channels, blocks, stride in MOBILENET_V2_MINI_STAGES:
        for index in range(blocks):
            layers.append(_inverted_residual(channels, out_channels, stride if index == 0 else 1,
                                             expansion))
            channels = out_channels
    layers += [Conv2d(channels, 128, 1, bias=False), BatchNorm2d(128), ReLU6(),
               AdaptiveAvgPool2d(1), Flatten(),     # (N, 128)
               Dropout(0.2, rng=seed), Linear(128, num_classes)]
    return _seeded(Sequential(*layers), seed)


MODELS: dict[str, Callable[..., Sequential]] = {
    "lenet5": lenet5,
    "cifar_cnn": cifar_cnn,
    "resnet_mini": resnet_mini,
    "mobilenet_v2_mini": mobilenet_v2_mini,
}


def describe_models() -> list[tuple[str, str]]:
    """(name, one-line description) of each model in ``MODELS``: its docstring's first line."""
    return [(name, _first_line(builder.__doc__)) for name, builder in MODELS.items()]


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
