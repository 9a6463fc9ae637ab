"""The script's arguments: parsed and validated the same way from the UI, the positional API, a dict of named
fields, X/Y/Z values and pasted PNG info, by the rules of the field table (fields.py).

The script hands over whatever arrived and gets ScriptArgs, or a HiDiffusionArgumentError that names the field
and the allowed values.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any, Dict, Optional, Sequence

from ..core.settings import HiDiffusionSettings
from . import fields
from .fields import RATIO, SWITCH

try:  # Both webuis answer a FastAPI HTTPException with its status and detail, and print no traceback for it.
    from fastapi import HTTPException

    _ERROR_BASES: tuple = (HTTPException, ValueError)
except ImportError:  # outside a webui: a plain ValueError that still carries status_code/detail
    _ERROR_BASES = (ValueError,)

SHOWN_VALUE_CHARS = 60  # a value quoted in an error is cut to this: a 100 kB string must not make a 100 kB message
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = SHOWN_VALUE_CHARS


class HiDiffusionArgumentError(*_ERROR_BASES):
    """Bad script arguments. ``status_code``/``detail`` make the webui API answer 422 with this message."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.status_code = 422
        self.detail = message
        self.headers = None

    def __str__(self) -> str:
        return self.detail


class ScriptArgs:
    """One value per field of the table, validated; immutable. ``ScriptArgs(t1=0.4)`` fills the rest with defaults."""

    __slots__ = ("_values",)

    def __init__(self, **values):
        unknown = sorted(set(values) - set(fields.names()))
        if unknown:
            raise TypeError(f"unknown HiDiffusion field {unknown[0]!r}")
        object.__setattr__(self, "_values", {**fields.defaults(), **values})

    def __getattr__(self, name: str):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("ScriptArgs is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, ScriptArgs) and self._values == other._values

    def __hash__(self):
        return hash(tuple(sorted(self._values.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        return "ScriptArgs(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def as_dict(self) -> Dict[str, Any]:
        return dict(self._values)

    def as_list(self) -> list:
        return [self._values[name] for name in fields.names()]

    def settings(self, **overrides) -> HiDiffusionSettings:
        """The core settings these arguments ask for; ``overrides`` replace fields by their settings name."""
        values = {}
        for f in fields.FIELDS:
            if f.setting is not None:
                value = self._values[f.name]
                values[f.setting] = f.setting_values.get(value, value)
        return HiDiffusionSettings(**{**values, **overrides})


def parse(values: Sequence[Any]) -> ScriptArgs:
    """From the script's ``*args``: positional values in table order, or a single dict of named fields."""
    values = list(values)
    if values and isinstance(values[0], dict):
        return parse_named(values[0])  # the API pads the other slots with UI defaults; only the dict counts
    names = fields.names()
    values = values[: len(names)]
    padded = values + [fields.by_name(name).default for name in names[len(values):]]
    return _validated(dict(zip(names, padded)))


def parse_named(named: Dict[str, Any]) -> ScriptArgs:
    unknown = [key for key in named if key not in fields.names()]  # keys need not be strings, nor sortable together
    if unknown:
        raise HiDiffusionArgumentError(
            f"HiDiffusion: unknown field {shown(unknown[0])}; allowed fields: {', '.join(fields.names())}"
        )
    return _validated({**fields.defaults(), **named})


def shown(value: Any) -> str:
    """The value for an error message, at most SHOWN_VALUE_CHARS long, whatever arrived."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {math.floor(math.log10(abs(value))) + 1} digits"  # str() refuses > 4300 digits
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # such an int inside a list, a recursive container, a broken __repr__
        text = f"a {type(value).__name__}"
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def parse_value(field: fields.Field, value: Any):
    """One field's value, validated and normalised (a choice in its canonical spelling)."""
    if field.kind == SWITCH:
        return _switch(field.name, value)
    if field.kind == RATIO:
        return _ratio(field.name, value)
    return _choice(field, value)


def _validated(raw: Dict[str, Any]) -> ScriptArgs:
    return ScriptArgs(**{f.name: parse_value(f, raw[f.name]) for f in fields.FIELDS})


def _switch(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # X/Y/Z and pasted text
        return value.strip().lower() == "true"
    raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be true or false, got {shown(value)}")


def _ratio(name: str, value: Any) -> Optional[float]:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    number = _real(value)
    if number is None:
        raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be a number from 0 to 1 or empty for auto, got {shown(value)}")
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise HiDiffusionArgumentError(f"HiDiffusion: {name} must be from 0 to 1 (a fraction of the steps), got {shown(value)}")
    return number


def _real(value: Any) -> Optional[float]:
    """A real number (int of any size, float, numpy scalar) or its text as a float; None for anything else.
    Bools are not numbers here: ``true`` in a ratio field is a mistake, not 1.0. Beyond float's range -> +-inf."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        try:
            return float(value)
        except OverflowError:  # JSON carries integers of any length
            return math.inf if value > 0 else -math.inf
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # decimal text of any length parses (a huge one to inf); "nan" is refused by the caller
        except ValueError:
            return None
    return None


def _choice(field: fields.Field, value: Any) -> str:
    if isinstance(value, str):
        wanted = value.strip().lower()
        for choice in field.choices:  # case-insensitive, so "SDXL" and "sdxl" both work from the API
            if wanted == choice.lower():
                return choice
        for alias, choice in field.aliases.items():  # e.g. the internal family names for the preset
            if wanted == alias.lower():
                return choice
    raise HiDiffusionArgumentError(f"HiDiffusion: {field.name} must be one of {', '.join(field.choices)}; got {shown(value)}")
