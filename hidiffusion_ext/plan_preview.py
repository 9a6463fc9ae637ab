"""What "Auto" resolves to for the tab's size, steps and loaded model: the text shown under the controls.

The generation itself decides per pass from the real latent (webui_session); this mirrors the same rules
(pass_gate, presets.resolve) on the values the tab shows, so the user sees the schedule before pressing Generate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from .pass_gate import native_latent, parts_for_pass
from .presets import detect_family, is_non_aggressive_model, resolve
from .script_args import ScriptArgs
from .step_tracking import img2img_executed_steps
from .unet_map import UNetMap, UnsupportedModelError

FAMILY_NAMES = {"sd15": "SD1/SD2", "sdxl": "SDXL", "sdxl_turbo": "SDXL Turbo"}


@dataclass(frozen=True)
class LoadedModel:
    unet_map: UNetMap
    name: str = ""
    v_768: bool = False  # SD2 768-v: native 768 px


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


def preview(args: ScriptArgs, model: Optional[LoadedModel], tab: TabValues) -> str:
    """Markdown: the family, then per pass what RAU-Net and MSW-MSA will do."""
    if model is None:
        return "Resolved schedule: no model is loaded yet (Forge loads it at the first Generate)."
    try:
        family = detect_family(model.unet_map, args.settings().family, model.name)
    except UnsupportedModelError as error:
        return f"Resolved schedule: {error}."
    native = native_latent(family, model.v_768)
    lines = [f"**Resolved for {FAMILY_NAMES[family]}**" + ("" if args.enabled else " (HiDiffusion is off)")]
    for name, w, h, steps, hires in passes(tab):
        latent = (h // 8, w // 8)
        raunet_ok, mswmsa_ok = parts_for_pass(args.apply_to, hires, latent, native)
        if not (raunet_ok or mswmsa_ok):
            lines.append(f"- {name} {w}x{h}: untouched (apply to: {args.apply_to})")
            continue
        if not args.raunet:
            rau = "RAU-Net off"
        elif not raunet_ok:
            rau = "RAU-Net off (auto: not above 1.5x the native area)"
        else:
            resolved = resolve(family, latent, steps, args.settings(),
                               is_non_aggressive_model(model.unet_map, model.name))
            rau = f"RAU-Net {resolved.describe()}"
        msw = "MSW-MSA on" if args.mswmsa else "MSW-MSA off"
        lines.append(f"- {name} {w}x{h}, {steps} steps: {rau}; {msw}")
    return "\n".join(lines)
