"""The one table of the script's controls. Each row declares a control once; everything else is derived from it:
the UI (label, tooltip, widget, row), the positional API order (row order), parsing and validation, the PNG info
key, the X/Y/Z axis, the Settings-page default and the HiDiffusionSettings field it feeds.

Adding a control is adding a row (tests/test_fields.py proves each consumer picks a new row up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

SWITCH, CHOICE, RATIO = "switch", "choice", "ratio"  # kinds: a bool, one of ``choices``, a number 0-1 or empty (auto)
WIDGETS = {SWITCH: "checkbox", CHOICE: "dropdown", RATIO: "textbox"}


@dataclass(frozen=True)
class Field:
    name: str  # API and X/Y/Z name; also ``hidiffusion_default_<name>`` on the Settings page
    kind: str
    default: Any
    label: str
    tooltip: str
    infotext: str  # PNG info key
    choices: Tuple[str, ...] = ()
    setting: Optional[str] = None  # the HiDiffusionSettings field this feeds; None = webui-only (enabled, apply_to)
    setting_values: Dict[str, Any] = field(default_factory=dict)  # choice -> settings value, when they differ
    aliases: Dict[str, str] = field(default_factory=dict)  # accepted spellings -> choice (API, pasted text)
    axis: Optional[str] = None  # X/Y/Z axis label after "[HiDiffusion] "; None = no axis
    always_written: bool = False  # PNG info even at the default (the switches)
    settings_page: bool = True  # a default on Settings -> HiDiffusion
    widget: str = ""  # "" = by kind; "radio" for short choice lists; "accordion" for the enable switch
    row: int = 0  # UI row inside the accordion (0 = the accordion itself)

    @property
    def widget_kind(self) -> str:
        return self.widget or WIDGETS[self.kind]

    def describe(self) -> str:
        """The allowed values, as the API documentation and error messages say them."""
        if self.kind == SWITCH:
            return "true or false"
        if self.kind == RATIO:
            return 'a number from 0 to 1, or null/"" for auto'
        return " | ".join(self.choices)


PRESET_FAMILIES = {"Auto": "auto", "SD1/SD2": "sd15", "SDXL": "sdxl", "SDXL Turbo": "sdxl_turbo"}

FIELDS: Tuple[Field, ...] = (
    Field("enabled", SWITCH, False, "HiDiffusion",
          "Generate above the model's trained resolution without duplicated subjects (RAU-Net + MSW-MSA, arXiv 2311.17528).",
          "HiDiffusion", axis="Enabled", always_written=True, widget="accordion"),
    Field("raunet", SWITCH, True, "RAU-Net",
          "Resolution-aware U-Net: the deep blocks run at the trained size for the first part of the steps "
          "(dilated downsample, block pooling).",
          "HiDiffusion RAU-Net", setting="raunet", axis="RAU-Net", always_written=True, row=1),
    Field("mswmsa", SWITCH, True, "MSW-MSA",
          "Top-level self-attention in 4 shifted windows: faster at large sizes. Switch it off first if odd sizes look worse.",
          "HiDiffusion MSW-MSA", setting="mswmsa", axis="MSW-MSA", always_written=True, row=1),
    Field("preset", CHOICE, "Auto", "HiDiffusion preset",
          "Auto reads the family from the U-Net. Choose SDXL Turbo for Turbo checkpoints whose name lacks 'turbo'.",
          "HiDiffusion preset", choices=tuple(PRESET_FAMILIES), setting="family", setting_values=PRESET_FAMILIES,
          aliases={family: label for label, family in PRESET_FAMILIES.items()}, axis="Preset", row=1),
    Field("t1", RATIO, None, "HiDiffusion T1 (empty = auto)",
          "Fraction of the steps for RAU-Net's main phase (SD1/SD2: dilated downsample; SDXL: pooling). "
          "Empty = reference default.",
          "HiDiffusion T1", setting="t1", axis="T1", settings_page=False, row=2),
    Field("t2", RATIO, None, "HiDiffusion T2 (empty = auto)",
          "Fraction of the steps for the second phase (SD1/SD2: pooling; SDXL: dilated downsample when not aggressive).",
          "HiDiffusion T2", setting="t2", axis="T2", settings_page=False, row=2),
    Field("aggressive", CHOICE, "auto", "SDXL aggressive phase",
          "SDXL below 4096 px: dilated downsample for the first 16% of steps, then pooling until T1. "
          "Auto: off for inpainting and Playground.",
          "HiDiffusion aggressive", choices=("auto", "on", "off"), setting="aggressive", axis="Aggressive",
          widget="radio", row=2),
    Field("apply_to", CHOICE, "auto", "Apply to",
          "auto: MSW-MSA on every pass, RAU-Net only on passes above 1.5x the native area "
          "(so only the hires pass with Hires. fix).",
          "HiDiffusion apply to", choices=("auto", "first pass", "hires pass", "both"), axis="Apply to", row=3),
    Field("odd_windows", CHOICE, "bicubic", "MSW-MSA at odd sizes",
          "bicubic: resize odd grids to even as the reference does; global: keep plain attention at that level.",
          "HiDiffusion odd windows", choices=("bicubic", "global"), setting="odd_windows", widget="radio", row=3),
)

NOTE_KEY = "HiDiffusion note"  # why a part did not run; not a control


def names() -> Tuple[str, ...]:
    """Field names in positional-API order."""
    return tuple(f.name for f in FIELDS)


def by_name(name: str) -> Field:
    return next(f for f in FIELDS if f.name == name)


def defaults() -> Dict[str, Any]:
    return {f.name: f.default for f in FIELDS}


def infotext_keys() -> Tuple[str, ...]:
    """Every PNG info key the extension writes (cleared before each image)."""
    return tuple(f.infotext for f in FIELDS) + (NOTE_KEY,)
