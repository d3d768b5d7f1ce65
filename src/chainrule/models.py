"""A small model zoo: classic image classifiers sized for NumPy training.

Every builder takes the same four arguments and returns a ``Sequential`` (the chains)
or a ``Graph`` (``inception_mini`` and ``densenet_mini``, whose branches merge):

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

from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten,
                     Graph, Input, Layer, Linear, MaxPool2d, ReLU, ReLU6, Residual, Sequential,
                     SymbolicTensor)
from .layers._args import positive_int

__all__ = ["lenet5", "cifar_cnn", "resnet_mini", "mobilenet_v2_mini", "inception_mini",
           "densenet_mini", "MODELS", "describe_models"]

MIN_INPUT_SIZE = 8


def _check_args(model: str, in_channels: int, input_size: int, num_classes: int) -> None:
    positive_int(in_channels, "in_channels", model)
    positive_int(num_classes, "num_classes", model)
    positive_int(input_size, "input_size", model)
    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"{model}: input_size must be >= {MIN_INPUT_SIZE}, got {input_size}")


def _seeded(model: Layer, seed: int | None) -> Layer:
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


# ---------------------------------------------------------------------- graph models
# Declared on symbolic tensors (cr.Input) and built as cr.Graph. Every layer gets a node
# name, dotted like torchvision's module paths, so state_dict keys read
# "inception3a.branch2.1.conv.weight" or "denseblock1.denselayer2.conv1.weight".

# The graph models halve inputs of at least this size after their stem (a 2x2 max
# pooling, as GoogLeNet's and DenseNet's ImageNet stems downsample), so that 28x28 and
# 32x32 images cost about what 14x14 and 16x16 would: a quarter of the arithmetic,
# which keeps an epoch of mnist-5k at 17-52 s on two busy cores (4x that without).
# Smaller inputs (8x8 digits) keep their size, or the last stage would see 1x1 maps.
STEM_POOL_MIN_SIZE = 16


def _conv_bn_relu_node(x: SymbolicTensor, in_channels: int, out_channels: int,
                       kernel_size: int, name: str) -> SymbolicTensor:
    """``name``.conv (bias-free, "same" size: padding ``kernel_size // 2``) -
    ``name``.bn - ``name``.relu, called on the symbolic tensor ``x``."""
    x = Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
               bias=False)(x, name=f"{name}.conv")
    x = BatchNorm2d(out_channels)(x, name=f"{name}.bn")
    return ReLU()(x, name=f"{name}.relu")


def _inception_block(x: SymbolicTensor, in_channels: int, name: str, ch1x1: int, ch3x3red: int,
                     ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int) -> SymbolicTensor:
    """GoogLeNet's inception block (Szegedy et al., 2015): four branches read ``x``
    (N, in_channels, H, W) and their maps are concatenated on channels:

    - branch1: conv 1x1 ``ch1x1``;
    - branch2: conv 1x1 ``ch3x3red`` - conv 3x3 ``ch3x3``;
    - branch3: conv 1x1 ``ch5x5red`` - conv 5x5 ``ch5x5``;
    - branch4: max pool 3x3 (stride 1, padding 1) - conv 1x1 ``pool_proj``;

    each conv followed by BatchNorm and ReLU, as in torchvision's GoogLeNet. Every
    branch keeps H x W, so the output is (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).
    ``x`` feeds four nodes: backward sums their four gradients.
    """
    b1 = _conv_bn_relu_node(x, in_channels, ch1x1, 1, f"{name}.branch1")
    b2 = _conv_bn_relu_node(x, in_channels, ch3x3red, 1, f"{name}.branch2.0")
    b2 = _conv_bn_relu_node(b2, ch3x3red, ch3x3, 3, f"{name}.branch2.1")
    b3 = _conv_bn_relu_node(x, in_channels, ch5x5red, 1, f"{name}.branch3.0")
    b3 = _conv_bn_relu_node(b3, ch5x5red, ch5x5, 5, f"{name}.branch3.1")
    b4 = MaxPool2d(3, stride=1, padding=1)(x, name=f"{name}.branch4.0")
    b4 = _conv_bn_relu_node(b4, in_channels, pool_proj, 1, f"{name}.branch4.1")
    return Concat(1)([b1, b2, b3, b4], name=f"{name}.cat")


# inception_mini's stages, a 2x2 max pooling between two: each block (name, ch1x1,
# ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), GoogLeNet's table 1 (inception 3a-4b)
# at about a quarter of its widths for 8-32 pixel images (its stages run at 28x28-7x7
# after a stem that divides 224 by 8; here the stem keeps the size).
INCEPTION_MINI_STAGES = (
    (("inception3a", 16, 16, 24, 4, 8, 8), ("inception3b", 24, 24, 32, 8, 16, 16)),
    (("inception4a", 32, 24, 48, 8, 16, 16),),
    (("inception4b", 40, 32, 56, 12, 24, 24),),
)


def inception_mini(in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
                   seed: int | None = None) -> Graph:
    """Small GoogLeNet: inception blocks (1x1, 1x1-3x3, 1x1-5x5, pool-1x1 branches).

    Layout (a ``Graph``): stem conv 3x3 32 - BN - ReLU (- max pool 2 when ``input_size
    >= STEM_POOL_MIN_SIZE``, 16), then the stages of ``INCEPTION_MINI_STAGES``: inception
    3a, 3b (56, 88 channels) - max pool 2 (``pool3``) - inception 4a (112) - max pool 2
    (``pool4``) - inception 4b (144), then AdaptiveAvgPool2d(1) - Flatten - Dropout 0.2 -
    Linear ``num_classes`` (``fc``). Each block's output has the sum of its branches'
    channels; global average pooling makes the head independent of ``input_size``
    (8x8 digits end at 2x2, 28x28 at 3x3).

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("inception_mini", in_channels, input_size, num_classes)
    x = inputs = Input((in_channels, input_size, input_size), name="image")
    x = _conv_bn_relu_node(x, in_channels, 32, 3, "stem")
    if input_size >= STEM_POOL_MIN_SIZE:
        x = MaxPool2d(2)(x, name="stem.pool")
    channels = 32
    for index, stage in enumerate(INCEPTION_MINI_STAGES):
        if index > 0:
            x = MaxPool2d(2)(x, name=f"pool{index + 2}")
        for name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj in stage:
            x = _inception_block(x, channels, name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5,
                                 pool_proj)
            channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
    x = AdaptiveAvgPool2d(1)(x, name="avgpool")
    x = Flatten()(x, name="flatten")                               # (N, channels)
    x = Dropout(0.2, rng=seed)(x, name="dropout")
    x = Linear(channels, num_classes)(x, name="fc")
    return _seeded(Graph(inputs, x), seed)


def _bn_relu_conv_node(x: SymbolicTensor, in_channels: int, out_channels: int,
                       kernel_size: int, name: str, suffix: str = "") -> SymbolicTensor:
    """DenseNet's pre-activation unit: ``name``.norm - ``name``.relu - ``name``.conv (each
    name followed by ``suffix``), a bias-free "same"-size convolution."""
    x = BatchNorm2d(in_channels)(x, name=f"{name}.norm{suffix}")
    x = ReLU()(x, name=f"{name}.relu{suffix}")
    return Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                  bias=False)(x, name=f"{name}.conv{suffix}")


