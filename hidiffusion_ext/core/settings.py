"""Every HiDiffusion knob in one validated, immutable record.

Defaults mean "as the reference does it" (docs/design.md §8).
A field left at None/"auto" is resolved per model family and resolution class when a forward runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

FAMILIES = ("auto", "sd15", "sdxl", "sdxl_turbo")
AGGRESSIVE_CHOICES = ("auto", "on", "off")
ODD_WINDOW_CHOICES = ("bicubic", "global")


@dataclass(frozen=True)
class HiDiffusionSettings:
    """HiDiffusion parameters; invalid values raise ``ValueError`` naming the field.

    raunet / mswmsa: switch the two halves of the method on or off.
    family: which reference plan to use ("auto" reads it from the U-Net's structure and the model name).
    t1 / t2: the reference's T1_ratio / T2_ratio (None = preset). SD1/SD2: t1 ends the dilated downsample,
        t2 ends the block pooling. SDXL: t1 ends the pooling, t2 ends the dilated downsample when not aggressive.
    aggressive: SDXL only; "auto" = on below 4096 px unless the model is an inpainting or Playground model.
    aggressive_ratio: SDXL aggressive phase; the dilated downsample runs for steps < int(aggressive_ratio * N)
        and pooling takes over until int(t1 * N). None = the reference's 8/50.
    odd_windows: MSW-MSA at a level whose height or width is odd: "bicubic" resizes to an even grid as the
        reference does (design.md §5 step 3); "global" keeps plain attention at that level for that call.
    """

    raunet: bool = True
    mswmsa: bool = True
    family: str = "auto"
    t1: Optional[float] = None
    t2: Optional[float] = None
    aggressive: str = "auto"
    aggressive_ratio: Optional[float] = None
    odd_windows: str = "bicubic"

    def __post_init__(self):
        _check_bool("raunet", self.raunet)
        _check_bool("mswmsa", self.mswmsa)
        _check_choice("family", self.family, FAMILIES)
        _check_choice("aggressive", self.aggressive, AGGRESSIVE_CHOICES)
        _check_choice("odd_windows", self.odd_windows, ODD_WINDOW_CHOICES)
        for name in ("t1", "t2", "aggressive_ratio"):
            _check_ratio(name, getattr(self, name))

    def replace(self, **changes) -> HiDiffusionSettings:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown HiDiffusion setting {unknown[0]!r}; allowed: {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)


def field_names() -> tuple:
    return tuple(f.name for f in dataclasses.fields(HiDiffusionSettings))


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_ratio(name, value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number from 0 to 1 or empty for auto, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be from 0 to 1 (a fraction of the sampling steps), got {value!r}")
