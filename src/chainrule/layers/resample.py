"""Resampling layers: Upsample (and torch's UpsamplingNearest2d, UpsamplingBilinear2d),
PixelShuffle, PixelUnshuffle, ChannelShuffle.

Upsample resizes the spatial axes by nearest-neighbour or (bi)linear interpolation, one
axis at a time (``functional.resample``): ``y = A_h @ x @ A_w.T`` with sparse
interpolation matrices, and ``dL/dx = A_h.T @ dL/dy @ A_w``. The shuffles only move
values: each is a reshape, a transpose and a reshape, and its backward applies the
inverse permutation to the gradient.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import numpy as np

from ..functional import resample as R
from ._args import positive_int
from ._movement import MovementLayer
from .base import Layer

# mode -> the input ndims it accepts and how they read
_MODES: dict[str, tuple[tuple[int, ...], str]] = {
    "nearest": ((3, 4), "(N, C, L) or (N, C, H, W)"),
    "nearest-exact": ((3, 4), "(N, C, L) or (N, C, H, W)"),
    "linear": ((3,), "(N, C, L)"),
    "bilinear": ((4,), "(N, C, H, W)"),
}
_LINEAR_MODES = ("linear", "bilinear")
# torch's 2-D nearest forward switches index computations on the output size (see
# functional.resample): its "indexed" kernel up to this many output rows + columns.
_SMALL_OUTPUT = 128


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _size_arg(size: Any, layer: str) -> int | tuple[int, ...]:
    """An int or a tuple/list of one or two ints, each >= 1 (tuple kept as a tuple)."""
    if _is_int(size):
        values: tuple[int, ...] = (int(size),)
        out: int | tuple[int, ...] = int(size)
    elif isinstance(size, (tuple, list)) and 1 <= len(size) <= 2 and all(map(_is_int, size)):
        values = tuple(int(v) for v in size)
        out = values
    else:
        raise TypeError(f"{layer}: size must be an int or a tuple of one or two ints, got {size!r}")
    if min(values) < 1:
        raise ValueError(f"{layer}: size must be >= 1, got {size!r}")
    return out


def _scale_arg(scale_factor: Any, layer: str) -> float | tuple[float, ...]:
    """A positive finite number or a tuple/list of one or two, stored as floats (torch)."""
    if _is_real(scale_factor):
        values: tuple[float, ...] = (float(scale_factor),)
        out: float | tuple[float, ...] = float(scale_factor)
    elif (isinstance(scale_factor, (tuple, list)) and 1 <= len(scale_factor) <= 2
          and all(map(_is_real, scale_factor))):
        values = tuple(float(v) for v in scale_factor)
        out = values
    else:
        raise TypeError(f"{layer}: scale_factor must be a number or a tuple of one or two numbers, "
                        f"got {scale_factor!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{layer}: scale_factor must be positive and finite, got {scale_factor!r}")
    return out


def _flag_arg(value: Any, name: str, layer: str) -> bool | None:
    if value is not None and not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{layer}: {name} must be True, False or None, got {value!r}")
    return None if value is None else bool(value)


@functools.lru_cache(maxsize=64)
def _axis_plans(mode: str, align_corners: bool, spatial: tuple[int, ...], out: tuple[int, ...],
                coord_scales: tuple[float | None, ...], dtype: np.dtype) -> tuple[R.AxisPlan, ...]:
    """The plan of each spatial axis, built once per input size and options: a training
    loop resizes the same size at every step. The plans are shared by every Upsample
    that asks for them, so their arrays are made read-only."""
    if mode in _LINEAR_MODES:
        plans = [R.linear_plan(n, o, f, align_corners, dtype)
                 for n, o, f in zip(spatial, out, coord_scales)]
    else:
        # torch's 2-D forward computes nearest indices its own way for small outputs (and
        # for a 1x1 input of more than 3 channels, where every index is 0 anyway).
        kernel = "indexed" if len(out) == 2 and sum(out) <= _SMALL_OUTPUT else "generic"
        plan = R.nearest_plan if mode == "nearest" else R.nearest_exact_plan
        plans = [plan(n, o, f, dtype, kernel) for n, o, f in zip(spatial, out, coord_scales)]
    for axis_plan in plans:
        for array in (axis_plan.index0, axis_plan.index1, axis_plan.weight0, axis_plan.weight1):
            if array is not None:
                array.flags.writeable = False
    return tuple(plans)


class Upsample(Layer):
    """Resize the spatial axes by nearest-neighbour or linear interpolation, as
    ``torch.nn.Upsample`` (``torch.nn.functional.interpolate``) on the CPU.

    Args:
        size: the output length L_out (an int, or one int per spatial axis).
        scale_factor: or a multiplier (a number, or one per spatial axis); exactly one of
            ``size`` and ``scale_factor`` is given. ``L_out = floor(L * scale_factor)``.
        mode: "nearest" (OpenCV's nearest: ``src = floor(i * L / L_out)``),
            "nearest-exact" (the nearest pixel centre: ``floor((i + 0.5) * L / L_out)``),
            "linear" (3-D input) or "bilinear" (4-D input). torch's "bicubic",
            "trilinear" and "area" are not offered.
        align_corners: linear modes only (None means False). False: pixel centres line
            up, ``src = (i + 0.5) * L / L_out - 0.5``, clamped to 0 below; True: corner
            centres line up, ``src = i * (L - 1) / (L_out - 1)`` (0 when L_out == 1).
        recompute_scale_factor: with a ``scale_factor``, None/False uses ``1 /
            scale_factor`` as the step between source coordinates (torch's default);
            True uses ``L / L_out`` from the rounded output size, as with ``size``.

    Shape:
        (N, C, L) -> (N, C, L_out) for "nearest", "nearest-exact" and "linear"; (N, C, H, W) ->
        (N, C, H_out, W_out) for "nearest", "nearest-exact", "bilinear".

    Linear interpolation reads the two inputs around ``src``: ``i0 = min(floor(src),
    L - 1)``, ``i1 = min(i0 + 1, L - 1)``, weights ``w1 = src - i0`` and ``1 - w1``; the
    2-D modes interpolate rows, then columns. All of it follows torch's arithmetic (float32
    for a float32 input), so indices and weights are torch's own; for 4-D nearest modes
    that includes torch's choice between its two index kernels by output size (see
    ``functional.resample``).

    Backward:
        Each output's gradient goes back to the input pixels it read, with the same weights:
        ``dL/dx = A_h.T @ dL/dy @ A_w``. (torch's own nearest backward always uses its float32
        index kernel, so where its forward used the other one, torch's gradient is not the
        derivative of its forward; this one is.)
    """

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(mode, str) or mode not in _MODES:
            raise ValueError(f"{name}: mode must be one of {', '.join(map(repr, _MODES))}, got "
                             f"{mode!r}" + (" (torch's bicubic, trilinear and area are not offered)"
                                            if mode in ("bicubic", "trilinear", "area") else ""))
        if (size is None) == (scale_factor is None):
            raise ValueError(f"{name}: give exactly one of size and scale_factor, got "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        self.size = None if size is None else _size_arg(size, name)
        self.scale_factor = None if scale_factor is None else _scale_arg(scale_factor, name)
        self.mode = mode
        self.align_corners = _flag_arg(align_corners, "align_corners", name)
        self.recompute_scale_factor = _flag_arg(recompute_scale_factor, "recompute_scale_factor",
                                                name)
        if self.align_corners is not None and mode not in _LINEAR_MODES:
            raise ValueError(f"{name}: align_corners can only be set with the linear modes "
                             f"(linear, bilinear), got align_corners={align_corners!r} with "
                             f"mode={mode!r}")
        if self.recompute_scale_factor and size is not None:
            raise ValueError(f"{name}: recompute_scale_factor=True is meaningful only with a "
                             f"scale_factor, got size={size!r}")

    def extra_repr(self) -> str:
        text = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        text += f", mode={self.mode!r}"
        if self.align_corners is not None:
            text += f", align_corners={self.align_corners}"
        if self.recompute_scale_factor is not None:
            text += f", recompute_scale_factor={self.recompute_scale_factor}"
        return text

    # ---------------------------------------------------------------- plans
    def _per_axis(self, value: Any, axes: int, what: str, shape: tuple) -> tuple:
        if not isinstance(value, tuple):
            return (value,) * axes
        if len(value) != axes:
            raise ValueError(f"{self!r}: {what} has {len(value)} entries but the input of shape "
                             f"{shape} has {axes} spatial axes")
        return value

    def plans(self, shape: tuple[int, ...], dtype: Any) -> list[R.AxisPlan]:
        """The interpolation of each spatial axis for an input of ``shape`` (checked)."""
        ndims, layout = _MODES[self.mode]
        if len(shape) not in ndims:
            raise ValueError(f"{self!r}: expected input of shape {layout} "
                             f"({' or '.join(f'{n}-D' for n in ndims)}), got shape {shape}")
        spatial = shape[2:]
        if min(shape[1:]) < 1:
            raise ValueError(f"{self!r}: expected non-empty channel and spatial axes, got shape "
                             f"{shape}")
        axes = len(spatial)
        sizes = self._per_axis(self.size, axes, "size", shape)
        scales = self._per_axis(self.scale_factor, axes, "scale_factor", shape)
        out = [R.output_length(n, s, f) for n, s, f in zip(spatial, sizes, scales)]
        if min(out) < 1:
            raise ValueError(f"{self!r}: the output of shape {(*shape[:2], *out)} would be empty "
                             f"for input of shape {shape}")
        # The scale factor sets the coordinates unless the rounded output size does.
        coord_scales = scales if not self.recompute_scale_factor else (None,) * axes
        return list(_axis_plans(self.mode, bool(self.align_corners), tuple(spatial), tuple(out),
                                tuple(coord_scales), np.dtype(dtype)))

    # ---------------------------------------------------------------- forward / backward
    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._cast_input(x)
        plans = self.plans(x.shape, x.dtype)
        out = x
        for axis, plan in enumerate(plans, start=2):
            out = R.resample_axis(out, plan, axis)                # one spatial axis resized
        if self.keeps_cache:
            self._cache = (plans, out.shape, out.dtype)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        plans, out_shape, dtype = self._take_cache()
        grad = self._check_grad(grad, out_shape, dtype)
        for axis in reversed(range(len(plans))):
            grad = R.resample_axis_backward(grad, plans[axis], axis + 2)   # A.T on that axis
        return grad


class UpsamplingNearest2d(Upsample):
    """``Upsample(size, scale_factor, mode="nearest")`` under torch's older name.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out) (and (N, C, L) -> (N, C, L_out), as torch).

    Backward:
        Each output's gradient is added onto the pixel it copied.
    """

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample(size, scale_factor, mode="bilinear", align_corners=True)`` under torch's
    older name.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out).

    Backward:
        ``dL/dx = A_h.T @ dL/dy @ A_w`` with the interpolation matrices ``A_h``
        (H_out, H) and ``A_w`` (W_out, W) of the forward pass (see ``Upsample``).
    """

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)

    def extra_repr(self) -> str:   # align_corners=True goes without saying, as in torch
        return super().extra_repr().replace(", align_corners=True", "")