def _dense_block(x: SymbolicTensor, in_channels: int, layers: int, growth: int,
                 name: str) -> tuple[SymbolicTensor, int]:
    """DenseNet-BC's dense block (Huang et al., 2017): layer ``i`` reads the
    concatenation of the block's input and every earlier layer's ``growth`` new maps,
    and makes ``growth`` more with BN - ReLU - conv 1x1 (``4 * growth``, the bottleneck)
    - BN - ReLU - conv 3x3 (``growth``). Returns the concatenation of all of them,
    (N, in_channels + layers * growth, H, W), and that channel count. Every map is read
    by each later layer's concatenation: backward sums as many gradients into it.
    """
    features = [x]
    for i in range(1, layers + 1):
        layer = f"{name}.denselayer{i}"
        y = features[0] if i == 1 else Concat(1)(features, name=f"{layer}.cat")
        y = _bn_relu_conv_node(y, in_channels + (i - 1) * growth, 4 * growth, 1, layer, "1")
        y = _bn_relu_conv_node(y, 4 * growth, growth, 3, layer, "2")
        features.append(y)
    return Concat(1)(features, name=f"{name}.cat"), in_channels + layers * growth


# densenet_mini: layers per dense block, new maps per layer (k), and the transitions'
# compression (DenseNet-BC's 0.5; the stem makes 2k maps, as DenseNet-BC on CIFAR).
DENSENET_MINI_BLOCKS, DENSENET_MINI_GROWTH, DENSENET_MINI_COMPRESSION = (4, 4, 4), 12, 0.5


