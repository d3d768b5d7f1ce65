"""What the interop tests convert: a grid of single layers with their options, and whole
models (hand-built ones plus every model of ``chainrule.models.MODELS``).

Each case is ``(id, build, sample_shape)``: ``build()`` returns a fresh float32 chainrule
layer with seeded weights, ``sample_shape`` is one input's shape without the batch axis.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import chainrule as cr
from chainrule.inspect._hooks import install, leaf_layers

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
    ("syncbatchnorm", lambda: cr.SyncBatchNorm(4), IMAGE),
    # new layer families: one section each
    # -- convolution
    ("conv1d", lambda: cr.Conv1d(4, 5, 3, rng=20), (4, 12)),
    ("conv1d_stride2_pad1_dilated", lambda: cr.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2,
                                                      rng=21), (4, 12)),
    ("conv1d_same_even_groups_nobias", lambda: cr.Conv1d(4, 6, 4, padding="same", groups=2,
                                                         bias=False, rng=22), (4, 11)),
    ("conv1d_valid_depthwise", lambda: cr.Conv1d(4, 8, 3, padding="valid", groups=4, rng=23),
     (4, 12)),
    ("conv_transpose", lambda: cr.ConvTranspose2d(4, 5, 3, rng=24), IMAGE),
    ("conv_transpose_stride2_pad1_outpad1",
     lambda: cr.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, rng=25), IMAGE),
    ("conv_transpose_stride3_outpad2_groups_nobias",
     lambda: cr.ConvTranspose2d(4, 6, (3, 2), stride=3, padding=(2, 1), output_padding=2,
                                groups=2, bias=False, rng=26), IMAGE),
    # output_padding >= stride (allowed below the dilation): end pads and a Pad in ONNX
    ("conv_transpose_dilated_outpad_past_stride",
     lambda: cr.ConvTranspose2d(4, 3, 3, stride=(1, 2), padding=(0, 2), output_padding=(1, 2),
                                dilation=(2, 3), rng=27), IMAGE),
    ("conv_transpose_depthwise", lambda: cr.ConvTranspose2d(4, 8, 2, stride=2, groups=4, rng=28),
     IMAGE),
    # -- pooling
    # ceil_mode: on 8x8 the last windows hang past the (padded) input
    ("maxpool_ceil", lambda: cr.MaxPool2d(3, stride=2, ceil_mode=True), IMAGE),
    ("maxpool_ceil_pad_dilated", lambda: cr.MaxPool2d(3, stride=2, padding=1, dilation=2,
                                                      ceil_mode=True), IMAGE),
    ("avgpool_ceil_pad_count", lambda: cr.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), IMAGE),
    ("avgpool_ceil_pad_nocount", lambda: cr.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                                      count_include_pad=False), IMAGE),
    ("avgpool_divisor", lambda: cr.AvgPool2d((2, 3), stride=2, padding=1, divisor_override=5),
     IMAGE),
    ("avgpool_divisor_ceil", lambda: cr.AvgPool2d(3, stride=2, ceil_mode=True, divisor_override=4),
     IMAGE),
    ("maxpool1d", lambda: cr.MaxPool1d(3, stride=2, padding=1), (4, 10)),
    ("maxpool1d_ceil_dilated", lambda: cr.MaxPool1d(3, stride=2, dilation=2, ceil_mode=True),
     (4, 10)),
    ("avgpool1d_ceil_count", lambda: cr.AvgPool1d(3, stride=2, padding=1, ceil_mode=True), (4, 10)),
    ("avgpool1d_ceil_nocount", lambda: cr.AvgPool1d(3, stride=2, padding=1, ceil_mode=True,
                                                    count_include_pad=False), (4, 10)),
    ("adaptive_max_global", lambda: cr.AdaptiveMaxPool2d(1), IMAGE),
    ("adaptive_max_divides", lambda: cr.AdaptiveMaxPool2d((2, 4)), IMAGE),
    ("adaptive_max_uneven", lambda: cr.AdaptiveMaxPool2d((3, 5)), IMAGE),
    ("adaptive_max_keep_rows", lambda: cr.AdaptiveMaxPool2d((None, 3)), IMAGE),
    ("adaptive_avg_keep_columns", lambda: cr.AdaptiveAvgPool2d((3, None)), IMAGE),
    # -- normalization
    ("groupnorm", lambda: cr.GroupNorm(2, 4), IMAGE),
    ("groupnorm_per_channel_plain", lambda: cr.GroupNorm(4, 4, eps=1e-3, affine=False), IMAGE),
    ("groupnorm_one_group_nobias", lambda: cr.GroupNorm(1, 4, bias=False), IMAGE),
    ("groupnorm_features", lambda: cr.GroupNorm(3, 6), (6,)),
    ("layernorm_last_axis", lambda: cr.LayerNorm(8), IMAGE),
    ("layernorm_whole_sample", lambda: cr.LayerNorm([4, 8, 8], eps=1e-3), IMAGE),
    ("layernorm_two_axes_nobias", lambda: cr.LayerNorm((8, 8), bias=False), IMAGE),
    ("layernorm_plain_tokens", lambda: cr.LayerNorm(12, elementwise_affine=False), (3, 12)),
    ("instancenorm", lambda: cr.InstanceNorm2d(4), IMAGE),
    ("instancenorm_affine", lambda: cr.InstanceNorm2d(4, eps=1e-3, affine=True), IMAGE),
    ("instancenorm_running_stats", lambda: cr.InstanceNorm2d(4, momentum=0.5,
                                                             track_running_stats=True), IMAGE),
    ("instancenorm_affine_running_stats", lambda: cr.InstanceNorm2d(
        4, affine=True, track_running_stats=True), IMAGE),
    ("lrn_odd", lambda: cr.LocalResponseNorm(3, alpha=0.5, beta=0.6, k=1.5), IMAGE),
    ("lrn_even", lambda: cr.LocalResponseNorm(2, alpha=0.8), IMAGE),
    ("lrn_sequence", lambda: cr.LocalResponseNorm(5, alpha=0.3, beta=1.2, k=2.0), (6, 7)),
    # -- activations
    ("relu6", lambda: cr.ReLU6(), IMAGE),
    ("hardtanh", lambda: cr.Hardtanh(), IMAGE),
    ("hardtanh_range", lambda: cr.Hardtanh(-2.0, 3.0), IMAGE),
    ("elu", lambda: cr.ELU(), IMAGE),
    ("elu_alpha", lambda: cr.ELU(alpha=0.5), IMAGE),
    ("selu", lambda: cr.SELU(), IMAGE),
    ("celu", lambda: cr.CELU(), IMAGE),
    ("celu_alpha", lambda: cr.CELU(alpha=2.0), IMAGE),
    ("gelu", lambda: cr.GELU(), IMAGE),
    ("gelu_tanh", lambda: cr.GELU(approximate="tanh"), IMAGE),
    ("silu", lambda: cr.SiLU(), IMAGE),
    ("mish", lambda: cr.Mish(), IMAGE),
    ("hardswish", lambda: cr.Hardswish(), IMAGE),
    ("hardsigmoid", lambda: cr.Hardsigmoid(), IMAGE),
    ("softplus", lambda: cr.Softplus(), IMAGE),
    ("softplus_beta_threshold", lambda: cr.Softplus(beta=2.0, threshold=5.0), IMAGE),
    ("prelu", lambda: cr.PReLU(), IMAGE),
    ("prelu_channels", lambda: cr.PReLU(4, init=0.1), IMAGE),
    ("prelu_features", lambda: cr.PReLU(6), (6,)),
    ("softmax_dim1", lambda: cr.Softmax(dim=1), IMAGE),
    ("softmax_last", lambda: cr.Softmax(dim=-1), (3, 7)),
    ("log_softmax_dim1", lambda: cr.LogSoftmax(dim=1), IMAGE),
    ("log_softmax_features", lambda: cr.LogSoftmax(dim=1), (10,)),
    ("identity", lambda: cr.Identity(), IMAGE),
    # -- resampling
    ("upsample_nearest_x2", lambda: cr.Upsample(scale_factor=2), IMAGE),
    ("upsample_nearest_size_rect", lambda: cr.Upsample(size=(5, 11)), IMAGE),
    ("upsample_nearest_scales_frac", lambda: cr.Upsample(scale_factor=(1.5, 0.75)), IMAGE),
    ("upsample_nearest_1d", lambda: cr.Upsample(scale_factor=2.5), (4, 6)),
    ("upsample_nearest_exact", lambda: cr.Upsample(scale_factor=1.5, mode="nearest-exact"), IMAGE),
    ("upsample_bilinear_x2", lambda: cr.Upsample(scale_factor=2, mode="bilinear"), IMAGE),
    ("upsample_bilinear_frac", lambda: cr.Upsample(scale_factor=1.7, mode="bilinear"), (4, 5, 7)),
    ("upsample_bilinear_align_rect", lambda: cr.Upsample(size=(5, 11), mode="bilinear",
                                                         align_corners=True), IMAGE),
    ("upsample_bilinear_down_recompute", lambda: cr.Upsample(
        scale_factor=0.6, mode="bilinear", recompute_scale_factor=True), IMAGE),
    ("upsample_bilinear_to_1x1", lambda: cr.Upsample(size=1, mode="bilinear"), IMAGE),
    ("upsample_linear_1d", lambda: cr.Upsample(size=9, mode="linear"), (4, 6)),
    ("upsample_linear_1d_align", lambda: cr.Upsample(scale_factor=0.5, mode="linear",
                                                     align_corners=True), (4, 7)),
    ("upsampling_nearest2d", lambda: cr.UpsamplingNearest2d(scale_factor=3), IMAGE),
    ("upsampling_bilinear2d", lambda: cr.UpsamplingBilinear2d(size=(6, 10)), IMAGE),
    ("pixel_shuffle", lambda: cr.PixelShuffle(2), (8, 3, 5)),
    ("pixel_shuffle_3", lambda: cr.PixelShuffle(3), (9, 2, 3)),
    ("pixel_unshuffle", lambda: cr.PixelUnshuffle(2), IMAGE),
    ("channel_shuffle", lambda: cr.ChannelShuffle(2), IMAGE),
    ("channel_shuffle_1d", lambda: cr.ChannelShuffle(3), (6, 5)),
    # -- padding and shape
    ("zeropad", lambda: cr.ZeroPad2d(2), IMAGE),
    ("zeropad_asym_crop", lambda: cr.ZeroPad2d((1, -2, 0, 3)), IMAGE),
    ("constpad", lambda: cr.ConstantPad2d((2, 0, 1, 3), 1.5), IMAGE),
    ("constpad_crop", lambda: cr.ConstantPad2d((-1, -2, 2, -3), -0.5), IMAGE),
    ("reflectpad", lambda: cr.ReflectionPad2d(3), IMAGE),
    ("reflectpad_size_minus_1", lambda: cr.ReflectionPad2d((7, 0, 2, 7)), IMAGE),
    ("reflectpad_crop", lambda: cr.ReflectionPad2d((-3, 2, 1, -4)), IMAGE),
    ("reflectpad_unbatched", lambda: cr.ReflectionPad2d((1, 2, 3, 0)), (8, 8)),
    ("replpad", lambda: cr.ReplicationPad2d((1, 3, 0, 2)), IMAGE),
    ("replpad_crop_into_border", lambda: cr.ReplicationPad2d((9, -10, -2, 1)), IMAGE),
    ("unflatten", lambda: cr.Unflatten(1, (2, 2)), IMAGE),
    ("unflatten_inferred_last_axis", lambda: cr.Unflatten(-1, (2, -1)), IMAGE),
    ("unflatten_features", lambda: cr.Unflatten(1, (4, 3)), (12,)),
    ("flatten_unflatten", lambda: cr.Sequential(cr.Flatten(), cr.Unflatten(1, (4, 8, 8))), IMAGE),
    ("dropout2d", lambda: cr.Dropout2d(0.3, rng=13), IMAGE),
    ("dropout2d_inplace", lambda: cr.Dropout2d(0.6, inplace=True, rng=14), IMAGE),
    # -- merge and shape (the multi-input and multi-output layers get graph cases)
    ("reshape", lambda: cr.Reshape((8, 32)), IMAGE),
    ("reshape_inferred", lambda: cr.Reshape([2, -1, 4]), IMAGE),
    ("reshape_features", lambda: cr.Reshape((3, 2, 2)), (12,)),
    ("permute_nhwc", lambda: cr.Permute((0, 2, 3, 1)), IMAGE),
    ("permute_negative_dims", lambda: cr.Permute((0, -1, 1)), (3, 7)),
    ("mean_spatial", lambda: cr.Mean((2, 3)), IMAGE),
    ("mean_keepdim_negative", lambda: cr.Mean(-1, keepdim=True), IMAGE),
    ("mean_channels", lambda: cr.Mean(1), IMAGE),
    # a constant operand (from_onnx's Add/Sub/Mul/Div with a constant)
    ("constant_mul_per_channel", lambda: _constant("mul", (4, 1, 1), seed=13), IMAGE),
    ("constant_rsub_map", lambda: _constant("rsub", (8, 8), seed=14), IMAGE),
    ("residual_identity", lambda: cr.Residual(cr.Sequential(cr.Conv2d(4, 4, 3, padding=1, rng=10),
                                                            cr.Tanh())), IMAGE),
    ("residual_projection", lambda: cr.Residual(
        cr.Sequential(cr.Conv2d(4, 6, 3, stride=2, padding=1, rng=11), cr.BatchNorm2d(6)),
        cr.Conv2d(4, 6, 1, stride=2, rng=12)), IMAGE),
]


def _constant(op: str, shape: tuple[int, ...], seed: int) -> cr.Layer:
    layer = cr.ConstantArithmetic(op, shape)
    layer.value[...] = np.random.default_rng(seed).standard_normal(shape)
    return layer


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


def _graph_add_multiply_concat() -> cr.Layer:
    """Two branches added, gated (squeeze-excitation's broadcast product) and joined."""
    x = cr.Input(IMAGE)
    a = cr.Conv2d(4, 6, 3, padding=1, rng=15)(x, name="a")
    b = cr.Tanh()(cr.Conv2d(4, 6, 1, rng=16)(x, name="b"))
    gate = cr.Sigmoid()(cr.AdaptiveAvgPool2d(1)(b))                   # (N, 6, 1, 1)
    added = cr.Add()([a, b, a])                                       # a read twice
    return cr.Graph(x, cr.Concat(1)([added, cr.Multiply()([a, gate])], name="cat"))


def _graph_split_chunk() -> cr.Layer:
    """A tensor cut by Split and Chunk, some pieces used twice, one not at all."""
    x = cr.Input(IMAGE)
    y = cr.Conv2d(4, 8, 3, padding=1, rng=17)(x, name="conv")
    p, q, r = cr.Split([2, 4, 2])(y, name="split")
    q1, q2 = cr.Chunk(2)(q, name="chunk")
    _unused, w = cr.Chunk(2, dim=3)(r)                                # halves of the width
    w = cr.Upsample(size=(8, 8))(w)
    return cr.Graph(x, cr.Concat(1)([q2, p, cr.Multiply()([q1, p]), w, q2]))


MODEL_CASES: list[Case] = [
    ("small_cnn", _small_cnn, (3, 16, 16)),
    ("small_resnet", _small_resnet, (3, 12, 12)),
    # graphs: the merge and split layers, through to_torch (a torch.fx GraphModule),
    # from_torch and ONNX
    ("graph_add_multiply_concat", _graph_add_multiply_concat, IMAGE),
    ("graph_split_chunk", _graph_split_chunk, IMAGE),
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
    # -- resampling
    "upsample_nearest_exact": r"Upsample\(.*mode='nearest-exact'\) has no exact ONNX export",
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
    for _, leaf in leaf_layers(probe):
        install(leaf, "forward", lambda _leaf, a, _y: sizes.append(
            sum(np.asarray(v).size for v in a) if isinstance(a, (list, tuple))  # merge layers
            else np.asarray(a).size))
    probe.forward(x)
    return factor * FLOAT32_UNIT_ROUNDOFF * float(np.sum(np.sqrt(sizes)))
