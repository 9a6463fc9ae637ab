"""RAU-Net's resolution-aware downsampler as a Forge object patch (design.md §4.1.1).

Forge swaps an object patch into the shared U-Net only while the clone that carries it is loaded, and puts
the stock module back when another clone of that model is loaded, so the swap never outlives the clone.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..core import raunet
from ..core.unet_map import is_downsample


class RauDownsample(nn.Module):
    """Stands in for the Downsample that leaves the RAD level; runs the same conv dilated while RAD is on.

    Forge's TimestepEmbedSequential calls every layer that is not a TimestepBlock, SpatialTransformer or
    Upsample as ``layer(x)``, exactly as it calls Downsample, so no subclass of Forge's class is needed.
    The stock conv stays in ``op`` (same parameters and state-dict keys): LoRA, Forge's weight casting and
    structural mapping (unet_map.is_downsample) all keep working while this object is swapped in.
    """

    def __init__(self, op: nn.Conv2d, rad_active: Callable[[], bool]):
        super().__init__()
        self.op = op
        self.channels, self.out_channels = op.in_channels, op.out_channels
        self.rad_active = rad_active

    def forward(self, x):
        if self.rad_active():
            # The reference's own in-place geometry swap, restored before the call returns.
            with raunet.dilated(self.op):
                return self.op(x)
        return self.op(x)


def stock_conv(module: nn.Module) -> nn.Conv2d:
    """The Downsample conv behind ``module``, also when a stale RauDownsample is still swapped in."""
    if not is_downsample(module):
        raise ValueError(f"{type(module).__name__} is not a strided 3x3 Downsample")
    return module.op
