"""The real Script class through simulated A1111 1.10 generations on the real ldm U-Net."""

import fake_webui
import pytest
import torch

from hidiffusion_ext import active_handle
from hidiffusion_ext.webui import session as webui_session


@pytest.fixture
def unet(ldm_unet):
    return ldm_unet("sd1")


@pytest.fixture(autouse=True)
def no_interrupt():
    yield
    from modules import shared

    shared.state.interrupted = False


args = fake_webui.script_args


def untouched(unet):
    return active_handle(unet) is None and all(
        "forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())


def image(unet, script, run_args, **p_kwargs):
    p = fake_webui.make_p(unet, **p_kwargs)
    processed = fake_webui.process_images(p, script, run_args)
    assert not p.scripts.errors, p.scripts.errors
    return p, processed


def test_txt2img_patches_each_pass_and_undoes_it(unet, script):
    _, off = image(unet, script, args(enabled=False))
    p, on = image(unet, script, args())
    gen = webui_session.last
    assert untouched(unet)
    assert on.infotext["HiDiffusion"] is True and on.infotext["HiDiffusion RAU-Net"] is True
    assert "HiDiffusion T1" not in on.infotext  # defaults are not written
    assert "HiDiffusion note" not in on.infotext  # both parts ran
    record = gen.passes[(0, False)]
    assert record.patch.stats.rad_forwards == 1 and record.patch.stats.forwards == 4  # SD1 small class: T1 0.4 of 4
    assert not torch.equal(on.images[0], off.images[0])
    _, off_again = image(unet, script, args(enabled=False))
    assert torch.equal(off_again.images[0], off.images[0]) and "HiDiffusion" not in off_again.infotext


@pytest.mark.parametrize("apply_to, first, hires", [
    ("first pass", True, False), ("hires pass", False, True), ("both", True, True), ("auto", "msw", True)])
def test_hires_fix_apply_to(unet, script, apply_to, first, hires, hidiffusion_log):
    p, processed = image(unet, script, args(apply_to=apply_to), width=256, height=256, enable_hr=True, hr_scale=2)
    passes = webui_session.last.passes
    first_rec, hires_rec = passes.get((0, False)), passes.get((0, True))
    if first == "msw":  # auto: 256 px is below SD1's native area, so only MSW-MSA on the first pass
        assert first_rec.patch.stats.rad_forwards == 0 and first_rec.patch.stats.windowed_calls > 0
    else:
        assert (first_rec is not None) == first
    assert (hires_rec is not None) == hires
    if hires:  # auto: 512 px is SD1's native size, so RAU-Net stays off there too
        assert hires_rec.latent_hw == (64, 64)
        assert hires_rec.patch.stats.rad_forwards == (0 if apply_to == "auto" else 1)
    if apply_to == "auto":  # the infotext and the console say what really ran
        assert processed.infotext["HiDiffusion note"] == (
            "RAU-Net ran on no step (auto: no pass above 1.5x the model's native area)")
        assert any(m.startswith("HiDiffusion first pass 256x256: sd15 small: RAU-Net off (auto: not above 1.5x the "
                                "native area); ") for m in hidiffusion_log)
    else:
        assert "HiDiffusion note" not in processed.infotext
    assert untouched(unet)


def test_a1111_before_1_10_patches_each_pass_from_its_fallback_hooks(unet, script_module, hidiffusion_log,
                                                                     monkeypatch):
    """A1111 1.7-1.9 have no process_before_every_sampling: process_batch patches the first pass and before_hr the
    hires pass, to the same images as 1.10's per-pass hook; the console line names the hook."""
    script = script_module.HiDiffusionScript()
    _, per_pass = image(unet, script, args(), enable_hr=True, hr_scale=2)
    monkeypatch.setattr(script_module, "HAS_PER_PASS_HOOK", False)
    for version_1_7 in (False, True):  # 1.7 also leaves the denoiser out of the callback's params
        p = fake_webui.make_p(unet, enable_hr=True, hr_scale=2)
        p.legacy_hooks, p.params_without_denoiser = True, version_1_7
        fallback = fake_webui.process_images(p, script, args())
        assert not p.scripts.errors, p.scripts.errors
        assert all(torch.equal(a, b) for a, b in zip(fallback.images, per_pass.images)) and untouched(unet)
        first = webui_session.last.passes[(0, False)].patch.stats
        assert first.rad_forwards == 1 and first.forwards == 4  # T1 0.4 of 4 steps: RAD on step 0 only
    lines = [m for m in hidiffusion_log if m.startswith("HiDiffusion ")]
    assert any(m.startswith("HiDiffusion first pass 256x256") and "steps by call count; patched at process_batch;"
               in m for m in lines)
    assert any(m.startswith("HiDiffusion hires pass 512x512") and "; patched at before_hr;" in m for m in lines)
    assert not any("patched at" in m for m in lines[:2])  # 1.10's per-pass hook: no name


def test_raunet_with_no_scheduled_step_is_noted(unet, script):
    p, _ = image(unet, script, args(), steps=2)  # SD1 small class: int(2 * 0.4) = 0 RAD steps, as in the reference
    infotext = p.extra_generation_params
    assert infotext["HiDiffusion RAU-Net"] is True  # the setting, so that a paste at more steps gets RAU-Net
    assert infotext["HiDiffusion note"] == "RAU-Net ran on no step (RAD steps none, pooling steps none of 2)"


def test_auto_uses_raunet_above_native_area(unet, script):
    image(unet, script, args(apply_to="auto"), width=640, height=640)
    assert webui_session.last.passes[(0, False)].patch.stats.rad_forwards == 1


def test_img2img_denoising_half_counts_the_executed_steps(unet, script):
    init = torch.randn(1, 4, 48, 48)
    p, processed = image(unet, script, args(), steps=10, init_latent=init, denoising_strength=0.5)
    record = webui_session.last.passes[(0, False)]
    assert record.patch.steps == 6  # int(0.5 * 10) + 1 executed steps
    assert record.patch.stats.rad_forwards == 2  # SD1 small: T1 0.4 of 6 -> steps 0, 1
    assert untouched(unet)


def test_batch_of_two_and_two_iterations(unet, script):
    p, processed = image(unet, script, args(), batch_size=2, n_iter=2)
    passes = webui_session.last.passes
    assert set(passes) == {(0, False), (1, False)}
    assert processed.images[0].shape[0] == 2 and untouched(unet)


@pytest.mark.parametrize("sampler, rad_calls", [("Euler", 1), ("Heun", 2)])
def test_second_order_sampler_maps_both_calls_to_one_step(unet, script, sampler, rad_calls):
    image(unet, script, args(), sampler=sampler, steps=4)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.rad_forwards == rad_calls  # step 0 only (int(4 * 0.4) = 1)
    assert stats.forwards == (7 if sampler == "Heun" else 4)


def test_exception_mid_sampling_then_clean_generation_is_bit_identical(unet, script):
    _, reference = image(unet, script, args(enabled=False), seed=5)
    calls = []

    def explode(module, inputs, output):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")

    victim = unet.output_blocks[5].register_forward_hook(explode)
    try:
        p = fake_webui.make_p(unet, seed=5)
        with pytest.raises(RuntimeError, match="out of memory"):
            fake_webui.process_images(p, script, args())
    finally:
        victim.remove()
    assert untouched(unet)  # the try/finally around p.sample already undid it
    assert p.sampler.func is fake_webui.sample_loop  # and the schedule capture on the sampler
    _, after = image(unet, script, args(enabled=False), seed=5)
    assert torch.equal(after.images[0], reference.images[0])


def test_leftover_patch_from_a_crashed_run_is_removed_before_the_next(unet, script):
    """Even if something bypassed our finally (e.g. an older copy of the extension), before_process cleans up."""
    from hidiffusion_ext import apply_hidiffusion

    _, reference = image(unet, script, args(enabled=False), seed=6)
    apply_hidiffusion(unet, steps=4)  # a stray patch
    _, after = image(unet, script, args(enabled=False), seed=6)
    assert torch.equal(after.images[0], reference.images[0]) and untouched(unet)


def test_interrupt_returns_normally_and_unpatches(unet, script):
    from modules import script_callbacks, shared

    def interrupt_after_first(params):
        if params.denoiser.step == 1:
            shared.state.interrupted = True

    script_callbacks.on_cfg_denoiser(interrupt_after_first)
    try:
        p, processed = image(unet, script, args(), enable_hr=True)
    finally:
        script_callbacks.callback_map["callbacks_cfg_denoiser"].remove(
            next(c for c in script_callbacks.callback_map["callbacks_cfg_denoiser"] if c.callback is interrupt_after_first))
    assert untouched(unet)
    assert processed.infotext["HiDiffusion"] is True  # step 0 was modified before the interrupt
    assert (0, True) not in webui_session.last.passes  # no hires pass after an interrupt


def test_refiner_switch_mid_sampling_runs_unpatched_and_base_is_unpatched(unet, script, ldm_unet):
    """apply_refiner inside CFGDenoiser.forward: a new model object, on_model_loaded, no script hook."""
    from modules import script_callbacks

    refiner = ldm_unet("refiner")
    refiner_context = next(m.attn2.to_k.in_features for m in refiner.modules() if hasattr(m, "attn2"))

    def switch(params):
        p = params.denoiser.p
        if params.denoiser.step == 2 and p.sd_model.model.diffusion_model is unet:
            p.sd_model = fake_webui.SimpleNamespace(model=fake_webui.SimpleNamespace(diffusion_model=refiner))
            p.context = torch.ones(1, 3, refiner_context) * 0.1
            params.text_cond = params.text_uncond = p.context
            script_callbacks.model_loaded_callback(p.sd_model)

    callbacks = script_callbacks.callback_map["callbacks_cfg_denoiser"]
    callbacks.insert(0, script_callbacks.ScriptCallback("refiner.py", switch))  # runs before ours, as apply_refiner
    try:
        p = fake_webui.make_p(unet)
        processed = fake_webui.process_images(p, script, args())
    finally:
        callbacks.pop(0)
    assert not p.scripts.errors and not script_callbacks.errors
    assert untouched(unet) and untouched(refiner)
    assert webui_session.last.passes[(0, False)].patch.stats.forwards == 2  # base calls before the switch
    assert processed.infotext["HiDiffusion"] is True


def test_forge_host_patches_a_clone_per_pass_without_doubling_the_hires_call(unet, script):
    """The same script on a Forge-shaped p: clone patched, original patcher and module untouched."""
    p = fake_webui.make_forge_p(unet, width=256, height=256, enable_hr=True, hr_scale=2)
    original = p.forge_original
    processed = fake_webui.process_images(p, script, args())
    assert not p.scripts.errors, p.scripts.errors
    passes = webui_session.last.passes
    assert set(passes) == {(0, False), (0, True)}  # the doubled hires hook call replaced, not added
    assert passes[(0, True)].patch.stats.forwards == 4 and passes[(0, True)].patch.stats.rad_forwards == 1
    assert passes[(0, True)].step_sources == {"noise level"}  # the replaced patch's schedule capture gave way
    assert getattr(p.sampler.func, "_hidiffusion_capture", False) is False  # and nothing of it is left on the sampler
    assert processed.infotext["HiDiffusion"] is True
    assert not original.object_patches and not original.model_options["transformer_options"].get("patches")
    p.forge_runtime.unload()
    assert untouched(unet)


def test_pass_seconds_time_the_unet_sampling_only(unet, script):
    """A1111's hires pass decodes the first pass inside p.sample: that time belongs to neither pass."""
    p = fake_webui.make_p(unet, width=256, height=256, enable_hr=True, hr_scale=2)
    p.decode_seconds = 0.3
    fake_webui.process_images(p, script, args())
    first, hires = webui_session.last.passes[(0, False)], webui_session.last.passes[(0, True)]
    decode_start, decode_end = p.decode_window
    assert first.first_call < first.last_return <= decode_start
    assert decode_end <= hires.first_call < hires.last_return
    assert 0 < first.seconds < decode_start - first.first_call + 1e-9 and hires.seconds > 0
