"""Convolution arithmetic: output sizes and receptive fields.

O = (W − K + 2P)/S + 1 for input width W, kernel K, zero padding P and stride S (with dilation D, K becomes
D·(K−1)+1). PyTorch floors the division (or ceils it with ``ceil_mode``); ``strict=True`` instead refuses
hyperparameters that do not tile the input exactly, which is what CS231n means by "valid" settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from cnnlab.errors import ConfigError


def conv_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    ceil_mode: bool = False,
    strict: bool = False,
) -> int:
    """Spatial output size of a convolution or pooling window along one axis.

    Args:
        size: input width W (pixels).
        kernel_size: kernel width K.
        stride: stride S.
        padding: zero padding P on each side.
        dilation: spacing between kernel taps.
        ceil_mode: round up instead of down, as pooling layers with ``ceil_mode=True`` do.
        strict: raise :class:`ConfigError` when (W − K + 2P) is not divisible by S.

    Returns:
        The output width; may be < 1, which means the input is too small for this layer.

    Example:
        >>> conv_output_size(32, 5)  # 32×32 input, 5×5 kernel -> 28×28
        28
        >>> conv_output_size(7, 3, stride=2)
        3
    """
    if kernel_size < 1 or stride < 1 or padding < 0 or dilation < 1:
        raise ConfigError(
            f"Invalid window: kernel_size={kernel_size}, stride={stride}, padding={padding}, dilation={dilation}; "
            "kernel, stride and dilation must be >= 1 and padding >= 0."
        )
    effective_kernel = dilation * (kernel_size - 1) + 1
    span = size - effective_kernel + 2 * padding
    if strict and span % stride:
        raise ConfigError(
            f"(W − K + 2P)/S + 1 = ({size} − {effective_kernel} + 2·{padding})/{stride} + 1 = {span / stride + 1:g} "
            "is not an integer: the windows do not tile the input. Change the padding or stride so that "
            "W − K + 2P is divisible by S."
        )
    rounded = math.ceil(span / stride) if ceil_mode else math.floor(span / stride)
    return rounded + 1


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Zero padding that keeps the size at stride 1: P = (K − 1)/2 (odd K only)."""
    effective_kernel = dilation * (kernel_size - 1) + 1
    if effective_kernel % 2 == 0:
        raise ConfigError(f"Kernel size {kernel_size} is even: no symmetric padding keeps the size; use an odd kernel.")
    return (effective_kernel - 1) // 2


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit, in input pixels.

    Attributes:
        size: how many input pixels one unit sees along an axis.
        jump: distance in input pixels between neighbouring units (the product of strides so far).
        start: input coordinate of the centre of the first unit's field (pixel i has centre i).
    """

    size: int = 1
    jump: int = 1
    start: float = 0.0

    def after(self, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> ReceptiveField:
        """The receptive field after one more window layer (convolution or pooling)."""
        effective_kernel = dilation * (kernel_size - 1) + 1
        return ReceptiveField(
            size=self.size + (effective_kernel - 1) * self.jump,
            jump=self.jump * stride,
            start=self.start + ((effective_kernel - 1) / 2 - padding) * self.jump,
        )


def window_geometry(module: nn.Module) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) of a windowed layer (convolution, pooling), else None; square windows
    only (the first value of each pair). The receptive-field arithmetic of :class:`ReceptiveField` steps by these;
    the layer summary, the receptive-field tracer and the model probe all read them here."""
    if not hasattr(module, "kernel_size"):
        return None

    def first(value: object, default: int) -> int:
        if value is None:
            return default
        return int(value[0]) if isinstance(value, tuple | list) else int(value)  # type: ignore[arg-type]

    kernel = first(module.kernel_size, 1)
    stride = first(getattr(module, "stride", None), kernel if isinstance(module, nn.MaxPool2d | nn.AvgPool2d) else 1)
    padding = getattr(module, "padding", 0)
    padding = 0 if isinstance(padding, str) else first(padding, 0)
    return kernel, stride, padding, first(getattr(module, "dilation", 1), 1)
