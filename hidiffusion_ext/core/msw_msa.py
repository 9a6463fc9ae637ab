"""MSW-MSA: top-level self-attention in 2x2 shifted windows (design.md §5). Pure tensor code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class WindowGrid:
    height: int  # token grid of this attention call
    width: int
    window: Tuple[int, int]  # (wh, ww); there are always 2x2 windows
    shift: Tuple[int, int]

    @property
    def resized(self) -> bool:
        """Odd grids are bicubic-resized to an even one (design.md §5 step 3)."""
        return self.height % 2 != 0 or self.width % 2 != 0


def token_grid(latent_hw: Tuple[int, int], n_tokens: int) -> Optional[Tuple[int, int]]:
    """h x w of the token map, from the U-Net input size and the token count (design.md §5 step 1).

    Returns None when no ceil-divided grid has exactly ``n_tokens`` tokens (never for ldm/sgm U-Nets).
    """
    h0, w0 = latent_hw
    ratio = round(((h0 * w0) / n_tokens) ** 0.5)  # the reference's expression, kept for bit-equal grids
    if ratio < 1:
        return None
    h, w = math.ceil(h0 / ratio), math.ceil(w0 / ratio)
    return (h, w) if h * w == n_tokens else None


def shift_index(u: float) -> int:
    """Map a uniform draw to one of 4 shifts of {0, 1/4, 1/2, 3/4} window (reference thresholds)."""
    if u <= 0.25:
        return 0
    if u <= 0.5:
        return 1
    if u <= 0.75:
        return 2
    return 3


def window_grid(hw: Tuple[int, int], k: int) -> WindowGrid:
    h, w = hw
    wh, ww = math.ceil(h / 2), math.ceil(w / 2)
    return WindowGrid(h, w, (wh, ww), ((wh // 4) * k, (ww // 4) * k))


def window_partition(x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """B x (h*w) x C tokens -> 4B x (wh*ww) x C windows, batch-major, row-major windows."""
    b, _, c = x.shape
    wh, ww = grid.window
    x = x.view(b, grid.height, grid.width, c)
    if grid.resized:
        x = F.interpolate(x.permute(0, 3, 1, 2).contiguous(), size=(2 * wh, 2 * ww), mode="bicubic")
        x = x.permute(0, 2, 3, 1).contiguous()
    if grid.shift[0] > 0:  # the reference rolls only when the vertical shift is positive (design.md §5 step 4)
        x = torch.roll(x, shifts=(-grid.shift[0], -grid.shift[1]), dims=(1, 2))
    x = x.view(b, 2, wh, 2, ww, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b * 4, wh * ww, c)


def window_reverse(windows: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Inverse of window_partition: 4B x (wh*ww) x C -> B x (h*w) x C."""
    wh, ww = grid.window
    c = windows.shape[-1]
    b = windows.shape[0] // 4
    x = windows.reshape(b, 2, 2, wh, ww, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(b, 2 * wh, 2 * ww, c)
    if grid.shift[0] > 0:
        x = torch.roll(x, shifts=(grid.shift[0], grid.shift[1]), dims=(1, 2))
    if grid.resized:
        x = F.interpolate(x.permute(0, 3, 1, 2).contiguous(), size=(grid.height, grid.width), mode="bicubic")
        x = x.permute(0, 2, 3, 1).contiguous()
    return x.view(b, grid.height * grid.width, c)


def windowed_attention(attend: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Run self-attention ``attend`` inside the 4 shifted windows of ``grid`` (design.md §5 steps 3-7)."""
    return window_reverse(attend(window_partition(x, grid)), grid)
