"""HiDiffusion (RAU-Net + MSW-MSA, arXiv 2311.17528) for ldm/sgm U-Nets, with A1111 and Forge adapters.

This module is the public Python API. The layers below it (docs/design.md §10):
- core/: the algorithm (settings, structure map, presets, schedule, RAU-Net and MSW-MSA ops, shifts, pass state);
  torch only, never a webui.
- ldm/: the ldm/sgm adapter (A1111) and its patch ledger.
- forge/: the Forge adapter (patches on a UnetPatcher clone).
- webui/: the glue shared by both webuis (field table, arguments, infotext, X/Y/Z, UI, readout, session).
- devtools/: benchmark, test models and the parity harness; never imported at run time.
"""

import importlib
import sys

from .core.pass_state import PassStats
from .core.settings import HiDiffusionSettings
from .core.unet_map import UnsupportedModelError, inspect_unet
from .ldm.unet_patch import HiDiffusionHandle, active_handle, apply_hidiffusion, remove_hidiffusion

__all__ = [
    "HiDiffusionSettings",
    "HiDiffusionHandle",
    "PassStats",
    "UnsupportedModelError",
    "apply_hidiffusion",
    "remove_hidiffusion",
    "active_handle",
    "inspect_unet",
]
__version__ = "0.4.0"

# Module paths of 0.1 (one flat package) that Python-API users may import: they stay importable.
_MOVED = {"settings": "core.settings", "unet_map": "core.unet_map", "presets": "core.presets",
          "schedule": "core.schedule", "raunet": "core.raunet", "msw_msa": "core.msw_msa", "shifts": "core.shifts",
          "unet_patch": "ldm.unet_patch", "forge_patch": "forge.unet_patch"}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = globals()[_old] = importlib.import_module(f".{_new}", __name__)
