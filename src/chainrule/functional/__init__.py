"""Stateless kernels: convolution (im2col/col2im, depthwise, transposed), pooling
windows, resampling (``functional.resample``) and erf/erfc (``functional.special``).
Layers call these."""

from . import _compiled as compiled
from ._parallel import empty_with_layout, outer_axis, parallel_slices, release_scratch
from .conv import conv2d_backward, conv2d_forward, conv2d_input_gradient
from . import winograd
from .winograd import winograd_backward, winograd_conv2d, winograd_forward
from .conv_transpose import (conv_transpose2d_backward, conv_transpose2d_forward,
                             conv_transpose_output_size)
from .im2col import col2im, conv_output_size, im2col, pad_channel_major, unpad_to_nchw
from .pooling import (adaptive_max_pool_backward, adaptive_max_pool_forward, adaptive_pool_matrix,
                      adaptive_windows, avg_pool_backward, avg_pool_forward, avg_pool_window_sizes,
                      max_pool_backward, max_pool_forward, pad_spatial, pool_output_size,
                      pool_overhang, window_counts)

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv2d_input_gradient",
    "winograd_forward", "winograd_backward", "winograd_conv2d",
    "conv_transpose2d_forward", "conv_transpose2d_backward", "conv_transpose_output_size",
    "im2col", "col2im", "conv_output_size", "pad_channel_major", "unpad_to_nchw",
    "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
    "pad_spatial", "window_counts", "adaptive_pool_matrix",
    "pool_output_size", "pool_overhang", "avg_pool_window_sizes",
    "adaptive_windows", "adaptive_max_pool_forward", "adaptive_max_pool_backward",
    "empty_with_layout", "outer_axis", "parallel_slices", "release_scratch",
]
