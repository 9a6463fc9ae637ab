"""What Tiled Diffusion's own tiling code needs from A1111 around it, so that it runs in fake_webui's loop.

Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler-for-automatic1111) imports these at module level in
``tile_utils/typing.py`` and ``tile_utils/utils.py``; its MultiDiffusion delegate then replaces the sampler's
``model_wrap_cfg.inner_model.forward`` and calls the saved forward once per batch of tiles. Stood in here, each
small and mirroring A1111 1.10.1 (82a973c0) or the pinned repositories:

- ``modules.devices``: ``device`` and ``autocast`` (modules/devices.py:120, 210), CPU here.
- ``modules.processing.opt_f`` = 8 (modules/processing.py:40) and the processing classes, names only (137, 516, 1557).
- ``modules.shared``: the stub's ``state``; ``sd_model`` with ``cond_stage_key`` and ``model.conditioning_key``,
  the two fields its cond-dict helpers read (tile_methods/abstractdiffusion.py:24, 158).
- ``modules.sd_samplers_kdiffusion``: ``KDiffusionSampler`` holding ``model_wrap_cfg`` (a ``CFGDenoiserKDiffusion``)
  whose ``inner_model`` is the k-diffusion denoiser (modules/sd_samplers_kdiffusion.py:52-77).
- ``k_diffusion.external.CompVisDenoiser.forward`` (repositories/k-diffusion/k_diffusion/external.py:110-113)
  reaching ``LatentDiffusion.apply_model`` -> ``DiffusionWrapper.forward``'s crossattn branch
  (ldm/models/diffusion/ddpm.py:848-858, 1324-1335): ``diffusion_model(x, t, context=cat(c_crossattn, 1))``. The
  sigma scalings are left out: fake_webui's loop hands the U-Net timesteps, and the tests assert geometry.
- The cond dict is A1111's ``{"c_crossattn": [cond], "c_concat": [image_cond]}``
  (modules/sd_samplers_cfg_denoiser.py:200) with txt2img's 5x1x1 image conditioning (modules/processing.py:100-125).
- The other names (prompt_parser, extra_networks, sd_samplers_common, sd_samplers_timesteps, shared_state) are
  only annotations or isinstance checks on the paths the tests do not take: empty classes.
Third-party packages it imports but these paths never call (cv2, torchvision, pytorch_lightning) are stood in by
absent_packages when not installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types

import absent_packages
import torch


class CompVisDenoiser:
    def __init__(self, diffusion_model):
        self.diffusion_model = diffusion_model

    def forward(self, input, sigma, **kwargs):
        cond = kwargs["cond"]
        return self.diffusion_model(input, sigma, context=torch.cat(cond["c_crossattn"], 1))


class CFGDenoiserKDiffusion:
    def __init__(self, inner_model):
        self.inner_model = inner_model
        self.image_cfg_scale = None


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _classes(*names):
    return {name: type(name, (), {}) for name in names}


def _a1111_modules():
    from modules import shared

    common = _module("modules.sd_samplers_common", Sampler=type("Sampler", (), {}))
    kdiffusion = _module("modules.sd_samplers_kdiffusion", CFGDenoiser=type("CFGDenoiser", (), {}),
                         CFGDenoiserKDiffusion=CFGDenoiserKDiffusion,
                         KDiffusionSampler=type("KDiffusionSampler", (common.Sampler,), {}))
    return {
        "modules.devices": _module("modules.devices", device=torch.device("cpu"),
                                   autocast=lambda disable=False: contextlib.nullcontext()),
        "modules.processing": _module("modules.processing", opt_f=8, **_classes(
            "StableDiffusionProcessing", "StableDiffusionProcessingImg2Img", "Processed")),
        "modules.prompt_parser": _module("modules.prompt_parser", **_classes(
            "MulticondLearnedConditioning", "ScheduledPromptConditioning")),
        "modules.extra_networks": _module("modules.extra_networks", **_classes("ExtraNetworkParams")),
        "modules.sd_samplers_common": common,
        "modules.sd_samplers_kdiffusion": kdiffusion,
        "modules.sd_samplers_timesteps": _module("modules.sd_samplers_timesteps", **_classes(
            "CompVisSampler", "CFGDenoiserTimesteps", "CompVisTimestepsDenoiser", "CompVisTimestepsVDenoiser")),
        "modules.shared_state": _module("modules.shared_state", State=type(shared.state)),
        "k_diffusion": _module("k_diffusion"),
        "k_diffusion.external": _module("k_diffusion.external", CompVisDenoiser=CompVisDenoiser,
                                        CompVisVDenoiser=type("CompVisVDenoiser", (CompVisDenoiser,), {})),
    }


@contextlib.contextmanager
def multidiffusion_module(tiled_diffusion_dir):
    """Import ``tile_methods.multidiffusion`` from the checkout; everything imported meanwhile goes again after."""
    from modules import shared

    before = set(sys.modules)
    had_sd_model = hasattr(shared, "sd_model")
    sys.path.insert(0, tiled_diffusion_dir)
    sys.modules.update(_a1111_modules())
    shared.sd_model = types.SimpleNamespace(cond_stage_key="txt", model=types.SimpleNamespace(conditioning_key="crossattn"))
    try:
        with absent_packages.stand_ins(["cv2", "torchvision", "pytorch_lightning"]):
            from tile_methods import multidiffusion

            yield multidiffusion
    finally:
        sys.path.remove(tiled_diffusion_dir)
        for name in set(sys.modules) - before:
            del sys.modules[name]
        if not had_sd_model:
            del shared.sd_model


def hook_multidiffusion(multidiffusion, p, unet, tile, overlap, tile_batch_size):
    """What its Script.create_sampler_hijack does for grid tiling with a k-diffusion sampler
    (scripts/tilediffusion.py:438-463), on a sampler whose inner model calls ``unet``; fake_webui's loop then calls
    the hooked inner forward through ``p.tiled_unet``. Returns the delegate."""
    from modules import sd_samplers_kdiffusion

    sampler = sd_samplers_kdiffusion.KDiffusionSampler()
    sampler.model_wrap_cfg = CFGDenoiserKDiffusion(CompVisDenoiser(unet))
    delegate = multidiffusion.MultiDiffusion(p, sampler)
    delegate.init_grid_bbox(tile, tile, overlap, tile_batch_size)
    delegate.init_done()
    delegate.hook()
    inner = sampler.model_wrap_cfg.inner_model
    p.tiled_unet = lambda x, t, context: inner.forward(
        x, t, cond={"c_crossattn": [context], "c_concat": [x.new_zeros(x.shape[0], 5, 1, 1)]})
    return delegate


def checkout_has_multidiffusion(tiled_diffusion_dir):
    return os.path.isfile(os.path.join(tiled_diffusion_dir, "tile_methods", "multidiffusion.py"))
