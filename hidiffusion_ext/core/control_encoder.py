"""ControlNet under RAU-Net: the encoder runs with the U-Net's geometry, and any other residual is fitted to its skip.

A ControlNet encoder is a trained copy of the U-Net's encoder: the same input blocks (levels, Downsample positions),
a zero conv after each, then the middle block. Run with the RAD and the pooling of the U-Net forward it feeds, its
residual i has exactly the size of skip i at every step, and the deep levels see control at the scale they were
trained for (design.md §12). There is no restore and no MSW-MSA in an encoder: it has no decoder.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import List, Sequence, Tuple

import torch
from torch import nn

from . import raunet
from .geometry import ForwardGeometry
from .presets import BlockRoles
from .unet_map import UNetMap, is_downsample


class EncoderMismatch(ValueError):
    """The control model's encoder is not shaped like the U-Net's; its residuals can only be fitted afterwards."""


def check_encoder(encoder: nn.Module, unet_map: UNetMap) -> None:
    """Raise EncoderMismatch unless ``encoder`` has the U-Net's input blocks with Downsamples at the same indices."""
    blocks = getattr(encoder, "input_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != unet_map.n_blocks:
        found = len(blocks) if isinstance(blocks, nn.ModuleList) else "no"
        raise EncoderMismatch(f"{found} input blocks where the U-Net has {unet_map.n_blocks}")
    downs = {i for i, block in enumerate(blocks) if any(is_downsample(m) for m in block.children())}
    expected = sorted(unet_map.downsample_of_level.values())
    if sorted(downs) != expected:
        raise EncoderMismatch(f"Downsamples at blocks {sorted(downs)}, the U-Net's at {expected}")


@contextmanager
def under_geometry(encoder: nn.Module, roles: BlockRoles, geometry: ForwardGeometry):
    """For the calls inside: the Downsample of input block ``roles.rad_block`` runs dilated, and the output of input
    block ``roles.pool_block`` is pooled, exactly as in the U-Net. Undone on the way out, also after an error."""
    with ExitStack() as undo:
        if geometry.rad:
            down = next(m for m in encoder.input_blocks[roles.rad_block].children() if is_downsample(m))
            undo.enter_context(raunet.dilated(down.op))
        if geometry.pool:
            handle = encoder.input_blocks[roles.pool_block].register_forward_hook(
                lambda module, args, output: raunet.block_pool(output))
            undo.callback(handle.remove)
        yield


def fit_residuals(residuals: Sequence[torch.Tensor], sizes: Sequence[Tuple[int, int]]) -> Tuple[List[torch.Tensor], bool]:
    """Residual i fitted to ``sizes[i]`` (average pooling, never nearest, never dropped); True when any needed it.

    ``None`` entries and 1x1 residuals (global average pooling) pass through, as the hosts add them by broadcasting.
    """
    fitted, changed = [], False
    for residual, size in zip(residuals, sizes):
        if isinstance(residual, torch.Tensor) and residual.ndim == 4 and residual.shape[-2:] != (1, 1) \
                and tuple(residual.shape[-2:]) != tuple(size):
            residual, _ = raunet.pool_to_size(residual, size)
            changed = True
        fitted.append(residual)
    return fitted + list(residuals[len(fitted):]), changed
