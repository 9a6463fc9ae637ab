"""Forge's REAL ControlNet path under HiDiffusion (needs FORGE_DIR).

Runs, from a checkout of stable-diffusion-webui-forge main (dfdcbab6), on CPU with random weights:
- backend/nn/cnets/cldm.py ControlNet, built as modules_forge/supported_controlnet.py does (107-142: the U-Net's
  config without out_channels, plus hint_channels, under using_forge_operations, then load_state_dict), wrapped in
  backend/patcher/controlnet.py ControlNet and added with apply_controlnet_advanced (11-83: copy, set_cond_hint,
  clone, add_patched_controlnet), as ControlNetPatcher.process_before_every_sampling (148) does;
- backend/sampling/sampling_function.py: sampling_prepare (366: loads the models, ControlNet.pre_run with the
  predictor), sampling_function (325: conds carry the control, conditioning modifiers, calc_cond_uncond_batch,
  get_control with the model function wrapper, control_merge) and sampling_cleanup (402);
- backend/nn/unet.py: the U-Net forward with apply_control (44-52), which drops a residual it cannot add with
  "warning control could not be applied".
Forge's backend is imported by tests/forge_backend.py; the U-Net builder of tests/test_forge_real.py is reused,
on the SD1-shaped IntegratedUNet2DConditionModel that test builds. Run with FORGE_DIR=/path/to/stable-diffusion-webui-forge;
skipped otherwise.
"""

import copy
import os
from types import SimpleNamespace

import controlnet_support as cn
import pytest
import test_forge_real as forge_real
import torch
from forge_backend import forge_backend

from hidiffusion_ext import HiDiffusionSettings
from hidiffusion_ext.devtools.models import unet_params
from hidiffusion_ext.forge.controlnet import T2I_NOTE, WRAPPER_KEY
from hidiffusion_ext.forge.unet_patch import patch_forge_unet

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(FORGE_DIR, "backend")),
                                reason="set FORGE_DIR to a stable-diffusion-webui-forge checkout")

STEPS, SEED = 10, 1234
SETTINGS = HiDiffusionSettings(t1=0.7, t2=0.3)  # SD1: RAD and pooling at step 0, RAD only at 4, stock at 8
SIZE = (25, 17)  # odd: every halving rounds up
NOT_APPLIED = "could not be applied"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fc():
    with forge_backend(FORGE_DIR) as backend:
        yield backend


@pytest.fixture(scope="module")
def base(fc):
    """The SD1-shaped Forge UnetPatcher (random weights), as test_forge_real builds it."""
    patcher = forge_real._forge_patcher(fc, unet_params("sd1"))
    yield patcher
    fc.memory_management.unload_model_clones(patcher)


def build_controlnet(fc, seed):
    """backend.patcher.controlnet.ControlNet around a cldm ControlNet shaped like the U-Net, random weights.

    Forge's operations create no weights until a state dict is loaded: the state dict comes from a plain build, its
    zero-initialised layers (zero convs, ResBlock and transformer outputs) re-randomised so every path shows."""
    config = forge_real.forge_config(unet_params("sd1"))
    config.pop("out_channels")
    config.update(hint_channels=3, dtype=torch.float32)
    torch.manual_seed(seed)
    plain = fc.cldm.ControlNet(**config)
    for module in plain.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() and not weight.any() and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert all(v.any() for k, v in plain.state_dict().items() if "zero_convs" in k or "middle_block_out" in k)
    with fc.using_forge_operations(dtype=torch.float32, manual_cast_enabled=False):
        control_model = fc.cldm.ControlNet(**config).to(dtype=torch.float32)
    control_model.load_state_dict(plain.state_dict(), strict=True)
    control_model.requires_grad_(False)
    return fc.controlnet.ControlNet(control_model, global_average_pooling=False, load_device=CPU,
                                    manual_cast_dtype=torch.float32)


@pytest.fixture(scope="module")
def controlnets(fc):
    return [build_controlnet(fc, 21), build_controlnet(fc, 22)]


