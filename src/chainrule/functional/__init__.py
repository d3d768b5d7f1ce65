"""Stateless kernels: im2col/col2im and pooling windows. Layers call these."""

from ._parallel import empty_with_layout, outer_axis, parallel_slices
from .conv import conv2d_backward, conv2d_forward
from .im2col import col2im, conv_output_size, im2col, pad_channel_major, unpad_to_nchw
from .pooling import (adaptive_pool_matrix, avg_pool_backward, avg_pool_forward,
                      max_pool_backward, max_pool_forward, pad_spatial, window_counts)

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "im2col", "col2im", "conv_output_size", "pad_channel_major", "unpad_to_nchw",
    "max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
    "pad_spatial", "window_counts", "adaptive_pool_matrix",
    "empty_with_layout", "outer_axis", "parallel_slices",
]
