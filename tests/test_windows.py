"""MSW-MSA's window partition with one copy each way is bit for bit the previous roll + permute partition."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from hidiffusion_ext.core import msw_msa


def previous_partition(x, grid):
    """The 0.1 partition: resize, roll (a copy), then a contiguous permute (another)."""
    b, _, c = x.shape
    wh, ww = grid.window
    x = x.view(b, grid.height, grid.width, c)
    if grid.resized:
        x = F.interpolate(x.permute(0, 3, 1, 2).contiguous(), size=(2 * wh, 2 * ww), mode="bicubic")
        x = x.permute(0, 2, 3, 1).contiguous()
    if grid.shift[0] > 0:
        x = torch.roll(x, shifts=(-grid.shift[0], -grid.shift[1]), dims=(1, 2))
    x = x.view(b, 2, wh, 2, ww, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b * 4, wh * ww, c)


def previous_reverse(windows, grid):
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


GRIDS = [(32, 32), (40, 24), (64, 48), (33, 25), (17, 31), (6, 10), (2, 2), (3, 12), (256, 256)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw, k", list(itertools.product(GRIDS, range(4))))
def test_partition_and_reverse_bit_for_bit(hw, k, dtype):
    grid = msw_msa.window_grid(hw, k)
    x = torch.randn(2, hw[0] * hw[1], 24, dtype=dtype, generator=torch.Generator().manual_seed(hw[0] * 100 + k))
    windows = msw_msa.window_partition(x, grid)
    assert torch.equal(windows, previous_partition(x, grid))
    attended = windows * 1.5 - 0.25  # anything token-wise, as attention's output would be
    assert torch.equal(msw_msa.window_reverse(attended, grid), previous_reverse(attended, grid))


def test_the_grids_cover_every_path():
    """Unshifted even, shifted even, odd (resize + gather), and the reference's quirk: a
    horizontal shift without a vertical one does not roll."""
    grids = [msw_msa.window_grid(hw, k) for hw, k in itertools.product(GRIDS, range(4))]
    assert any(not g.resized and not msw_msa.rolled(g) for g in grids)
    assert any(not g.resized and msw_msa.rolled(g) for g in grids)
    assert any(g.resized and msw_msa.rolled(g) for g in grids)
    assert any(g.shift[0] == 0 and g.shift[1] > 0 for g in grids)  # (6, 10) with k=1: wh//4 = 0, ww//4 = 1
