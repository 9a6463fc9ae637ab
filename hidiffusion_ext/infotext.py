"""PNG info keys: written only for passes HiDiffusion really changed, read back on paste.

Only values that differ from the built-in defaults are written (besides the switches), and a paste fills
every missing key with its default, so pasting an image made without HiDiffusion turns it off.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .script_args import DEFAULTS, ScriptArgs, parse

KEYS = {
    "enabled": "HiDiffusion",
    "raunet": "HiDiffusion RAU-Net",
    "mswmsa": "HiDiffusion MSW-MSA",
    "preset": "HiDiffusion preset",
    "t1": "HiDiffusion T1",
    "t2": "HiDiffusion T2",
    "aggressive": "HiDiffusion aggressive",
    "apply_to": "HiDiffusion apply to",
    "odd_windows": "HiDiffusion odd windows",
}
NOTE_KEY = "HiDiffusion note"  # e.g. why RAU-Net was skipped
ALWAYS_WRITTEN = ("enabled", "raunet", "mswmsa")
ALL_KEYS = tuple(KEYS.values()) + (NOTE_KEY,)


def to_infotext(args: ScriptArgs, note: Optional[str] = None) -> Dict[str, Any]:
    params = {}
    for name, key in KEYS.items():
        value = getattr(args, name)
        if name in ALWAYS_WRITTEN or value != DEFAULTS[name]:
            params[key] = value
    if note:
        params[NOTE_KEY] = note
    return params


def field_value(params: Dict[str, Any], name: str):
    """The control value for ``name`` from parsed infotext (strings), defaults for missing keys."""
    raw = params.get(KEYS[name])
    if raw is None:
        return DEFAULTS[name]
    if name in ("t1", "t2"):
        return str(raw)  # the controls are text boxes ("" = auto)
    return parse([{name: raw}]).as_list()[list(KEYS).index(name)]


def from_infotext(params: Dict[str, Any]) -> ScriptArgs:
    """Parse pasted infotext into arguments; raises HiDiffusionArgumentError naming the bad key."""
    named = {name: params[key] for name, key in KEYS.items() if key in params}
    return parse([named])
