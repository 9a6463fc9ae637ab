"""HiDiffusion (RAU-Net + MSW-MSA, arXiv 2311.17528) for ldm/sgm U-Nets, with A1111 and Forge adapters.

The core (this package minus the host adapters) imports only torch; it never imports the webui.
"""

from .settings import HiDiffusionSettings
from .unet_map import UnsupportedModelError, inspect_unet
from .unet_patch import HiDiffusionHandle, active_handle, apply_hidiffusion, remove_hidiffusion

__all__ = [
    "HiDiffusionSettings",
    "HiDiffusionHandle",
    "UnsupportedModelError",
    "apply_hidiffusion",
    "remove_hidiffusion",
    "active_handle",
    "inspect_unet",
]
__version__ = "0.1.0"