def densenet_mini(in_channels: int = 3, input_size: int = 32, num_classes: int = 10,
                  seed: int | None = None) -> Graph:
    """Small DenseNet-BC: dense blocks whose layers concatenate onto every earlier map.

    Layout (a ``Graph``): conv 3x3 24 (``conv0``; then max pool 2, ``pool0``, when
    ``input_size >= STEM_POOL_MIN_SIZE``, 16), then three dense blocks of 4 layers
    (growth 12: BN - ReLU - conv 1x1 48 - BN - ReLU - conv 3x3 12, each reading the
    concatenation of all earlier maps of its block), with a transition between two
    (BN - ReLU - conv 1x1 halving the channels - AvgPool2d(2)): 24 -> 72 -> 36 -> 84
    -> 42 -> 90 channels; then BN - ReLU (``norm5``, ``relu5``) - AdaptiveAvgPool2d(1)
    - Flatten - Linear ``num_classes`` (``classifier``). Global average pooling makes the
    head independent of ``input_size``.

    Shape: (N, in_channels, input_size, input_size) -> (N, num_classes).
    """
    _check_args("densenet_mini", in_channels, input_size, num_classes)
    growth = DENSENET_MINI_GROWTH
    x = inputs = Input((in_channels, input_size, input_size), name="image")
    channels = 2 * growth
    x = Conv2d(in_channels, channels, 3, padding=1, bias=False)(x, name="conv0")
    if input_size >= STEM_POOL_MIN_SIZE:
        x = MaxPool2d(2)(x, name="pool0")
    for index, layers in enumerate(DENSENET_MINI_BLOCKS, start=1):
        x, channels = _dense_block(x, channels, layers, growth, f"denseblock{index}")
        if index < len(DENSENET_MINI_BLOCKS):
            name, out_channels = f"transition{index}", int(channels * DENSENET_MINI_COMPRESSION)
            x = _bn_relu_conv_node(x, channels, out_channels, 1, name)
            x = AvgPool2d(2)(x, name=f"{name}.pool")
            channels = out_channels
    x = BatchNorm2d(channels)(x, name="norm5")
    x = ReLU()(x, name="relu5")
    x = AdaptiveAvgPool2d(1)(x, name="avgpool")
    x = Flatten()(x, name="flatten")                               # (N, channels)
    x = Linear(channels, num_classes)(x, name="classifier")
    return _seeded(Graph(inputs, x), seed)


MODELS: dict[str, Callable[..., Layer]] = {
    "lenet5": lenet5,
    "cifar_cnn": cifar_cnn,
    "resnet_mini": resnet_mini,
    "mobilenet_v2_mini": mobilenet_v2_mini,
    "inception_mini": inception_mini,
    "densenet_mini": densenet_mini,
}


def describe_models() -> list[tuple[str, str]]:
    """(name, one-line description) of each model in ``MODELS``: its docstring's first line."""
    return [(name, _first_line(builder.__doc__)) for name, builder in MODELS.items()]


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
