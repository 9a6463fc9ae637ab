"""PNG info: written only for images HiDiffusion really changed, read back on paste; keys come from the field table.

Only values that differ from the built-in defaults are written (besides the switches), and a paste fills every
missing key with its default, so pasting an image made without HiDiffusion turns it off.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from . import fields
from .arguments import ScriptArgs, parse_named, parse_value
from .fields import NOTE_KEY, RATIO


def to_infotext(args: ScriptArgs, note: Optional[str] = None) -> Dict[str, Any]:
    params = {}
    for f in fields.FIELDS:
        value = getattr(args, f.name)
        if f.always_written or value != f.default:
            params[f.infotext] = value
    if note:
        params[NOTE_KEY] = note
    return params


def field_value(params: Dict[str, Any], name: str):
    """The control value for ``name`` from parsed infotext (strings), the default for a missing key."""
    field = fields.by_name(name)
    raw = params.get(field.infotext)
    if raw is None:
        return control_value(field, field.default)
    if field.kind == RATIO:
        return str(raw)  # shown as pasted: a bad number stays visible, and the readout names the problem
    return parse_value(field, raw)


def control_value(field: fields.Field, value):
    """What the UI control shows for ``value``: ratio text boxes show "" for auto."""
    if field.kind == RATIO:
        return "" if value is None else str(value)
    return value


def from_infotext(params: Dict[str, Any]) -> ScriptArgs:
    """Parse pasted infotext into arguments; raises HiDiffusionArgumentError naming the bad key."""
    return parse_named({f.name: params[f.infotext] for f in fields.FIELDS if f.infotext in params})
