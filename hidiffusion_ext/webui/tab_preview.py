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
from .other_tools import OtherTools
from .pass_plan import ModelInfo, PassPlan, PassSpec, plan_pass
from .schedule_strip import pass_strip, strip_html
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
    note: str = ""  # where the size came from, when not the Width/Height boxes (img2img's Resize by)


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


@dataclass
class Preview:
    """The readout for the tab's values: the Markdown line per pass and the schedule strip (HTML)."""

    text: str
    strip: str = ""


def preview(args: ScriptArgs, model: Optional[ModelInfo], tab: TabValues,
            tools: Callable[[bool], OtherTools] = lambda hires: OtherTools()) -> Preview:
    """The family, then per pass what RAU-Net and MSW-MSA will do. ``tools(hires)``: what the other tools the page
    and Settings show will take of that pass (other_tools.py)."""
    if model is None:
        return Preview("Resolved schedule: no model is loaded yet (Forge loads it at the first Generate).")
    try:
        plans = [plan_pass(args, model, PassSpec(name, (h // 8, w // 8), steps, hires))
                 for name, w, h, steps, hires in passes(tab)]
    except UnsupportedModelError as error:
        return Preview(f"Resolved schedule: {error}.")
    lines = [f"**Resolved for {FAMILY_NAMES[plans[0].family]}**" + (f" · {model.name}" if model.name else "")
             + ("" if args.enabled else " (HiDiffusion is off)")]  # the name: a checkpoint switch shows
    if tab.note:
        lines[0] += f" ({tab.note})"
    rows = []
    for plan in plans:
        other = tools(plan.spec.hires)
        windows = other.windows_left_to(_windows_at_top(plan.family))
        raunet_left_to = other.deep_shrink or None
        line = plan.describe(windows, raunet_left_to)
        if other.tiler and plan.raunet and not raunet_left_to:
            line += f"; {other.tiler} tiles: tiles at or below the native size without RAU-Net"
        lines.append(f"- {line}")
        rows.append(pass_strip(plan, _windows_word(plan, windows), raunet_left_to))
    return Preview("\n".join(lines), strip_html(rows, args.enabled))


def _windows_word(plan: PassPlan, left_to: Optional[str]) -> str:
    if not plan.mswmsa:
        return "MSW-MSA off"
    return f"MSW-MSA left to {left_to}" if left_to else "MSW-MSA on"


def _windows_at_top(family: str) -> bool:
    """MSW-MSA windows the latent's own level (SD1/SD2), the one level the hosts' Token merging merges."""
    return plan_for(family).window_level == 0