def with_control(fc, patcher, controlnet, hint, strength=1.0):
    """ControlNetPatcher.process_before_every_sampling: a clone of ``patcher`` carrying a copy of ``controlnet``."""
    return fc.controlnet.apply_controlnet_advanced(unet=patcher, controlnet=controlnet, image_bchw=hint, strength=strength,
                                                   start_percent=0.0, end_percent=1.0)


def inputs(seed=0, size=SIZE):
    g = torch.Generator().manual_seed(seed)
    context_dim = unet_params("sd1")["context_dim"]
    x = torch.randn(1, 4, *size, generator=g)
    context = torch.randn(2, 7, context_dim, generator=g)
    hints = [torch.rand(1, 3, size[0] * 8, size[1] * 8, generator=g) for _ in range(2)]
    return x, context, hints


def denoise(fc, patcher, x, context, step):
    """One sampler step's denoiser call, as Forge's sampler makes it: prepare, sampling_function (CFG 7), cleanup.
    Each row of a batch gets the same prompt (context[:1]) and negative prompt (context[1:])."""
    batch = x.shape[0]
    fc.sampling.sampling_prepare(patcher, x)
    model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
    denoiser = SimpleNamespace(inner_model=SimpleNamespace(inner_model=model), p=SimpleNamespace(seeds=[SEED] * batch))
    params = SimpleNamespace(x=x, sigma=torch.full((batch,), 14.6 * 0.7**step), text_cond=context[:1].repeat(batch, 1, 1),
                             text_uncond=context[1:].repeat(batch, 1, 1), image_cond=None)
    try:
        with torch.no_grad():
            denoised, _, _ = fc.sampling.sampling_function(denoiser, params, 7.0, [[(0, 1.0)]] * batch)
    finally:
        fc.sampling.sampling_cleanup(patcher)
    return denoised


def run(fc, patcher, steps, x, context, settings=SETTINGS):
    """HiDiffusion on a clone of ``patcher``, one denoiser call per step; returns (outputs, pass)."""
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED)
    outputs = [result.set_step(step) or denoise(fc, result.patcher, x, context, step) for step in steps]
    result.remove()
    return outputs, result


def snapshot(patcher):
    return copy.deepcopy(patcher.model_options), dict(patcher.object_patches), patcher.controlnet_linked_list


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_controlnet_added_before_hidiffusion_is_applied_at_every_step(fc, base, controlnets, capfd):
    x, context, hints = inputs()
    plain, _ = run(fc, base, (0, 4, 8), x, context)
    capfd.readouterr()

    calls = []

    def earlier(**kwargs):  # another extension's wrapper, set on the patcher before HiDiffusion
        calls.append(tuple(kwargs["x"].shape))
        return kwargs["inner_model"](x=kwargs["x"], hint=kwargs["hint"].to(kwargs["model"].device),
                                     timesteps=kwargs["timesteps"], context=kwargs["context"], y=kwargs["y"])

    patcher = with_control(fc, base, controlnets[0], hints[0])
    patcher.set_controlnet_model_function_wrapper(earlier)
    before, model_before = snapshot(patcher), cn.fingerprint(controlnets[0].control_model)
    controlled, result = run(fc, patcher, (0, 4, 8), x, context)

    assert NOT_APPLIED not in capfd.readouterr().out
    assert (result.stats.rad_forwards, result.stats.pool_forwards) == (2, 1)  # RAU-Net ran at steps 0 and 4
    assert result.stats.control_units == 1 and result.stats.control_forwards == 2 and result.notes == []
    assert len(calls) == 3  # the earlier wrapper ran once per call (cond and uncond batched), chained by ours
    assert all(rel(a, b) > 1e-3 for a, b in zip(controlled, plain, strict=True))  # the control reached the output at every step
    assert snapshot(patcher) == before  # the input patcher: options, object patches, control chain
    assert cn.same_fingerprint(cn.fingerprint(controlnets[0].control_model), model_before)
    fc.memory_management.unload_model_clones(base)


