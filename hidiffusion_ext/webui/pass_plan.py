"""The one decision per sampling pass: which parts run, for how many steps, with which seed, family and schedule.

The generation session patches from it, and the readout shows it before Generate, so both always say the same.
"apply to" picks the passes; its "auto" runs MSW-MSA on every pass and RAU-Net only on passes whose latent area
is more than 1.5x the model's native area (SD1 512², SD2 512² or 768², SDXL 1024², Turbo 512²): a 512x768 SD1.5
image or a 1216x832 SDXL image stays untouched by RAU-Net, while a 1024² SD1.5 or 2048² SDXL pass gets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..core.cost_model import describe_saving, schedule_ratio
from ..core.presets import ResolvedSchedule, block_roles, detect_family, is_non_aggressive_model, plan_for, resolve
from ..core.settings import HiDiffusionSettings
from ..core.unet_map import UNetMap
from .arguments import ScriptArgs

NATIVE_LATENT = {"sd15": 64, "sdxl": 128, "sdxl_turbo": 64}  # SDXL-Turbo is trained at 512 px
AUTO_AREA_FACTOR = 1.5
AUTO_GATE_NOTE = "auto: not above 1.5x the native area"


@dataclass(frozen=True)
class ModelInfo:
    """What a plan needs to know of the loaded model; the U-Net is inspected once per pass to make it."""

    unet_map: UNetMap
    name: str = ""
    v_768: bool = False  # SD2 768-v: native 768 px


@dataclass(frozen=True)
class PassSpec:
    """A sampling pass as the host describes it."""

    name: str  # "first pass" / "hires pass"
    latent_hw: Tuple[int, int]
    steps: int  # the steps this pass samples (hires steps, img2img's executed steps)
    hires: bool = False
    seed: int = 0  # drives the window shifts


@dataclass(frozen=True)
class PassPlan:
    spec: PassSpec
    family: str
    raunet: bool  # RAU-Net runs on this pass (switched on, and allowed by "apply to")
    mswmsa: bool
    untouched_reason: Optional[str]  # set when neither part runs because of "apply to"
    raunet_off_reason: Optional[str]  # set when RAU-Net is on but not allowed on this pass
    settings: HiDiffusionSettings  # what the adapter gets: family resolved, parts as decided
    resolved: ResolvedSchedule
    compute_ratio: float = 1.0  # the cost model's U-Net compute with HiDiffusion over without (core/cost_model.py)

    @property
    def touched(self) -> bool:
        return self.raunet or self.mswmsa

    @property
    def pixel_size(self) -> Tuple[int, int]:
        return self.spec.latent_hw[1] * 8, self.spec.latent_hw[0] * 8

    def describe(self, windows_left_to: Optional[str] = None, raunet_left_to: Optional[str] = None) -> str:
        """One line per pass, as the readout shows it; ``windows_left_to`` / ``raunet_left_to``: a tool MSW-MSA /
        RAU-Net will yield to."""
        w, h = self.pixel_size
        if self.untouched_reason:
            return f"{self.spec.name} {w}x{h}: untouched ({self.untouched_reason})"
        if self.raunet and raunet_left_to:
            rau = f"RAU-Net left to {raunet_left_to}"
        elif self.raunet:
            rau = f"RAU-Net {self.resolved.describe()}"
        else:
            rau = "RAU-Net off" + (f" ({self.raunet_off_reason})" if self.raunet_off_reason else "")
        msw = "MSW-MSA on" if self.mswmsa else "MSW-MSA off"
        if self.mswmsa and windows_left_to:
            msw = f"MSW-MSA left to {windows_left_to}"
        # the cost model counts both parts: a part left to another tool makes its figure wrong, so none is given
        saving = ("saving not predicted (a part is left to another tool)" if windows_left_to and self.mswmsa
                  or raunet_left_to and self.raunet else describe_saving(self.compute_ratio))
        return f"{self.spec.name} {w}x{h}, {self.spec.steps} steps: {rau}; {msw}; {saving}"


def native_latent(family: str, v_prediction_768: bool = False) -> int:
    return 96 if family == "sd15" and v_prediction_768 else NATIVE_LATENT[family]


def above_native(latent_hw: Tuple[int, int], native: int) -> bool:
    return latent_hw[0] * latent_hw[1] > AUTO_AREA_FACTOR * native * native


def parts_for_pass(apply_to: str, is_hires_pass: bool, latent_hw: Tuple[int, int], native: int) -> Tuple[bool, bool]:
    """(RAU-Net allowed, MSW-MSA allowed) for this pass, before the user's own on/off switches."""
    if apply_to == "first pass" and is_hires_pass or apply_to == "hires pass" and not is_hires_pass:
        return False, False
    if apply_to == "auto":
        return above_native(latent_hw, native), True
    return True, True


def plan_pass(args: ScriptArgs, model: ModelInfo, spec: PassSpec) -> PassPlan:
    """Decide one pass. Raises UnsupportedModelError when the model (or the chosen preset) does not fit."""
    family = detect_family(model.unet_map, args.settings().family, model.name)
    raunet_ok, mswmsa_ok = parts_for_pass(args.apply_to, spec.hires, spec.latent_hw, native_latent(family, model.v_768))
    raunet, mswmsa = args.raunet and raunet_ok, args.mswmsa and mswmsa_ok
    settings = args.settings(raunet=raunet, mswmsa=mswmsa, family=family)
    resolved = resolve(family, spec.latent_hw, spec.steps, settings, is_non_aggressive_model(model.unet_map, model.name))
    roles = block_roles(model.unet_map, plan_for(family))
    return PassPlan(
        spec=spec, family=family, raunet=raunet, mswmsa=mswmsa,
        untouched_reason=None if (raunet_ok or mswmsa_ok) else f"apply to: {args.apply_to}",
        raunet_off_reason=AUTO_GATE_NOTE if args.raunet and not raunet_ok else None,
        settings=settings, resolved=resolved,
        compute_ratio=schedule_ratio(model.unet_map, roles, family, spec.latent_hw, resolved.schedule, raunet, mswmsa),
    )
