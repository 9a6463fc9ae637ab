"""The RAU-Net geometry of one U-Net forward: whether the RAD and the block pooling run, and the sizes that gives.

One pure function decides for the U-Net and for every ControlNet encoder that feeds it, from the step and the
latent size alone, so the two can never disagree (design.md §12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Tuple

from .schedule import RauSchedule

if TYPE_CHECKING:
    from .presets import BlockRoles
    from .unet_map import UNetMap

Size = Tuple[int, int]


@dataclass(frozen=True)
class ForwardGeometry:
    rad: bool = False  # the Downsample at roles.rad_block runs dilated with stride 4
    pool: bool = False  # the output of roles.pool_block is average-pooled by 2

    @property
    def changes_sizes(self) -> bool:
        return self.rad or self.pool


STOCK = ForwardGeometry()


@dataclass(frozen=True)
class TileGate:
    """RAU-Net per forward, from the size the forward really has (design.md §11.7).

    A host that tiles (MultiDiffusion, Tiled Diffusion) or crops (ADetailer) hands the U-Net latents smaller than
    the pass. Such a forward at or below the model's native area is already at the trained size: shrinking it
    further would run the deep blocks below it, so it runs stock. A forward of the pass's own size never is gated:
    the pass plan ("apply to") decides for it.
    """

    pass_latent: Size
    native_latent: int

    def native_tile(self, latent_hw: Size) -> bool:
        area = int(latent_hw[0]) * int(latent_hw[1])
        return area < self.pass_latent[0] * self.pass_latent[1] and area <= self.native_latent ** 2


def forward_geometry(schedule: RauSchedule, step: int, family: str, raunet_on: bool) -> ForwardGeometry:
    """RAD and pooling for the forward at ``step``; Turbo never has a RAD (design.md §4.2)."""
    if not raunet_on:
        return STOCK
    return ForwardGeometry(rad=family != "sdxl_turbo" and schedule.rad_active(step), pool=schedule.pool_active(step))


def _divide(hw: Size, factor: int) -> Size:
    return math.ceil(hw[0] / factor), math.ceil(hw[1] / factor)


def feature_sizes(unet_map: UNetMap, roles: BlockRoles, latent_hw: Size, geometry: ForwardGeometry) -> Tuple[Size, ...]:
    """The size of every skip ``hs[i]`` (input block i's output, as stored), then of the middle block's output.

    A 3x3 stride-2 conv with padding 1 gives ceil(H/2); the RAD (stride 4, padding 2, dilation 2) ceil(H/4);
    the 2x2 ceil-mode pool ceil(H/2). ControlNet residual i must have exactly size i (design.md §12).
    """
    sizes, hw = [], (int(latent_hw[0]), int(latent_hw[1]))
    for i in range(unet_map.n_blocks):
        if unet_map.is_down(i):
            hw = _divide(hw, 4 if geometry.rad and i == roles.rad_block else 2)
        if geometry.pool and i == roles.pool_block:
            hw = _divide(hw, 2)
        sizes.append(hw)
    sizes.append(hw)
    return tuple(sizes)
