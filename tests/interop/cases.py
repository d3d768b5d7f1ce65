"""What the interop tests convert: a grid of single layers with their options, and whole
models (hand-built ones plus every model of ``chainrule.models.MODELS``).

Each case is ``(id, build, sample_shape)``: ``build()`` returns a fresh float32 chainrule
layer with seeded weights, ``sample_shape`` is one input's shape without the batch axis.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import chainrule as cr

from ..helpers import FLOAT32_UNIT_ROUNDOFF

Case = tuple[str, Callable[[], cr.Layer], tuple[int, ...]]
IMAGE = (4, 8, 8)

LAYER_CASES: list[Case] = [
    ("conv", lambda: cr.Conv2d(4, 5, 3, rng=0), IMAGE),
    ("conv_stride2_pad1", lambda: cr.Conv2d(4, 6, 3, stride=2, padding=1, rng=1), IMAGE),
    ("conv_same_even_dilated", lambda: cr.Conv2d(4, 3, 4, padding="same", dilation=(1, 2), rng=2),
     IMAGE),  # "same" with an even kernel: pads (1, 2) on H, (3, 3) on W
    ("conv_valid_rect", lambda: cr.Conv2d(4, 2, (2, 3), stride=(1, 2), padding="valid", rng=3),
     IMAGE),
    ("conv_groups_nobias", lambda: cr.Conv2d(4, 6, 3, padding=(1, 2), groups=2, bias=False, rng=4),
     IMAGE),
    ("conv_depthwise", lambda: cr.Conv2d(4, 8, 3, groups=4, rng=5), IMAGE),
    ("maxpool", lambda: cr.MaxPool2d(2), IMAGE),
    ("maxpool_overlap_pad", lambda: cr.MaxPool2d(3, stride=2, padding=1), IMAGE),
    ("maxpool_dilated", lambda: cr.MaxPool2d((3, 2), stride=1, padding=1, dilation=2), IMAGE),
    ("avgpool", lambda: cr.AvgPool2d(2), IMAGE),
    ("avgpool_pad_count", lambda: cr.AvgPool2d(3, stride=2, padding=1), IMAGE),
    ("avgpool_pad_nocount", lambda: cr.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
     IMAGE),
    ("avgpool_rect", lambda: cr.AvgPool2d((2, 3), stride=(1, 2)), IMAGE),
    ("adaptive_global", lambda: cr.AdaptiveAvgPool2d(1), IMAGE),
    ("adaptive_divides", lambda: cr.AdaptiveAvgPool2d((2, 4)), IMAGE),
    ("adaptive_uneven", lambda: cr.AdaptiveAvgPool2d((3, 5)), IMAGE),
    ("linear", lambda: cr.Linear(12, 5, rng=6), (12,)),
    ("linear_nobias", lambda: cr.Linear(12, 5, bias=False, rng=7), (12,)),
    ("linear_3d_input", lambda: cr.Linear(12, 5, rng=8), (3, 12)),
    ("flatten", lambda: cr.Flatten(), IMAGE),
    ("flatten_tail", lambda: cr.Flatten(2, 3), IMAGE),
    ("flatten_middle", lambda: cr.Flatten(1, 2), IMAGE),
    ("relu", lambda: cr.ReLU(), IMAGE),
    ("leaky_relu", lambda: cr.LeakyReLU(0.2), IMAGE),
    ("sigmoid", lambda: cr.Sigmoid(), IMAGE),
    ("tanh", lambda: cr.Tanh(), IMAGE),
    ("dropout", lambda: cr.Dropout(0.3, rng=9), IMAGE),
    ("batchnorm2d", lambda: cr.BatchNorm2d(4), IMAGE),
    ("batchnorm2d_eps_cumulative", lambda: cr.BatchNorm2d(4, eps=1e-3, momentum=None), IMAGE),
    ("batchnorm2d_no_affine", lambda: cr.BatchNorm2d(4, affine=False), IMAGE),
    ("batchnorm2d_batch_stats", lambda: cr.BatchNorm2d(4, track_running_stats=False), IMAGE),
    ("batchnorm1d_features", lambda: cr.BatchNorm1d(6), (6,)),
    ("batchnorm1d_sequence", lambda: cr.BatchNorm1d(3, momentum=0.5), (3, 7)),
    # new layer families: one section each
    # -- convolution
    # -- pooling
    # -- normalization
    # -- activations
    # -- resampling
    # -- padding and shape
    ("residual_identity", lambda: cr.Residual(cr.Sequential(cr.Conv2d(4, 4, 3, padding=1, rng=10),
                                                            cr.Tanh())), IMAGE),
    ("residual_projection", lambda: cr.Residual(
        cr.Sequential(cr.Conv2d(4, 6, 3, stride=2, padding=1, rng=11), cr.BatchNorm2d(6)),
        cr.Conv2d(4, 6, 1, stride=2, rng=12)), IMAGE),
]


def _small_cnn() -> cr.Layer:
    return cr.Sequential(
        cr.Conv2d(3, 6, 3, padding=1, rng=0), cr.BatchNorm2d(6), cr.LeakyReLU(0.1),
        cr.MaxPool2d(2), cr.Conv2d(6, 8, 3, rng=1), cr.Sigmoid(), cr.AvgPool2d(2, padding=1),
        cr.Sequential(cr.Flatten(), cr.Dropout(0.2, rng=2)),
        cr.Linear(8 * 4 * 4, 16, rng=3), cr.BatchNorm1d(16), cr.Tanh(), cr.Linear(16, 4, rng=4))


def _small_resnet() -> cr.Layer:
    block = cr.Sequential(cr.Conv2d(3, 8, 3, stride=2, padding=1, bias=False, rng=5),
                          cr.BatchNorm2d(8), cr.ReLU(), cr.Conv2d(8, 8, 3, padding="same", rng=6))
    return cr.Sequential(cr.Residual(block, cr.Conv2d(3, 8, 1, stride=2, rng=7)), cr.ReLU(),
                         cr.Residual(cr.Sequential(cr.Conv2d(8, 8, 3, padding=1, rng=8))),
                         cr.AdaptiveAvgPool2d(3), cr.Flatten(), cr.Linear(72, 5, rng=9))


MODEL_CASES: list[Case] = [
    ("small_cnn", _small_cnn, (3, 16, 16)),
    ("small_resnet", _small_resnet, (3, 12, 12)),
]

try:
    from chainrule.models import MODELS
except ImportError:  # the model zoo is optional here: hand-built models still run
    MODELS = {}
for _name, _builder in MODELS.items():
    MODEL_CASES.append((f"zoo_{_name}", lambda b=_builder: b(in_channels=3, input_size=16,
                                                            num_classes=7, seed=0), (3, 16, 16)))

ALL_CASES = LAYER_CASES + MODEL_CASES

# Cases that ONNX has no exact operator for: case id -> a regular expression that the
# UnsupportedModuleError of export_onnx must match (it names the layer). The ONNX tests
# check that error for these instead of running them.
NO_ONNX_EXPORT: dict[str, str] = {
}


def warm_up(model: cr.Layer, sample_shape: tuple[int, ...], seed: int = 0) -> cr.Layer:
    """One SGD step in training mode on shifted, scaled data, then eval mode: BatchNorm
    ends with running statistics and affine parameters far from their 0/1 start, so a
    converter that dropped or mixed them up would show."""
    rng = np.random.default_rng(seed)
    model.train()
    x = (3.0 * rng.standard_normal((6, *sample_shape)) + 1.0).astype(np.float32)
    y = model.forward(x)
    model.backward(rng.standard_normal(y.shape).astype(np.float32))
    if model.parameters():
        cr.optim.SGD(model.parameters(), lr=0.1).step()
    return model.eval()


def inputs(sample_shape: tuple[int, ...], batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *sample_shape)).astype(np.float32)


def float32_output_tolerance(model: cr.Layer, x: np.ndarray, factor: float = 16.0) -> float:
    """The relative error of a float32 model's output that rounding explains:
    ``factor * u * sum over leaf layers of sqrt(elements of the leaf's input)``.

    No sum inside a layer adds more terms than its input has elements (a convolution
    C_in*kh*kw, BatchNorm N*H*W, Linear in_features), and rounding errors grow like the
    square root of the number of terms (see ``tests.helpers.float32_tolerance``); the
    errors of chained layers add. Measured on a copy of ``model`` (BatchNorm's running
    statistics of ``model`` stay as they are)."""
    probe = model.copy()
    sizes: list[int] = []
    leaves = [m for m in probe.modules() if not m._children]
    for leaf in leaves:
        def recorded(a, forward=leaf.forward):
            sizes.append(np.asarray(a).size)
            return forward(a)
        object.__setattr__(leaf, "forward", recorded)
    probe.forward(x)
    return factor * FLOAT32_UNIT_ROUNDOFF * float(np.sum(np.sqrt(sizes)))
