"""ControlNet under RAU-Net on A1111 (sd-webui-controlnet's hook loop, stood in by controlnet_support.py): every residual
has its skip's size at every step, the encoder is the U-Net's geometry bit for bit, nothing is resized, dropped or
left patched."""

import controlnet_support as cn
import fake_webui
import pytest
import torch
from conftest import run_unet

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.ldm.control_patch import CONTROLNET, T2I_ADAPTER

STEPS, SIZES, PHASES = cn.STEPS, cn.SIZES, cn.PHASES


def inputs(unet, hw, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    context_dim = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    channels = unet.input_blocks[0][0].in_channels
    x = torch.randn(batch, channels, *hw, generator=g)
    hint = torch.rand(batch, 3, hw[0] * 8, hw[1] * 8, generator=g)
    return x, torch.full((batch,), 700.0), torch.randn(batch, 5, context_dim, generator=g), hint


def controlnet_for(unet, shape, seed=11):
    return cn.PlugableControlModel(cn.ControlEncoder(unet_params(shape), seed=seed))


def capture_skips(unet):
    """The skips hs[i] as stored (after our pooling hook) and the middle block's output."""
    found, hooks = {}, []
    for i, block in enumerate(unet.input_blocks):
        hooks.append(block.register_forward_hook(lambda m, a, o, i=i: found.__setitem__(i, o)))
    hooks.append(unet.middle_block.register_forward_hook(lambda m, a, o: found.__setitem__("middle", o)))
    return found, hooks


@pytest.mark.parametrize("phase", ["rad", "pool", "both", "late"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_residual_i_is_skip_i_bit_for_bit(ldm_unet, shape, size, phase):
    """The U-Net's encoder copied into the ControlNet, identity zero convs, no hint: the geometry is the same.

    MSW-MSA is off here: it windows the U-Net's attention, never the ControlNet's, so it would change the values."""
    unet = ldm_unet(shape)
    settings, step, expected = PHASES[shape][phase]
    settings = settings.replace(mswmsa=False)
    model = controlnet_for(unet, shape)
    model.control_model.copy_unet_encoder(unet)
    x, t, context, hint = inputs(unet, SIZES[size])
    with torch.no_grad(), apply_hidiffusion(unet, settings, steps=STEPS, seed=1) as handle:
        handle.set_step(step)
        assert (handle.geometry_for(SIZES[size]).rad, handle.geometry_for(SIZES[size]).pool) == expected
        handle.patch_control(CONTROLNET, model, model.control_model, "copy of the U-Net")
        residuals = model(x=x, hint=hint, timesteps=t, context=context)
        skips, hooks = capture_skips(unet)
        try:
            unet(x, t, context=context)
        finally:
            for hook in hooks:
                hook.remove()
    assert len(residuals) == unet_map_blocks(unet) + 1
    for i, residual in enumerate(residuals[:-1]):
        assert torch.equal(residual, skips[i]), f"residual {i}: {tuple(residual.shape)} vs {tuple(skips[i].shape)}"
    assert torch.equal(residuals[-1], skips["middle"])
    assert handle.stats.control_units == 1 and handle.stats.control_forwards == int(any(expected))


def unet_map_blocks(unet):
    return len(unet.input_blocks)


@pytest.fixture
def sd1():
    return build_ldm_unet(unet_params("sd1"), seed=0)


def run_hooked(unet, units, x, t, context, settings=None, step=0, is_sdxl=False, patch=True):
    """One U-Net call through the hook loop, with HiDiffusion applied and (or not) each unit patched."""
    cn.RESIZES.clear()
    cn.install_hook(unet, units, is_sdxl)
    try:
        with torch.no_grad(), apply_hidiffusion(unet, settings or HiDiffusionSettings(t1=0.7, t2=0.3), steps=STEPS) as h:
            h.set_step(step)
            for u in units if patch else ():
                kind = CONTROLNET if u.control_model_type.is_controlnet else T2I_ADAPTER
                h.patch_control(kind, u.control_model, getattr(u.control_model, "control_model", None), "unit")
            return unet(x, t, context=context), h
    finally:
        cn.remove_hook(unet)


def test_control_changes_the_output_and_leaves_the_model_as_it_was(sd1):
    x, t, context, hint = inputs(sd1, (40, 32))
    model = controlnet_for(sd1, "sd1")
    before = cn.fingerprint(model)
    plain, _ = run_hooked(sd1, [], x, t, context)
    controlled, handle = run_hooked(sd1, [cn.unit(model, hint=hint)], x, t, context)
    assert cn.RESIZES == [] and handle.stats.control_forwards == 1
    assert (controlled - plain).abs().max() > 1e-3
    assert cn.same_fingerprint(cn.fingerprint(model), before)
    assert all("forward" not in vars(m) and not m._forward_hooks for m in sd1.modules())


def test_two_units_get_the_same_geometry(sd1):
    x, t, context, hint = inputs(sd1, (33, 25))
    first, second = controlnet_for(sd1, "sd1", seed=11), controlnet_for(sd1, "sd1", seed=12)
    one, _ = run_hooked(sd1, [cn.unit(first, hint=hint)], x, t, context)
    two, handle = run_hooked(sd1, [cn.unit(first, hint=hint), cn.unit(second, hint=hint.flip(-1), weight=0.5)],
                             x, t, context)
    assert cn.RESIZES == [] and handle.stats.control_units == 2 and handle.stats.control_forwards == 2
    assert (two - one).abs().max() > 1e-4


def test_one_model_shared_by_two_units_is_patched_once(sd1):
    x, t, context, hint = inputs(sd1, (32, 32))
    model = controlnet_for(sd1, "sd1")
    _, handle = run_hooked(sd1, [cn.unit(model, hint=hint), cn.unit(model, hint=hint * 0.5)], x, t, context)
    assert cn.RESIZES == [] and handle.stats.control_units == 2 and handle.stats.control_forwards == 2


def test_nine_channel_unet_with_controlnet_no_longer_crashes():
    """hook.py's inpaint path puts the residual into zeros_like(skip): a shrunk skip used to fail there."""
    unet = build_ldm_unet(unet_params("sd1", in_channels=9), seed=0)
    x, t, context, hint = inputs(unet, (40, 32))
    model = controlnet_for(unet, "sd1")
    with pytest.raises(RuntimeError):  # the residual at stock size, the skip shrunk by the RAD
        run_hooked(unet, [cn.unit(model, hint=hint)], x, t, context, patch=False)
    out, handle = run_hooked(unet, [cn.unit(model, hint=hint)], x, t, context)
    assert out.shape == (2, 4, 40, 32) and cn.RESIZES == [] and handle.stats.control_forwards == 1


def test_t2i_adapter_features_are_pooled_to_where_they_are_added(sd1):
    x, t, context, hint = inputs(sd1, (40, 32))
    channels = cn.block_channels(sd1, unet_params("sd1"))
    adapter = cn.PlugableAdapter(cn.StockAdapter([channels[i] for i in (2, 5, 8, 11)]))
    run_hooked(sd1, [cn.unit(adapter, "T2I_Adapter", hint=hint)], x, t, context, patch=False)
    assert cn.RESIZES  # unpatched: nearest resizes at the shrunk levels
    out, handle = run_hooked(sd1, [cn.unit(adapter, "T2I_Adapter", hint=hint)], x, t, context)
    assert cn.RESIZES == [] and torch.isfinite(out).all() and handle.stats.control_units == 1


def test_guard_pools_residuals_that_ignore_the_geometry_and_warns_once(sd1, hidiffusion_log):
    """A control model whose encoder cannot be reached: its stock-size residuals are average-pooled, never nearest."""
    x, t, context, hint = inputs(sd1, (32, 32))
    model = controlnet_for(sd1, "sd1")
    cn.install_hook(sd1, [cn.unit(model, hint=hint)])
    try:
        with torch.no_grad(), apply_hidiffusion(sd1, HiDiffusionSettings(t1=0.7, t2=0.3), steps=STEPS) as handle:
            handle.set_step(0)
            handle.patch_control(CONTROLNET, model, None, "opaque_cn.safetensors")
            cn.RESIZES.clear()
            for _ in range(2):
                sd1(x, t, context=context)
    finally:
        cn.remove_hook(sd1)
    assert cn.RESIZES == []
    warnings = [m for m in hidiffusion_log if "opaque_cn.safetensors" in m]
    assert len(warnings) == 1 and "average-pooled" in warnings[0]


def test_exception_inside_the_encoder_leaves_nothing_patched(sd1):
    x, t, context, hint = inputs(sd1, (32, 32))
    model = controlnet_for(sd1, "sd1")
    before, unet_before = cn.fingerprint(model), run_unet(sd1, x[:1])

    def explode(module, args, output):
        raise RuntimeError("out of memory (simulated)")

    victim = model.control_model.zero_convs[5].register_forward_hook(explode)  # after the RAD and the pooling ran
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            run_hooked(sd1, [cn.unit(model, hint=hint)], x, t, context, step=0)
    finally:
        victim.remove()
    assert cn.same_fingerprint(cn.fingerprint(model), before)
    assert torch.equal(run_unet(sd1, x[:1]), unet_before)


def test_control_patch_is_inert_after_remove(sd1):
    """A ControlNet override left behind (its handle gone) passes everything through."""
    x, t, context, hint = inputs(sd1, (32, 32))
    model = controlnet_for(sd1, "sd1")
    stock = model(x=x, hint=hint, timesteps=t, context=context)
    handle = apply_hidiffusion(sd1, HiDiffusionSettings(t1=0.7, t2=0.3), steps=STEPS)
    handle.set_step(0)
    handle.patch_control(CONTROLNET, model, model.control_model, "unit")
    override = model.forward
    handle.remove()
    assert "forward" not in vars(model)
    model.forward = override  # as if the undo had been lost
    try:
        assert all(torch.equal(a, b) for a, b in zip(override(x=x, hint=hint, timesteps=t, context=context), stock))
    finally:
        del model.forward


def script_args(**named):
    return [{"enabled": True, **named}]


def test_generation_with_a_controlnet_unit_runs_raunet_under_its_geometry(sd1, hidiffusion_log):
    """Through the real Script: auto lets RAU-Net run at 640 px, the unit follows it, the console says so."""
    from hidiffusion_ext.webui import session

    module = fake_webui.load_script_module()
    model = controlnet_for(sd1, "sd1")
    before = cn.fingerprint(model)
    hint = torch.rand(1, 3, 640, 640)
    control = cn.ControlNetScript([cn.unit(model, hint=hint)], ["control_sd15_canny [fef5e48e]"])
    p = fake_webui.make_p(sd1, width=640, height=640, steps=4)
    cn.RESIZES.clear()
    processed = fake_webui.process_images(p, module.HiDiffusionScript(), script_args(), others=[control])
    assert not p.scripts.errors, p.scripts.errors
    stats = session.last.passes[(0, False)].patch.stats
    assert (stats.rad_forwards, stats.control_units, stats.control_forwards) == (1, 1, 1) and cn.RESIZES == []
    assert "HiDiffusion note" not in processed.infotext and processed.infotext["HiDiffusion RAU-Net"] is True
    assert any("1 control unit under RAU-Net geometry (1 resized calls)" in m for m in hidiffusion_log)
    assert cn.same_fingerprint(cn.fingerprint(model), before)
    assert all("forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks for m in sd1.modules())


def test_a_unit_that_fails_to_patch_leaves_the_unet_and_every_unit_as_they_were(sd1, monkeypatch):
    """Patching the second unit raises: the U-Net and the first unit are restored before the error surfaces."""
    from hidiffusion_ext.ldm.unet_patch import HiDiffusionHandle

    module = fake_webui.load_script_module()
    first, second = controlnet_for(sd1, "sd1"), controlnet_for(sd1, "sd1")
    before = [cn.fingerprint(first), cn.fingerprint(second)]
    stock_patch_control, calls = HiDiffusionHandle.patch_control, []

    def fail_on_second(self, *args):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("unit could not be patched (simulated)")
        return stock_patch_control(self, *args)

    monkeypatch.setattr(HiDiffusionHandle, "patch_control", fail_on_second)
    hint = torch.rand(1, 3, 640, 640)
    control = cn.ControlNetScript([cn.unit(first, hint=hint), cn.unit(second, hint=hint)], ["a", "b"])
    p = fake_webui.make_p(sd1, width=640, height=640, steps=4)
    fake_webui.process_images(p, module.HiDiffusionScript(), script_args(), others=[control])
    assert len(calls) == 2 and any("simulated" in error for error in p.scripts.errors)
    assert cn.same_fingerprint(cn.fingerprint(first), before[0]) and cn.same_fingerprint(cn.fingerprint(second), before[1])
    assert all("forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks for m in sd1.modules())


def test_lllite_unit_keeps_both_parts_off_and_says_why(sd1):
    from hidiffusion_ext.webui import session

    module = fake_webui.load_script_module()
    lllite = cn.PlugableControlModel(torch.nn.Identity())
    control = cn.ControlNetScript([cn.unit(lllite, "Controlllite")], ["kohya_controllllite_xl_canny"])
    p = fake_webui.make_p(sd1, width=640, height=640, steps=4)
    processed = fake_webui.process_images(p, module.HiDiffusionScript(), script_args(), others=[control])
    assert not p.scripts.errors and session.last.passes == {}
    note = processed.infotext["HiDiffusion note"]
    assert note.startswith("HiDiffusion off for this pass: ControlNet-LLLite (kohya_controllllite_xl_canny)")
    assert all("forward" not in vars(m) and not m._forward_hooks for m in sd1.modules())
