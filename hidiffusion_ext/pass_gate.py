"""Which sampling passes get HiDiffusion ("apply to"), and the native-resolution gate of "auto".

"auto": MSW-MSA on every pass (when switched on); RAU-Net only on passes whose latent area is more than
1.5x the model's native area (SD1 512², SD2 512² or 768², SDXL 1024²), so a 512x768 SD1.5 image or a
1216x832 SDXL image stays untouched by RAU-Net while a 1024² SD1.5 or 2048² SDXL pass gets it.
"""

from __future__ import annotations

from typing import Tuple

NATIVE_LATENT = {"sd15": 64, "sdxl": 128, "sdxl_turbo": 64}  # SDXL-Turbo is trained at 512 px
AUTO_AREA_FACTOR = 1.5


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
