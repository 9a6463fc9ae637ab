"""RAU-Net's tensor operations (design.md §4.1): what runs, not where it is hooked."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

# The resolution-aware downsampler runs the stock 3x3 stride-2 conv with these settings (design.md §4.1.1).
RAD_STRIDE, RAD_PADDING, RAD_DILATION = (4, 4), (2, 2), (2, 2)


@contextmanager
def conv_geometry(conv: nn.Conv2d, stride, padding, dilation):
    """Temporarily run ``conv`` with other stride/padding/dilation, as the reference does.

    Calling the module itself (rather than F.conv2d on its weight) keeps whatever the host hooked into
    Conv2d.forward working: A1111's LoRA merges weights there, tiling mode pads circularly.
    """
    saved = conv.stride, conv.padding, conv.dilation, conv._reversed_padding_repeated_twice
    conv.stride, conv.padding, conv.dilation = stride, padding, dilation
    # Non-zero padding modes pad with this precomputed list, not with .padding.
    conv._reversed_padding_repeated_twice = tuple(p for p in reversed(padding) for _ in range(2))
    try:
        yield conv
    finally:
        conv.stride, conv.padding, conv.dilation, conv._reversed_padding_repeated_twice = saved


def dilated(conv: nn.Conv2d):
    """Context in which the Downsample conv is the resolution-aware downsampler: HxW -> ceil(H/4) x ceil(W/4)."""
    return conv_geometry(conv, RAD_STRIDE, RAD_PADDING, RAD_DILATION)


def even_rows_and_columns(x: torch.Tensor) -> torch.Tensor:
    """The RAD's input for the stock conv: a 3x3 conv with stride 4, padding 2 and dilation 2 reads only even rows
    and columns (tap k of output o is row 4o + 2k - 2), so it equals the stock stride-2, padding-1 conv on
    x[..., ::2, ::2] (tap k is row 2(2o + k - 1)), zero padding included, with the same ceil(H/4) output. Running the
    module unchanged on this input keeps everything a host adds around the conv's own geometry working: A1111's
    functional LoRA adds ``up(down(x))`` with a ``down`` conv that copied the stock stride and padding at load time."""
    return x[..., ::2, ::2]


def is_stock_downsample_conv(conv: nn.Conv2d) -> bool:
    """3x3, stride 2, padding 1, no dilation, zero padding: the geometry even_rows_and_columns stands in for."""
    return (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.padding_mode) \
        == ((3, 3), (2, 2), (1, 1), (1, 1), "zeros")


def rau_downsample(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Dilated stride-4 downsample with the existing weights."""
    with dilated(conv):
        return conv(x)


def block_pool(h: torch.Tensor) -> torch.Tensor:
    """Average-pool a block's output by 2 (ceil mode keeps odd sizes; design.md §4.1.2)."""
    return F.avg_pool2d(h, kernel_size=(2, 2), ceil_mode=True)


def block_restore(h: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bicubic back to the pre-pool size (design.md §4.1.3)."""
    return F.interpolate(h, size=tuple(size), mode="bicubic")


def sized_to_skip(x_hw: Tuple[int, int], skip_hw: Tuple[int, int], shrunk: bool) -> bool:
    """Whether an Upsample goes to its skip's size instead of x2: always after our shrink (x4 after a RAD), else
    only where x2 lands on the skip or overshoots an odd one by 1. A skip off by more was resized by another tool
    between the blocks (DeepShrinkHires.fix runs the blocks in its own loop and scales up after them): x2 keeps
    that tool's arithmetic, as without HiDiffusion."""
    return shrunk or all(2 * int(n) - int(s) in (0, 1) for n, s in zip(x_hw, skip_hw))


def upsample_to(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling to the next skip's size, x4 after a RAD and exact for odd sizes (design.md §4.4)."""
    return F.interpolate(x, size=tuple(size), mode="nearest")


def pool_to_size(x: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, bool]:
    """Fit a residual to its skip's size without ever dropping it (design.md §12): 2x2 ceil-mode average pooling,
    which is what RAU-Net itself does, while that lands exactly; adaptive average pooling otherwise.

    Returns the tensor and whether the ceil-mode pooling alone was exact.
    """
    target = (int(size[0]), int(size[1]))
    while tuple(x.shape[-2:]) != target and all(s > t for s, t in zip(x.shape[-2:], target)):
        x = block_pool(x)
    if tuple(x.shape[-2:]) == target:
        return x, True
    if all(s >= t for s, t in zip(x.shape[-2:], target)):
        return F.adaptive_avg_pool2d(x, target), False
    return F.interpolate(x, size=target, mode="bilinear"), False  # never seen: RAU-Net only ever shrinks a skip
