"""RAU-Net's resolution-aware downsampler on the patch points every Forge-lineage host calls (design.md §4.1.1, §15).

The RAD Downsample's own conv runs with the dilated stride-4 geometry (the reference's in-place swap, core.raunet)
from the input_block_patch of the block before it to the input_block_patch of its own block, i.e. exactly while
that block runs. No module is replaced: Forge Neo (6e1e0d5) applies object patches through a setter that wraps the
value in an nn.Parameter, so an object patch cannot carry a module or a forward there.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Optional

from torch import nn

from ..core import raunet
from ..core.unet_map import is_downsample


class RadSwitch:
    """Dilates one conv between ``on()`` and ``off()``; ``off()`` is idempotent, so the pass calls it at the start of
    every forward and at removal too (a forward that raised mid-block leaves nothing dilated for long)."""

    def __init__(self, conv: nn.Conv2d):
        self.conv = conv
        self._undo: Optional[ExitStack] = None

    def on(self) -> None:
        if self._undo is None:
            self._undo = ExitStack()
            self._undo.enter_context(raunet.dilated(self.conv))

    def off(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo.close()


def stock_conv(module: nn.Module) -> nn.Conv2d:
    """The conv of a Downsample (3x3, stride 2)."""
    if not is_downsample(module):
        raise ValueError(f"{type(module).__name__} is not a strided 3x3 Downsample")
    return module.op
