"""The reference's per-family plans and ratio presets, and how "auto" picks them (design.md §2, §4.2, §8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from .schedule import RauSchedule, build_schedule
from .settings import HiDiffusionSettings
from .unet_map import UNetMap, UnsupportedModelError

# (T1_ratio, T2_ratio) per family and resolution class: switching_threshold_ratio_dict in the reference.
RATIOS = {
    ("sd15", "small"): (0.4, 0.0),
    ("sd15", "large"): (0.7, 0.3),
    ("sdxl", "small"): (0.4, 0.0),
    ("sdxl", "large"): (0.7, 0.3),
    ("sdxl_turbo", "any"): (0.5, 0.0),
}
# Latent side below which the "small" preset applies (either side; design.md §4.2): 2048 px / 4096 px.
LARGE_CLASS_LATENT = {"sd15": 256, "sdxl": 512}
AGGRESSIVE_RATIO = 8 / 50  # reference: aggressive_step = 8 (of 50), scaled to N


@dataclass(frozen=True)
class FamilyPlan:
    """Which U-Net levels carry each HiDiffusion part (design.md §6), in diffusers down-block numbers."""

    family: str
    rad_level: int  # the Downsample leaving this level is dilated
    pool_level: int  # pooled after its first block, restored on the way up
    window_level: int  # MSW-MSA on every transformer at this level


def plan_for(family: str) -> FamilyPlan:
    if family == "sd15":
        return FamilyPlan(family, rad_level=0, pool_level=1, window_level=0)
    return FamilyPlan(family, rad_level=1, pool_level=1, window_level=1)


def detect_family(unet_map: UNetMap, requested: str = "auto", model_name: str = "") -> str:
    """Family from structure; "sdxl_turbo" only on request or when the model name says turbo."""
    layout = unet_map.layout
    if requested == "auto":
        if layout == "sdxl" and "turbo" in model_name.lower():
            return "sdxl_turbo"
        return layout
    wanted_layout = "sd15" if requested == "sd15" else "sdxl"
    if wanted_layout != layout:
        raise UnsupportedModelError(
            f"family {requested!r} does not fit this U-Net, which has the {'SD1/SD2' if layout == 'sd15' else 'SDXL'} "
            f"layout; use family 'auto' or {layout!r}"
        )
    return requested


def is_non_aggressive_model(unet_map: UNetMap, model_name: str) -> bool:
    """The reference turns the SDXL aggressive phase off for inpainting and Playground models (design.md §7)."""
    name = model_name.lower()
    return unet_map.in_channels == 9 or "inpaint" in name or "playground" in name


def size_class(family: str, latent_hw: Tuple[int, int]) -> str:
    if family == "sdxl_turbo":
        return "any"
    limit = LARGE_CLASS_LATENT[family]
    return "small" if min(latent_hw) < limit else "large"


@dataclass(frozen=True)
class ResolvedSchedule:
    family: str
    size_class: str
    t1: float
    t2: float
    aggressive: bool
    schedule: RauSchedule

    def describe(self) -> str:
        aggressive = ", aggressive" if self.aggressive else ""
        return f"{self.family} {self.size_class}: T1 {self.t1:g}, T2 {self.t2:g}{aggressive}; {self.schedule.describe()}"


def resolve(
    family: str,
    latent_hw: Tuple[int, int],
    steps: int,
    settings: HiDiffusionSettings,
    non_aggressive_model: bool = False,
) -> ResolvedSchedule:
    """Fill every "auto" for one latent size and step count of a pass."""
    cls = size_class(family, latent_hw)
    preset_t1, preset_t2 = RATIOS[(family, cls)]
    t1 = preset_t1 if settings.t1 is None else float(settings.t1)
    t2 = preset_t2 if settings.t2 is None else float(settings.t2)
    if family != "sdxl":
        aggressive = False
    elif settings.aggressive == "auto":
        # Below 4096 px only; the reference's large class is meant to be non-aggressive (design.md §9.3).
        aggressive = cls == "small" and not non_aggressive_model
    else:
        aggressive = settings.aggressive == "on"
    ratio = AGGRESSIVE_RATIO if settings.aggressive_ratio is None else float(settings.aggressive_ratio)
    schedule = build_schedule(family, steps, t1, t2, aggressive, ratio)
    return ResolvedSchedule(family, cls, t1, t2, aggressive, schedule)


@dataclass(frozen=True)
class BlockRoles:
    """Block indices for one family on one U-Net (design.md §6 tables, derived structurally)."""

    rad_block: int  # input block whose Downsample becomes the RAD
    pool_block: int  # input block whose output is pooled (also the skip it stores)
    restore_block: int  # output block after which the pooled path is restored
    window_inputs: Tuple[int, ...]  # input / output blocks whose transformers get MSW-MSA
    window_outputs: Tuple[int, ...]
    upsample_skip: Tuple[Tuple[int, int], ...]  # (output block with Upsample, input block of the next skip)


def block_roles(unet_map: UNetMap, plan: FamilyPlan) -> BlockRoles:
    pool_block = unet_map.first_input_block(plan.pool_level)
    return BlockRoles(
        rad_block=unet_map.downsample_of_level[plan.rad_level],
        pool_block=pool_block,
        restore_block=unet_map.skip_source(pool_block),
        window_inputs=tuple(unet_map.input_blocks_at(plan.window_level)),
        window_outputs=tuple(unet_map.output_blocks_at(plan.window_level)),
        upsample_skip=tuple((j, unet_map.skip_source(j + 1)) for j in unet_map.upsample_blocks),
    )
