"""MSW-MSA: top-level self-attention in 2x2 shifted windows (design.md §5). Pure tensor code."""

from __future__ import annotations

import functools
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


def rolled(grid: WindowGrid) -> bool:
    """The reference rolls only when the vertical shift is positive (design.md §5 step 4)."""
    return grid.shift[0] > 0


@functools.lru_cache(maxsize=16)  # a generation uses a few grids (4 shifts per size)
def _window_order(grid: WindowGrid, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(order, inverse) on the even 2wh x 2ww grid: order[k] is the grid token that becomes windowed token k.

    The cyclic shift and the 2x2 split folded into one gather index, so partition and reverse copy once each.
    """
    wh, ww = grid.window
    sh, sw = grid.shift if rolled(grid) else (0, 0)
    rows = (torch.arange(2 * wh).view(2, wh) + sh) % (2 * wh)  # [window row, row in window] -> grid row
    cols = (torch.arange(2 * ww).view(2, ww) + sw) % (2 * ww)
    order = (rows.view(2, 1, wh, 1) * (2 * ww) + cols.view(1, 2, 1, ww)).reshape(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return order.to(device), inverse.to(device)


def window_partition(x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """B x (h*w) x C tokens -> 4B x (wh*ww) x C windows, batch-major, row-major windows.

    One copy: a gather that also applies the shift (on CPU it is also faster than a 6-d permute of an unshifted
    grid). An odd grid is first resized as the reference does, in the same NCHW layout, so bit for bit the same.
    """
    b, _, c = x.shape
    wh, ww = grid.window
    tokens = x
    if grid.resized:
        x = x.view(b, grid.height, grid.width, c).permute(0, 3, 1, 2).contiguous()
        tokens = F.interpolate(x, size=(2 * wh, 2 * ww), mode="bicubic").view(b, c, -1).transpose(1, 2)
    order, _ = _window_order(grid, x.device)
    return tokens.index_select(1, order).view(b * 4, wh * ww, c)


def window_reverse(windows: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Inverse of window_partition: 4B x (wh*ww) x C -> B x (h*w) x C, again with one copy (plus an odd grid's resize)."""
    wh, ww = grid.window
    c = windows.shape[-1]
    b = windows.shape[0] // 4
    flat = windows.reshape(b, 4 * wh * ww, c)
    _, inverse = _window_order(grid, windows.device)
    if not grid.resized:
        return flat.index_select(1, inverse)
    x = flat.transpose(1, 2).index_select(2, inverse).view(b, c, 2 * wh, 2 * ww)
    x = F.interpolate(x, size=(grid.height, grid.width), mode="bicubic")
    return x.permute(0, 2, 3, 1).reshape(b, grid.height * grid.width, c)


def windowed_attention(attend: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Run self-attention ``attend`` inside the 4 shifted windows of ``grid`` (design.md §5 steps 3-7)."""
    return window_reverse(attend(window_partition(x, grid)), grid)