def test_two_chained_units_on_a_clone_of_the_hidiffusion_clone(fc, base, controlnets, capfd):
    """HiDiffusion first, then ControlNet's script clones our clone for each unit (Forge runs scripts in load order)."""
    x, context, hints = inputs(1)
    outputs = {}
    for n in (1, 2):
        result = patch_forge_unet(base, SETTINGS, steps=STEPS, seed=SEED)
        patcher = result.patcher
        for controlnet, hint in list(zip(controlnets, hints, strict=True))[:n]:
            patcher = with_control(fc, patcher, controlnet, hint, strength=1.0 if controlnet is controlnets[0] else 0.5)
        assert len(patcher.list_controlnets()) == n
        result.set_step(0)
        outputs[n] = denoise(fc, patcher, x, context, 0)
        result.remove()
        assert NOT_APPLIED not in capfd.readouterr().out
        assert result.stats.rad_forwards == 1 and result.stats.control_units == n and result.stats.control_forwards == n
    assert rel(outputs[2], outputs[1]) > 1e-4
    fc.memory_management.unload_model_clones(base)


def kohya_downscale(fc, patcher, block_number=3, factor=2.0):
    """extensions-builtin/sd_forge_kohya_hrfix/scripts/kohya_hrfix.py 9-36 with its defaults (downscale after the
    skip, bicubic both ways), the sigma window left open: a plain downscale that knows nothing of ControlNet."""
    def input_block_patch(h, transformer_options):
        if transformer_options["block"][1] == block_number:
            h = fc.adaptive_resize(h, round(h.shape[-1] / factor), round(h.shape[-2] / factor), "bicubic", "disabled")
        return h

    def output_block_patch(h, hsp, transformer_options):
        if h.shape[2] != hsp.shape[2]:
            h = fc.adaptive_resize(h, hsp.shape[-1], hsp.shape[-2], "bicubic", "disabled")
        return h, hsp

    m = patcher.clone()
    m.set_model_input_block_patch_after_skip(input_block_patch)
    m.set_model_output_block_patch(output_block_patch)
    return m


def test_without_the_wrapper_forge_drops_the_control(fc, base, controlnets, capfd):
    """The check above is not vacuous: the same residuals at stock sizes are dropped by Forge's apply_control."""
    x, context, hints = inputs(2)
    patcher = with_control(fc, base, controlnets[0], hints[0])

    denoise(fc, kohya_downscale(fc, patcher), x, context, 0)
    assert NOT_APPLIED in capfd.readouterr().out

    result = patch_forge_unet(patcher, SETTINGS, steps=STEPS, seed=SEED)
    result.patcher.model_options["transformer_options"].pop(WRAPPER_KEY)
    result.set_step(0)
    denoise(fc, result.patcher, x, context, 0)
    assert NOT_APPLIED in capfd.readouterr().out
    assert result.stats.rad_forwards == 1 and result.stats.control_forwards == 0
    fc.memory_management.unload_model_clones(base)


def test_t2i_adapter_keeps_raunet_off_and_still_runs(fc, base, capfd):
    """backend/patcher/controlnet.py T2IAdapter.get_control calls the model function wrapper with hint, model,
    inner_model and inner_t2i_model only (no x): the adapter's features are computed once per image size."""
    size = (32, 24)  # the adapter's own downsampling floors; an even latent keeps Forge adding its features
    x, context, hints = inputs(3, size)
    torch.manual_seed(23)  # load_t2i_adapter's Adapter for an SD1 T2I model, channels of the test U-Net
    adapter = fc.t2i_adapter.Adapter(cin=3 * 64, channels=[32, 64, 128, 128], nums_rb=2, ksize=1, sk=True, use_conv=False,
                                     xl=False)
    t2i = fc.controlnet.T2IAdapter(adapter.requires_grad_(False), adapter.input_channels)
    patcher = with_control(fc, base, t2i, hints[0])
    result = patch_forge_unet(patcher, SETTINGS, steps=STEPS, seed=SEED)
    assert result.raunet_skipped and result.notes == [T2I_NOTE]
    result.set_step(0)
    try:
        out = denoise(fc, result.patcher, x, context, 0)
    finally:
        fc.memory_management.unload_model_clones(base)
    assert torch.isfinite(out).all() and NOT_APPLIED not in capfd.readouterr().out
    assert result.stats.rad_forwards == 0 and result.stats.windowed_calls > 0
