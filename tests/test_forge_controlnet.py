"""ControlNet under RAU-Net on Forge (tests/forge_stub.py runs Forge's ControlNet and U-Net order on the real ldm blocks):
the same numbers as the A1111 path, every residual added, chained wrappers kept, T2I-Adapter and LLLite noted."""

import controlnet_support as cn
import pytest
import torch
from forge_stub import StubControlNet, StubForge, StubUnetPatcher, attention_function
from test_controlnet import controlnet_for, inputs

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.forge import controlnet as forge_controlnet
from hidiffusion_ext.forge.unet_patch import patch_forge_unet
from hidiffusion_ext.ldm.control_patch import CONTROLNET

STEPS, SEED = 10, 1234
SETTINGS = HiDiffusionSettings(t1=0.7, t2=0.3)  # SD1: RAD and pooling at step 0, RAD only at 4, stock at 8
TOLERANCE = 1e-5


def timesteps(step, batch=2):
    return torch.full((batch,), 999.0 - 99.0 * step)


def forge_run(unet, units, x, context, steps, settings=SETTINGS, prior_wrapper=None):
    patcher = StubUnetPatcher.around(unet)
    if prior_wrapper is not None:
        patcher.set_controlnet_model_function_wrapper(prior_wrapper)
    for model, hint, strength in units:
        patcher.add_patched_controlnet(StubControlNet(model, hint, strength))
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED, attention=attention_function)
    forge, outputs = StubForge(), []
    try:
        for step in steps:
            result.set_step(step)
            outputs.append(forge.denoise(result.patcher, x, timesteps(step), context))
    finally:
        forge.unload()
        result.remove()
    return outputs, result


def a1111_run(unet, units, x, context, steps, settings=SETTINGS):
    params = [cn.unit(cn.PlugableControlModel(model), hint=hint, weight=strength) for model, hint, strength in units]
    cn.install_hook(unet, params)
    outputs = []
    try:
        with torch.no_grad(), apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
            for u in params:
                handle.patch_control(CONTROLNET, u.control_model, u.control_model.control_model, "unit")
            for step in steps:
                handle.set_step(step)
                outputs.append(unet(x, timesteps(step), context=context))
    finally:
        cn.remove_hook(unet)
    return outputs, handle


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("size", [(40, 24), (33, 25)])
def test_forge_controlnet_matches_the_a1111_path_and_nothing_is_dropped(ldm_unet, capfd, size):
    unet = ldm_unet("sd1")
    x, _, context, hint = inputs(unet, size)
    encoder = controlnet_for(unet, "sd1").control_model
    units = [(encoder, hint, 1.0)]
    forge_out, result = forge_run(unet, units, x, context, (0, 4, 8))
    cn.RESIZES.clear()
    a1111_out, handle = a1111_run(unet, units, x, context, (0, 4, 8))
    assert cn.RESIZES == []
    assert max(rel(a, b) for a, b in zip(forge_out, a1111_out)) <= TOLERANCE
    assert result.stats.rad_forwards == 2 and result.stats.pool_forwards == 1  # RAU-Net ran, with ControlNet on
    assert result.stats.control_units == 1 and result.stats.control_forwards == 2 == handle.stats.control_forwards
    assert result.notes == [] and "could not be applied" not in capfd.readouterr().out
    plain, _ = forge_run(unet, [], x, context, (0,))
    assert rel(forge_out[0], plain[0]) > 100 * TOLERANCE  # the control reached the image


def test_two_units_and_an_earlier_wrapper_are_kept(ldm_unet, capfd):
    unet = ldm_unet("sd1")
    x, _, context, hint = inputs(unet, (32, 32))
    first, second = controlnet_for(unet, "sd1", 11).control_model, controlnet_for(unet, "sd1", 12).control_model
    calls = []

    def earlier(**kwargs):  # e.g. another extension's wrapper, set on the patcher before HiDiffusion
        calls.append(kwargs["x"].shape)
        return kwargs["inner_model"](x=kwargs["x"], hint=kwargs["hint"], timesteps=kwargs["timesteps"],
                                     context=kwargs["context"], y=kwargs["y"])

    units = [(first, hint, 1.0), (second, hint.flip(-1), 0.5)]
    forge_out, result = forge_run(unet, units, x, context, (0, 4), prior_wrapper=earlier)
    a1111_out, _ = a1111_run(unet, units, x, context, (0, 4))
    assert len(calls) == 4 and result.stats.control_units == 2  # 2 units x 2 steps, all through the earlier wrapper
    assert max(rel(a, b) for a, b in zip(forge_out, a1111_out)) <= TOLERANCE
    assert "could not be applied" not in capfd.readouterr().out


