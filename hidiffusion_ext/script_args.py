"""The script's arguments: one order for the UI, the positional API and X/Y/Z, one validation for all.

No webui import: the script hands over whatever arrived (UI values, a positional list, or one dict of
named fields) and gets ScriptArgs or a HiDiffusionArgumentError that names the field and the allowed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from .settings import HiDiffusionSettings

PRESETS = {"Auto": "auto", "SD1/SD2": "sd15", "SDXL": "sdxl", "SDXL Turbo": "sdxl_turbo"}
APPLY_TO = ("auto", "first pass", "hires pass", "both")
AGGRESSIVE = ("auto", "on", "off")
ODD_WINDOWS = ("bicubic", "global")

# (name, default, description) in ui() order: the positional API order.
FIELDS = (
    ("enabled", False, "bool"),
    ("raunet", True, "bool"),
    ("mswmsa", True, "bool"),
    ("preset", "Auto", " | ".join(PRESETS)),
    ("t1", None, "number 0-1, or null/\"\" for auto"),
    ("t2", None, "number 0-1, or null/\"\" for auto"),
    ("aggressive", "auto", " | ".join(AGGRESSIVE)),
    ("apply_to", "auto", " | ".join(APPLY_TO)),
    ("odd_windows", "bicubic", " | ".join(ODD_WINDOWS)),
)
NAMES = tuple(name for name, _, _ in FIELDS)
DEFAULTS = {name: default for name, default, _ in FIELDS}


try:  # Both webuis answer a FastAPI HTTPException with its status and detail, and print no traceback for it.
    from fastapi import HTTPException as _ApiError
except ImportError:  # outside a webui: a plain ValueError still carries status_code/detail
    _ApiError = Exception


class HiDiffusionArgumentError(_ApiError, ValueError):
    """Bad script arguments. ``status_code``/``detail`` make the webui API answer 422 with this message."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.status_code = 422
        self.detail = message
        self.headers = None

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class ScriptArgs:
    enabled: bool = False
    raunet: bool = True
    mswmsa: bool = True
    preset: str = "Auto"
    t1: Optional[float] = None
    t2: Optional[float] = None
    aggressive: str = "auto"
    apply_to: str = "auto"
    odd_windows: str = "bicubic"

    def settings(self, raunet: Optional[bool] = None) -> HiDiffusionSettings:
        return HiDiffusionSettings(
            raunet=self.raunet if raunet is None else raunet,
            mswmsa=self.mswmsa,
            family=PRESETS[self.preset],
            t1=self.t1,
            t2=self.t2,
            aggressive=self.aggressive,
            odd_windows=self.odd_windows,
        )

    def as_list(self) -> list:
        return [getattr(self, name) for name in NAMES]


def parse(values: Sequence[Any]) -> ScriptArgs:
    """From the script's ``*args``: positional values in FIELDS order, or a single dict of named fields."""
    values = list(values)
    if values and isinstance(values[0], dict):
        return _from_named(values[0])  # the API pads the other slots with UI defaults; only the dict counts
    if len(values) > len(NAMES):
        values = values[: len(NAMES)]
    padded = values + [DEFAULTS[name] for name in NAMES[len(values):]]
    return _validated(dict(zip(NAMES, padded)))


def _from_named(named: Dict[str, Any]) -> ScriptArgs:
    unknown = sorted(set(named) - set(NAMES))
    if unknown:
        raise HiDiffusionArgumentError(
            f"HiDiffusion: unknown field {unknown[0]!r}; allowed fields: {', '.join(NAMES)}"
        )
    return _validated({**DEFAULTS, **named})


def _validated(raw: Dict[str, Any]) -> ScriptArgs:
    out = {}
    for name, _, allowed in FIELDS:
        value = raw[name]
        if allowed == "bool":
            out[name] = _bool(name, value)
        elif name in ("t1", "t2"):
            out[name] = _ratio(name, value)
        else:
            choices = {"preset": PRESETS, "aggressive": AGGRESSIVE, "apply_to": APPLY_TO, "odd_windows": ODD_WINDOWS}[name]
            out[name] = _choice(name, value, choices)
    return ScriptArgs(**out)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # X/Y/Z and pasted text
        return value.strip().lower() == "true"
    raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be true or false, got {value!r}")


def _ratio(name: str, value: Any) -> Optional[float]:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    if isinstance(value, bool):
        raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be a number from 0 to 1 or empty for auto, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HiDiffusionArgumentError(
            f"HiDiffusion: {name} must be a number from 0 to 1 or empty for auto, got {value!r}"
        ) from None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be from 0 to 1 (a fraction of the steps), got {value!r}")
    return number


def _choice(name: str, value: Any, choices) -> str:
    if isinstance(value, str):
        for choice in choices:  # case-insensitive, so "SDXL" and "sdxl" both work from the API
            if value.strip().lower() == choice.lower():
                return choice
        if name == "preset":  # accept the internal family names too
            for label, family in PRESETS.items():
                if value.strip().lower() == family:
                    return label
    raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be one of {', '.join(choices)}; got {value!r}")
