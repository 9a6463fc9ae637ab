"""Derive HiDiffusion's block roles from a U-Net's module tree, never from names or configs.

Works on anything shaped like the ldm/sgm ``UNetModel`` (A1111's SD1/SD2/SDXL, Forge's
``IntegratedUNet2DConditionModel``): ``input_blocks`` / ``middle_block`` / ``output_blocks``
of TimestepEmbedSequential-like containers holding ResBlocks, SpatialTransformers,
Downsample (a strided 3x3 conv in ``.op``) and Upsample (nearest x2 then ``.conv``).
The index arithmetic is the one in design.md §6 (and diffusers' ``convert_ldm_unet_checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import nn

from .cost_model import BlockCost, costs_of


class UnsupportedModelError(ValueError):
    """The model is not a U-Net layout HiDiffusion can patch; nothing was changed."""


SUPPORTED = (
    "SD1.x/SD2.x U-Nets (4 levels, attention at levels 0-2) and SDXL U-Nets "
    "(3 levels, attention at levels 1-2), inpainting variants included"
)


def is_downsample(module: nn.Module) -> bool:
    op = getattr(module, "op", None)
    return isinstance(op, nn.Conv2d) and tuple(op.stride) == (2, 2) and tuple(op.kernel_size) == (3, 3)


def is_upsample(module: nn.Module) -> bool:
    return "Upsample" in type(module).__name__ and isinstance(getattr(module, "conv", None), nn.Conv2d)


def transformer_blocks(module: nn.Module) -> List[nn.Module]:
    """The BasicTransformerBlocks (anything with a self-attention ``attn1``) inside one U-Net block."""
    found = []
    for layer in module.children():
        for block in getattr(layer, "transformer_blocks", ()):
            if isinstance(getattr(block, "attn1", None), nn.Module):
                found.append(block)
    return found


@dataclass(frozen=True)
class UNetMap:
    """Where things are, by block index (``input_blocks[i]`` / ``output_blocks[j]``)."""

    layout: str  # "sd15" (SD1/SD2 shape) or "sdxl"
    n_blocks: int
    input_level: Tuple[int, ...]  # level of each input block after it ran (index 0 = conv_in)
    output_level: Tuple[int, ...]  # level each output block runs at
    downsample_of_level: Dict[int, int]  # level -> input block holding the Downsample that leaves it
    upsample_blocks: Tuple[int, ...]  # output blocks that end in an Upsample
    attention_levels: Tuple[int, ...]
    in_channels: int
    block_costs: Tuple[BlockCost, ...] = ()  # input blocks, the middle block, output blocks (core/cost_model.py)

    def first_input_block(self, level: int) -> int:
        return next(i for i in range(1, self.n_blocks) if self.input_level[i] == level and not self.is_down(i))

    def is_down(self, i: int) -> bool:
        return i in self.downsample_of_level.values()

    def input_blocks_at(self, level: int) -> List[int]:
        return [i for i in range(1, self.n_blocks) if self.input_level[i] == level and not self.is_down(i)]

    def output_blocks_at(self, level: int) -> List[int]:
        return [j for j in range(self.n_blocks) if self.output_level[j] == level]

    def skip_source(self, j: int) -> int:
        """The input block whose output ``output_blocks[j]`` concatenates (``hs.pop()``)."""
        return self.n_blocks - 1 - j


def inspect_unet(unet: nn.Module) -> UNetMap:
    """Map the U-Net, or raise UnsupportedModelError with a message a user can act on."""
    blocks = [getattr(unet, name, None) for name in ("input_blocks", "middle_block", "output_blocks")]
    if not all(isinstance(b, nn.Module) for b in blocks):
        raise UnsupportedModelError(
            f"HiDiffusion needs a U-Net with input_blocks/middle_block/output_blocks; {type(unet).__name__} has none "
            f"(SD3/MMDiT, Flux and other transformer models are not U-Nets). Supported: {SUPPORTED}."
        )
    inputs, outputs = list(unet.input_blocks), list(unet.output_blocks)
    if len(inputs) != len(outputs) or len(inputs) < 4:
        raise UnsupportedModelError(f"HiDiffusion cannot map this U-Net: {len(inputs)} input vs {len(outputs)} output blocks.")

    level, input_level, down_of_level, attention = 0, [0], {}, set()
    for i, block in enumerate(inputs[1:], start=1):
        if any(is_downsample(m) for m in block.children()):
            down_of_level[level] = i
            level += 1
        elif transformer_blocks(block):
            attention.add(level)
        input_level.append(level)
    depth = level

    output_level, upsamples = [], []
    for j, block in enumerate(outputs):
        output_level.append(level)
        if any(is_upsample(m) for m in block.children()):
            upsamples.append(j)
            level -= 1
    if level != 0 or len(upsamples) != depth:
        raise UnsupportedModelError("HiDiffusion cannot map this U-Net: its Downsample and Upsample blocks do not pair up.")

    attention_levels = tuple(sorted(attention))
    layout = _layout(depth + 1, attention_levels)
    first_conv = next((m for m in inputs[0].modules() if isinstance(m, nn.Conv2d)), None)
    return UNetMap(
        layout=layout,
        n_blocks=len(inputs),
        input_level=tuple(input_level),
        output_level=tuple(output_level),
        downsample_of_level=down_of_level,
        upsample_blocks=tuple(upsamples),
        attention_levels=attention_levels,
        in_channels=first_conv.in_channels if first_conv is not None else 0,
        block_costs=costs_of([*inputs, unet.middle_block, *outputs], lambda m: is_downsample(m) or is_upsample(m)),
    )


def _layout(levels: int, attention_levels: Tuple[int, ...]) -> str:
    if levels == 4 and attention_levels[:1] == (0,) and 1 in attention_levels:
        return "sd15"
    if levels == 3 and attention_levels[:1] == (1,):
        return "sdxl"
    hint = ""
    if levels == 4 and attention_levels[:1] == (1,):
        hint = " This looks like the SDXL refiner, which HiDiffusion does not support; it runs unpatched."
    raise UnsupportedModelError(
        f"HiDiffusion does not know this U-Net layout ({levels} levels, attention at levels "
        f"{list(attention_levels)}).{hint} Supported: {SUPPORTED}."
    )
