"""What "Auto" resolves to for the tab's size, steps and loaded model: the text shown under the controls.

The passes come from the tab's values the way A1111's processing derives them; each is decided by
pass_plan.plan_pass, the same function the generation patches from, so the user sees what will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..core.presets import plan_for
from ..core.unet_map import UnsupportedModelError
from .arguments import ScriptArgs
from .pass_plan import ModelInfo, PassSpec, plan_pass
from .step_tracking import img2img_executed_steps

FAMILY_NAMES = {"sd15": "SD1/SD2", "sdxl": "SDXL", "sdxl_turbo": "SDXL Turbo"}


@dataclass
class TabValues:
    """The tab's own controls, as last seen (txt2img hires fields stay at their defaults in img2img)."""

    width: int = 512
    height: int = 512
    steps: int = 20
    hires: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_steps: int = 0
    denoising: Optional[float] = None  # img2img's denoising strength; None in txt2img


def hires_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> Tuple[int, int]:
    """The hires pass's (width, height) as A1111's processing computes it (after its crop)."""
    if not resize_x and not resize_y:
        return int(width * scale), int(height * scale)
    if not resize_y:
        return resize_x, resize_x * height // width
    if not resize_x:
        return resize_y * width // height, resize_y
    return resize_x, resize_y


def passes(tab: TabValues) -> List[Tuple[str, int, int, int, bool]]:
    """(name, width, height, executed steps, is hires) of each sampling pass."""
    steps = max(1, int(tab.steps))
    if tab.denoising is not None:
        steps = img2img_executed_steps(steps, tab.denoising)
    result = [("first pass", int(tab.width), int(tab.height), steps, False)]
    if tab.hires and tab.denoising is None:
        w, h = hires_size(int(tab.width), int(tab.height), float(tab.hr_scale), int(tab.hr_resize_x), int(tab.hr_resize_y))
        result.append(("hires pass", w, h, max(1, int(tab.hr_steps or tab.steps)), True))
    return result


def preview(args: ScriptArgs, model: Optional[ModelInfo], tab: TabValues,
            merging: Callable[[bool], float] = lambda hires: 0.0) -> str:
    """Markdown: the family, then per pass what RAU-Net and MSW-MSA will do. ``merging(hires)``: the Token merging
    ratio the host will use on that pass (Settings); it merges the top level, where SD1/SD2 window (conflicts.py)."""
    if model is None:
        return "Resolved schedule: no model is loaded yet (Forge loads it at the first Generate)."
    try:
        plans = [plan_pass(args, model, PassSpec(name, (h // 8, w // 8), steps, hires))
                 for name, w, h, steps, hires in passes(tab)]
    except UnsupportedModelError as error:
        return f"Resolved schedule: {error}."
    lines = [f"**Resolved for {FAMILY_NAMES[plans[0].family]}**" + ("" if args.enabled else " (HiDiffusion is off)")]
    lines += [f"- {plan.describe(_merged_by(merging(plan.spec.hires)) if _windows_at_top(plan.family) else None)}"
              for plan in plans]
    return "\n".join(lines)


def _merged_by(ratio: float) -> Optional[str]:
    return f"Token merging (ratio {ratio:g}, Settings)" if ratio > 0 else None


def _windows_at_top(family: str) -> bool:
    """MSW-MSA windows the latent's own level (SD1/SD2), the one level the hosts' Token merging merges."""
    return plan_for(family).window_level == 0
