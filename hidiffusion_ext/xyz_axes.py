"""X/Y/Z plot axes. Values go onto the cell's ``p`` as ``hidiffusion_<field>`` and win over the UI values."""

from __future__ import annotations

from .script_args import AGGRESSIVE, APPLY_TO, PRESETS

ATTR_PREFIX = "hidiffusion_"
BOOL_CHOICES = ["True", "False"]
AXES = (  # (label, field, type, choices)
    ("[HiDiffusion] Enabled", "enabled", str, BOOL_CHOICES),
    ("[HiDiffusion] RAU-Net", "raunet", str, BOOL_CHOICES),
    ("[HiDiffusion] MSW-MSA", "mswmsa", str, BOOL_CHOICES),
    ("[HiDiffusion] T1", "t1", float, None),
    ("[HiDiffusion] T2", "t2", float, None),
    ("[HiDiffusion] Apply to", "apply_to", str, list(APPLY_TO)),
    ("[HiDiffusion] Preset", "preset", str, list(PRESETS)),
    ("[HiDiffusion] Aggressive", "aggressive", str, list(AGGRESSIVE)),
)


def overrides(p) -> dict:
    """The X/Y/Z values set on this cell's ``p``."""
    return {name: getattr(p, ATTR_PREFIX + name) for _, name, _, _ in AXES if hasattr(p, ATTR_PREFIX + name)}


def find_xyz_module(scripts_data):
    # The module name is the file's basename ("xyz_grid.py"); 1.9.0-1.9.1 used "scripts.xyz_grid".
    for data in scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid") and hasattr(data, "module"):
            return data.module
    return None


def register(scripts_data) -> bool:
    """Add the axes once; False when the X/Y/Z script is not there."""
    xyz = find_xyz_module(scripts_data)
    if xyz is None:
        return False
    existing = {option.label for option in xyz.axis_options}
    for label, name, kind, choices in AXES:
        if label in existing:
            continue
        extra = {"choices": (lambda c=choices: list(c))} if choices else {}
        xyz.axis_options.append(xyz.AxisOption(label, kind, _apply(name), **extra))
    return True


def _apply(name: str):
    def apply(p, x, xs):
        setattr(p, ATTR_PREFIX + name, x)

    return apply
