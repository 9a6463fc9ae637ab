"""A small cost model of the U-Net: multiply-adds per block from the structure and the latent size (design.md §13.2).

Each block's cost is kept as coefficients at inspection time (what does a pixel, a token, an attention pair cost
there), so the readout can price any size and schedule without a forward: convs and linear layers per pixel of the
block's working size, a Downsample's or Upsample's conv per pixel of its output, attention per query-key pair.
Norms, activations and copies are left out: they are memory-bound, and their share grows as the rest shrinks. How
measured time compares with these figures: docs/testing.md, Benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from torch import nn

from .geometry import STOCK, ForwardGeometry, forward_geometry
from .schedule import RauSchedule

if TYPE_CHECKING:  # unet_map builds these coefficients when it inspects a U-Net
    from .presets import BlockRoles
    from .unet_map import UNetMap

CONTEXT_TOKENS = 77  # one CLIP chunk; longer prompts add chunks, a small share of the whole


@dataclass(frozen=True)
class BlockCost:
    per_pixel: float = 0.0  # convs and linear layers at the block's working size
    per_output_pixel: float = 0.0  # a Downsample's or Upsample's conv, at the size it outputs
    self_attention: float = 0.0  # sum of self-attention widths: 2 * n^2 * width per forward
    cross_attention: float = 0.0  # sum of cross-attention widths: 2 * n * context tokens * width
    per_context_token: float = 0.0  # cross-attention's key and value projections


def linear_features(module: nn.Module) -> Optional[Tuple[int, int]]:
    """(in, out) features of a linear layer, or None.

    Duck-typed: Forge builds its U-Nets under its own operations, whose Linear is an ``nn.Module`` with
    ``in_features`` / ``out_features`` and no ``nn.Linear`` base, so an isinstance test would price Forge's
    attention and projections at zero.
    """
    features = getattr(module, "in_features", None), getattr(module, "out_features", None)
    return features if all(isinstance(f, int) for f in features) else None


def block_cost(block: nn.Module, is_resample) -> BlockCost:
    """Coefficients of one U-Net block; ``is_resample(module)`` tells a Downsample or Upsample child."""
    per_pixel = per_output = self_attn = cross_attn = per_context = 0.0
    resample = {id(m) for child in block.children() if is_resample(child) for m in child.modules()}
    for name, module in block.named_modules():
        if isinstance(module, nn.Conv2d):
            macs = module.in_channels * module.out_channels * math.prod(module.kernel_size) / module.groups
            if id(module) in resample:
                per_output += macs
            else:
                per_pixel += macs
        elif (features := linear_features(module)) is not None:
            macs = math.prod(features)
            if name.endswith(("attn2.to_k", "attn2.to_v")):
                per_context += macs
            else:
                per_pixel += macs
        elif name.endswith(("attn1", "attn2")) and linear_features(getattr(module, "to_q", None)) is not None:
            width = linear_features(module.to_q)[1]
            if name.endswith("attn1"):
                self_attn += width
            else:
                cross_attn += width
    return BlockCost(per_pixel, per_output, self_attn, cross_attn, per_context)


def _area(hw: Tuple[int, int]) -> int:
    return hw[0] * hw[1]


def _divide(hw, factor):
    return math.ceil(hw[0] / factor), math.ceil(hw[1] / factor)


def _block_macs(cost: BlockCost, work_hw, out_hw, windowed: bool) -> float:
    n = _area(work_hw)
    self_pairs = n * n / (4 if windowed else 1)  # 4 windows of n/4 tokens each
    return (cost.per_pixel * n + cost.per_output_pixel * _area(out_hw) + 2 * self_pairs * cost.self_attention
            + 2 * n * CONTEXT_TOKENS * cost.cross_attention + CONTEXT_TOKENS * cost.per_context_token)


def forward_macs(unet_map: UNetMap, roles: BlockRoles, latent_hw, geometry: ForwardGeometry = STOCK,
                 windowed: bool = False) -> float:
    """Multiply-adds of one U-Net forward (batch 1) on ``latent_hw`` with ``geometry``; ``windowed`` = MSW-MSA on."""
    n, costs = unet_map.n_blocks, unet_map.block_costs
    window_blocks = set(roles.window_inputs) if windowed else set()
    out_windows = set(roles.window_outputs) if windowed else set()
    total, skips, hw = 0.0, [], (int(latent_hw[0]), int(latent_hw[1]))
    for i in range(n):
        if unet_map.is_down(i):
            out = _divide(hw, 4 if geometry.rad and i == roles.rad_block else 2)
            total += _block_macs(costs[i], hw, out, False)
            hw = out
        else:
            total += _block_macs(costs[i], hw, hw, i in window_blocks)
            if geometry.pool and i == roles.pool_block:
                hw = _divide(hw, 2)
        skips.append(hw)
    total += _block_macs(costs[n], hw, hw, False)  # the middle block
    for j in range(n):
        work = skips[n - 1 - j]
        out = skips[n - 2 - j] if j < n - 1 else work
        total += _block_macs(costs[n + 1 + j], work, out, j in out_windows)
    return total


def schedule_ratio(unet_map: UNetMap, roles: BlockRoles, family: str, latent_hw, schedule: RauSchedule,
                   raunet: bool, mswmsa: bool) -> float:
    """Predicted U-Net compute of a pass with HiDiffusion over the same pass without (1.0 = no saving)."""
    stock = forward_macs(unet_map, roles, latent_hw)
    ours = sum(forward_macs(unet_map, roles, latent_hw, forward_geometry(schedule, step, family, raunet), mswmsa)
               for step in range(schedule.steps))
    return ours / (stock * schedule.steps)


def describe_saving(ratio: float) -> str:
    return f"≈ −{round(100 * (1 - ratio))}% U-Net compute" if ratio < 0.995 else "≈ no U-Net compute saved"


def costs_of(blocks: Sequence[nn.Module], is_resample) -> Tuple[BlockCost, ...]:
    return tuple(block_cost(block, is_resample) for block in blocks)
