"""What Tiled Diffusion's own Script needs from A1111 around it, so that it runs in fake_webui's generation loop.

Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler-for-automatic1111) is an always-on Script: its ``process``
replaces ``sd_samplers.create_sampler`` (scripts/tilediffusion.py:365-375), and the sampler it then returns has its
``model_wrap_cfg.inner_model.forward`` replaced by its MultiDiffusion delegate, which calls the saved forward once
per batch of latent tiles (tile_methods/multidiffusion.py:15-24, 52-70); ``postprocess`` puts create_sampler back.
Its modules import these at module level; stood in here, each small and mirroring A1111 1.10.1 (82a973c0) or the
repositories it pins:

- ``modules.sd_samplers.create_sampler(name, model)`` (modules/sd_samplers.py:33-44) returning a
  ``KDiffusionSampler`` whose ``model_wrap_cfg`` (a ``CFGDenoiserKDiffusion``) has the k-diffusion denoiser as
  ``inner_model`` (modules/sd_samplers_kdiffusion.py:52-77). txt2img calls it at the start of ``sample``
  (modules/processing.py:1308); here at the pass's first U-Net call (``p.tiled_unet``, fake_webui's model call).
- ``k_diffusion.external.CompVisDenoiser.forward`` (repositories/k-diffusion/k_diffusion/external.py:110-113)
  reaching ``LatentDiffusion.apply_model`` -> ``DiffusionWrapper.forward``'s crossattn branch
  (ldm/models/diffusion/ddpm.py:848-858, 1324-1335): ``diffusion_model(x, t, context=cat(c_crossattn, 1))``. The
  sigma scalings are left out: fake_webui's loop hands the U-Net timesteps, and the tests assert geometry.
- The cond dict is A1111's ``{"c_crossattn": [cond], "c_concat": [image_cond]}``
  (modules/sd_samplers_cfg_denoiser.py:200) with txt2img's 5x1x1 image conditioning (modules/processing.py:100-125).
- ``modules.devices`` (``device``, ``autocast``: modules/devices.py:120, 210), ``modules.processing`` (``opt_f`` = 8,
  ``get_fixed_seed``: processing.py:40), ``modules.ui.gr_show`` (ui.py:62), ``scripts.basedir`` (scripts.py:369),
  ``shared.cmd_opts``, and ``shared.sd_model``'s ``cond_stage_key`` / ``model.conditioning_key`` (read by its
  cond-dict helpers, tile_methods/abstractdiffusion.py:24, 158).
- The other names (prompt_parser, extra_networks, images, sd_samplers_common, sd_samplers_timesteps, shared_state)
  are only annotations or isinstance checks on paths the tests do not take: empty classes.
Third-party packages it imports but these paths never call (cv2, torchvision, pytorch_lightning) are stood in by
absent_packages when not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types

import absent_packages
import torch

_ABSENT = object()


class CompVisDenoiser:
    def __init__(self, model):
        self.inner_model = model

    def forward(self, input, sigma, **kwargs):
        cond = kwargs["cond"]
        return self.inner_model.model.diffusion_model(input, sigma, context=torch.cat(cond["c_crossattn"], 1))


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

    def create_sampler(name, model):
        sampler = kdiffusion.KDiffusionSampler()
        sampler.model_wrap_cfg = CFGDenoiserKDiffusion(CompVisDenoiser(model))
        return sampler

    return {
        "modules.devices": _module("modules.devices", device=torch.device("cpu"),
                                   autocast=lambda disable=False: contextlib.nullcontext()),
        "modules.processing": _module("modules.processing", opt_f=8, get_fixed_seed=lambda seed: seed, **_classes(
            "StableDiffusionProcessing", "StableDiffusionProcessingImg2Img", "Processed")),
        "modules.sd_samplers": _module("modules.sd_samplers", create_sampler=create_sampler),
        "modules.images": _module("modules.images"),
        "modules.ui": _module("modules.ui", gr_show=lambda visible=True: {"visible": visible, "__type__": "update"}),
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
def tiled_diffusion_script(tiled_diffusion_dir):
    """Its ``scripts/tilediffusion.py`` module, loaded as the webui loads a script; all it brought goes after."""
    from modules import scripts, shared

    before = set(sys.modules)
    sys.path.insert(0, tiled_diffusion_dir)
    sys.modules.update(_a1111_modules())
    stand_ins = [(shared, "sd_model", types.SimpleNamespace(
                     cond_stage_key="txt", model=types.SimpleNamespace(conditioning_key="crossattn"))),
                 (shared, "cmd_opts", types.SimpleNamespace()), (scripts, "basedir", lambda: tiled_diffusion_dir)]
    saved = [(owner, name, owner.__dict__.get(name, _ABSENT)) for owner, name, _ in stand_ins]
    for owner, name, value in stand_ins:
        setattr(owner, name, value)
    try:
        with absent_packages.stand_ins(["cv2", "torchvision", "pytorch_lightning"]):
            path = os.path.join(tiled_diffusion_dir, "scripts", "tilediffusion.py")
            spec = importlib.util.spec_from_file_location("tilediffusion.py", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            yield module
    finally:
        sys.path.remove(tiled_diffusion_dir)
        for name in set(sys.modules) - before:
            del sys.modules[name]
        for owner, name, value in saved:
            if value is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def call_the_created_sampler(p):
    """fake_webui's model call for ``p``: the sampler ``sd_samplers.create_sampler`` gives (Tiled Diffusion's,
    while its process() has hijacked it), created at the pass's first call, then its inner model's forward."""
    from modules import sd_samplers

    def unet_call(x, t, context):
        if getattr(p, "sampler", None) is None:
            p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
        inner = p.sampler.model_wrap_cfg.inner_model
        return inner.forward(x, t, cond={"c_crossattn": [context], "c_concat": [x.new_zeros(x.shape[0], 5, 1, 1)]})

    p.tiled_unet = unet_call


def checkout_has_tiled_diffusion(tiled_diffusion_dir):
    return os.path.isfile(os.path.join(tiled_diffusion_dir, "scripts", "tilediffusion.py"))
