"""X/Y/Z plot axes, one per field that declares one. A cell's value goes onto its ``p`` as ``hidiffusion_<field>``
and wins over the UI value."""

from __future__ import annotations

from . import fields
from .fields import RATIO, SWITCH

ATTR_PREFIX = "hidiffusion_"
LABEL_PREFIX = "[HiDiffusion] "
BOOL_CHOICES = ("True", "False")


def axes():
    """(label, field name, value type, choices or None) per axis, in table order."""
    result = []
    for f in fields.FIELDS:
        if f.axis is None:
            continue
        if f.kind == RATIO:
            result.append((LABEL_PREFIX + f.axis, f.name, float, None))
        else:
            result.append((LABEL_PREFIX + f.axis, f.name, str, list(BOOL_CHOICES if f.kind == SWITCH else f.choices)))
    return tuple(result)


def overrides(p) -> dict:
    """The X/Y/Z values set on this cell's ``p``."""
    return {name: getattr(p, ATTR_PREFIX + name) for _, name, _, _ in axes() if hasattr(p, ATTR_PREFIX + name)}


def find_xyz_module(scripts_data):
    """The X/Y/Z plot script's module: by its name first, else by what it has (Forge Neo moves the script into
    extensions-builtin/xyz; any copy that keeps the AxisOption API is found wherever it lives)."""
    # The module name is the file's basename ("xyz_grid.py"); 1.9.0-1.9.1 used "scripts.xyz_grid".
    for data in scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid") and hasattr(data, "module"):
            return data.module
    for data in scripts_data:
        module = getattr(data, "module", None)
        if isinstance(getattr(module, "axis_options", None), list) and hasattr(module, "AxisOption"):
            return module
    return None


def register(scripts_data) -> bool:
    """Add the axes once; False when the X/Y/Z script is not there."""
    xyz = find_xyz_module(scripts_data)
    if xyz is None:
        return False
    existing = {option.label for option in xyz.axis_options}
    for label, name, kind, choices in axes():
        if label in existing:
            continue
        extra = {"choices": (lambda c=choices: list(c))} if choices else {}
        xyz.axis_options.append(xyz.AxisOption(label, kind, _apply(name), **extra))
    return True


def _apply(name: str):
    def apply(p, x, xs):
        setattr(p, ATTR_PREFIX + name, x)

    return apply
