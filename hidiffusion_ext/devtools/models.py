"""Random-weight ldm U-Nets in the shapes of SD1, SD2 and SDXL, and their diffusers twins.

For tests and the benchmark only: needs Stability's ``ldm`` package (``stable-diffusion-sdkit``) and,
for the reference twin, ``diffusers`` (0.27.2). Never imported by the extension at run time.

This ldm handles transformer depth 1 only, so the SDXL-like net keeps SDXL's levels, channel multipliers
and attention placement (ds 2, 4) with depth-1 transformers and no label embedding (see docs/testing.md, Fidelity).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

# Names the reference keys its plans on (design.md §2).
REFERENCE_NAMES = {
    "sd1": "runwayml/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1-base",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl_turbo": "stabilityai/sdxl-turbo",
    "sdxl_inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}


def unet_params(shape: str, width: int = 32, in_channels: int = 4) -> dict:
    """ldm ``UNetModel`` params for a family shape at ``width`` base channels (real models: 320)."""
    common = dict(
        image_size=32, in_channels=in_channels, out_channels=4, model_channels=width, num_res_blocks=2,
        use_spatial_transformer=True, transformer_depth=1, legacy=False, use_checkpoint=False,
    )
    if shape == "sd1":  # SD1.x: conv projections, num_heads fixed
        return dict(common, attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_heads=2,
                    context_dim=max(32, width), use_linear_in_transformer=False)
    if shape == "sd2":  # SD2.x: linear projections, head channels fixed
        return dict(common, attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_head_channels=16,
                    context_dim=max(48, width), use_linear_in_transformer=True)
    if shape in ("sdxl", "sdxl_turbo", "sdxl_inpaint"):  # SDXL: 3 levels, no attention at level 0
        return dict(common, attention_resolutions=[4, 2], channel_mult=[1, 2, 4], num_head_channels=width // 2,
                    context_dim=max(64, 2 * width), use_linear_in_transformer=True)
    if shape == "refiner":  # SDXL refiner: 4 levels, no attention at level 0
        return dict(common, attention_resolutions=[4, 2], channel_mult=[1, 2, 4, 4], num_head_channels=16,
                    context_dim=max(48, width), use_linear_in_transformer=True)
    raise ValueError(f"unknown shape {shape!r}")


def build_ldm_unet(params: dict, seed: int = 0):
    """A random-weight ldm UNetModel; zero-initialised output layers are re-randomised so patches show."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    unet = UNetModel(**params).eval()
    for module in unet.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() and not weight.any() and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return unet.requires_grad_(False)


def to_diffusers(unet, params: dict, name_or_path: str):
    """The same weights as a diffusers UNet2DConditionModel, via diffusers' own ldm converter."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config

    original_config = {"model": {"params": {
        "unet_config": {"params": params},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
    }}}
    config = create_unet_diffusers_config(original_config, image_size=params["image_size"] * 8)
    checkpoint = {f"model.diffusion_model.{k}": v.clone() for k, v in unet.state_dict().items()}
    state = convert_ldm_unet_checkpoint(checkpoint, config)
    twin = UNet2DConditionModel(**config)
    twin.load_state_dict(state)
    twin.eval().requires_grad_(False)
    twin.name_or_path = name_or_path  # the reference reads it to pick its plan (design.md §1.1)
    return twin


def reference_pair(shape: str, width: int = 32, seed: int = 0, in_channels: Optional[int] = None):
    """(ldm unet, diffusers twin, params) with identical weights."""
    channels = in_channels or (9 if shape == "sdxl_inpaint" else 4)
    params = unet_params(shape, width, channels)
    unet = build_ldm_unet(params, seed)
    return unet, to_diffusers(unet, copy.deepcopy(params), REFERENCE_NAMES[shape]), params