class PixelShuffle(MovementLayer):
    """Move blocks of ``r*r`` channels into ``r x r`` spatial blocks (sub-pixel
    convolution's upsampling), as ``torch.nn.PixelShuffle``.

    ``y[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w]``.

    Shape:
        (N, C*r^2, H, W) -> (N, C, H*r, W*r), or unbatched (C*r^2, H, W) -> (C, H*r, W*r).

    Backward:
        The inverse rearrangement (PixelUnshuffle) of the gradient.
    """

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = positive_int(upscale_factor, "upscale_factor",
                                           f"PixelShuffle(upscale_factor={upscale_factor!r})")

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        self._check_ndim(x, (3, 4), "(N, C*r^2, H, W) or (C*r^2, H, W)")
        r = self.upscale_factor
        if x.shape[-3] % (r * r):
            raise ValueError(f"{self!r}: expected input of shape (N, C*{r * r}, H, W) or "
                             f"(C*{r * r}, H, W), a channel count divisible by {r * r}, got "
                             f"shape {x.shape}")
        return R.pixel_shuffle(x, r)

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return R.pixel_unshuffle(grad, self.upscale_factor)


class PixelUnshuffle(MovementLayer):
    """Move each ``r x r`` spatial block into ``r*r`` channels: the inverse of
    PixelShuffle, as ``torch.nn.PixelUnshuffle``.

    ``y[n, c*r*r + i*r + j, h, w] = x[n, c, h*r + i, w*r + j]``.

    Shape:
        (N, C, H*r, W*r) -> (N, C*r^2, H, W), or unbatched (C, H*r, W*r) -> (C*r^2, H, W).

    Backward:
        The inverse rearrangement (PixelShuffle) of the gradient.
    """

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        name = f"PixelUnshuffle(downscale_factor={downscale_factor!r})"
        self.downscale_factor = positive_int(downscale_factor, "downscale_factor", name)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        self._check_ndim(x, (3, 4), "(N, C, H*r, W*r) or (C, H*r, W*r)")
        r = self.downscale_factor
        if x.shape[-2] % r or x.shape[-1] % r:
            raise ValueError(f"{self!r}: expected input of shape (N, C, H*{r}, W*{r}) or "
                             f"(C, H*{r}, W*{r}), height and width divisible by {r}, got shape "
                             f"{x.shape}")
        return R.pixel_unshuffle(x, r)

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return R.pixel_shuffle(grad, self.downscale_factor)


class ChannelShuffle(MovementLayer):
    """Interleave the channels of ``groups`` groups (ShuffleNet), as
    ``torch.nn.ChannelShuffle``: reshape the channels to (groups, C/groups), transpose,
    flatten; channel ``k*(C/groups) + j`` moves to ``j*groups + k``.

    Shape:
        (N, C, *) -> (N, C, *), with C divisible by ``groups`` and at least one axis after the
        channels ((N, C, L), (N, C, H, W), ...; axis 1 is always the channels).

    Backward:
        The inverse permutation, a channel shuffle with C/groups groups.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = positive_int(groups, "groups", f"ChannelShuffle(groups={groups!r})")

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def _move(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 3:
            raise ValueError(f"{self!r}: expected input of shape (N, C, *) with at least 3 axes, "
                             f"got shape {x.shape}")
        if x.shape[1] % self.groups:
            raise ValueError(f"{self!r}: expected input of shape (N, C, *) with C divisible by "
                             f"{self.groups}, got shape {x.shape}")
        return R.channel_shuffle(x, self.groups)

    def _move_back(self, grad: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        return R.channel_shuffle(grad, x_shape[1] // self.groups)
