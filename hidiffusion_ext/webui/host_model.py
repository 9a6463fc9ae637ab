"""What the extension reads off the webui's loaded model object (A1111 ldm/sgm engine or Forge engine)."""

from __future__ import annotations

from typing import Optional

from ..core.unet_map import inspect_unet
from .pass_plan import ModelInfo


def forge_objects(sd_model):
    return getattr(sd_model, "forge_objects", None)


def diffusion_model(sd_model):
    """The U-Net module: Forge keeps it in its UnetPatcher, A1111 under ``model.diffusion_model``."""
    forge = forge_objects(sd_model)
    if forge is not None:
        return forge.unet.model.diffusion_model
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def model_name(sd_model) -> str:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    return str(getattr(info, "name_for_extra", None) or getattr(info, "title", None) or "")


def is_v_768(sd_model) -> bool:
    return bool(getattr(sd_model, "is_sd2", False)) and getattr(sd_model, "parameterization", "") == "v"


def model_info(sd_model, unet=None) -> Optional[ModelInfo]:
    """The model as a pass plan needs it (its U-Net inspected once); None when no model is loaded.

    Raises UnsupportedModelError for a model HiDiffusion does not apply to (Flux, SD3, the SDXL refiner).
    """
    unet = diffusion_model(sd_model) if unet is None and sd_model is not None else unet
    if unet is None:
        return None
    return ModelInfo(inspect_unet(unet), model_name(sd_model), is_v_768(sd_model))