def test_the_controlnet_model_is_left_as_it_was(ldm_unet):
    unet = ldm_unet("sdxl")
    x, _, context, hint = inputs(unet, (33, 25))
    model = controlnet_for(unet, "sdxl")
    before = cn.fingerprint(model)
    forge_run(unet, [(model.control_model, hint, 1.0)], x, context, (0, 2), HiDiffusionSettings())
    assert cn.same_fingerprint(cn.fingerprint(model), before)


class T2IAdapter(StubControlNet):
    """Named as Forge's class (backend/patcher/controlnet.py): its features are cached once per size."""

    def get_control(self, x_noisy, t, cond, batched_number):
        return {"input": [], "middle": [], "output": []}


class control_net_lllite_patch:  # noqa: N801  (the class name Forge's LLLite loader gives its attn1 patch)
    def __call__(self, n, context, value, extra_options):
        return n, context, value


def test_t2i_adapter_or_lllite_keep_raunet_off_with_a_note(ldm_unet):
    unet = ldm_unet("sd1")
    x, _, context, hint = inputs(unet, (32, 32))
    patcher = StubUnetPatcher.around(unet)
    patcher.add_patched_controlnet(T2IAdapter(None, hint))
    early = patch_forge_unet(patcher, SETTINGS, steps=STEPS)
    assert early.raunet_skipped and early.notes == [forge_controlnet.T2I_NOTE]
    lllite = StubUnetPatcher.around(unet)
    lllite.set_model_patch(control_net_lllite_patch(), "attn1_patch")
    assert patch_forge_unet(lllite, SETTINGS, steps=STEPS).notes == [forge_controlnet.LLLITE_NOTE]


def test_t2i_adapter_added_after_hidiffusion_turns_raunet_off_before_the_first_call(ldm_unet):
    """ControlNet's script may clone our clone: the conditioning modifier still sees it, before any U-Net call."""
    unet = ldm_unet("sd1")
    x, _, context, hint = inputs(unet, (32, 32))
    result = patch_forge_unet(StubUnetPatcher.around(unet), SETTINGS, steps=STEPS, seed=SEED, attention=attention_function)
    with_control = result.patcher.clone()
    with_control.add_patched_controlnet(T2IAdapter(None, hint))
    forge = StubForge()
    result.set_step(0)
    forge.denoise(with_control, x, timesteps(0), context)
    forge.unload()
    assert result.notes == [forge_controlnet.T2I_NOTE]
    assert result.stats.forwards == 1 and result.stats.rad_forwards == 0 and result.stats.windowed_calls > 0


def test_repatching_restores_the_wrapper_it_chained(ldm_unet):
    unet = ldm_unet("sd1")

    def earlier(**kwargs):
        return None

    patcher = StubUnetPatcher.around(unet)
    patcher.set_controlnet_model_function_wrapper(earlier)
    first = patch_forge_unet(patcher, SETTINGS, steps=STEPS)
    second = patch_forge_unet(first.patcher, SETTINGS, steps=STEPS)
    wrapper = second.patcher.model_options["transformer_options"]["controlnet_model_function_wrapper"]
    assert wrapper._hidiffusion_prior is earlier  # chained once, not twice
    assert patcher.model_options["transformer_options"]["controlnet_model_function_wrapper"] is earlier


def test_a_t2i_adapter_call_through_the_wrapper_gets_the_hint_alone(ldm_unet):
    """Forge's T2IAdapter.get_control calls the wrapper without x (its features are computed once per size)."""
    result = patch_forge_unet(StubUnetPatcher.around(ldm_unet("sd1")), SETTINGS, steps=STEPS)
    wrapper = result.patcher.model_options["transformer_options"][forge_controlnet.WRAPPER_KEY]
    hint = torch.rand(1, 3, 64, 64)
    features = wrapper(hint=hint, model=object(), inner_model=lambda h: [h * 2], inner_t2i_model=None)
    assert torch.equal(features[0], hint * 2)
