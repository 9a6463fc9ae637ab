"""The Forge adapter (patches on a UnetPatcher clone) against the ldm adapter on the same weights.

Forge is stood in for by tests/forge_stub.py, which runs the real ldm blocks in Forge's order; both paths use
the same attention kernel, so they agree to rounding (relative error <= 1e-5 in fp32).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from forge_stub import StubForge, StubUnetPatcher, attention_function, unet_forward
from torch import nn

from hidiffusion_ext import HiDiffusionSettings, UnsupportedModelError, apply_hidiffusion
from hidiffusion_ext.forge.unet_patch import NOT_A_UNET, REFINER, forge_unsupported_reason, patch_forge_unet

TOLERANCE = 1e-5
STEPS, SEED = 10, 1234
SIZES = {"square": (32, 32), "nonsquare": (40, 24), "odd": (33, 25)}
# Settings per shape, and steps covering each phase at N=10: (RAD [+ pooling], RAD or pooling only, inactive).
CASES = {
    "sd1": (HiDiffusionSettings(t1=0.7, t2=0.3), (0, 5, 8)),  # RAD steps 0-6, pooling 0-2
    "sdxl": (HiDiffusionSettings(), (0, 2, 7)),  # aggressive: RAD step 0, pooling 1-3
}


def _inputs(unet, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    context_dim = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    x = torch.randn(2, 4, *hw, generator=g)
    context = torch.randn(2, 7, context_dim, generator=g)  # cond and uncond rows differ, as with CFG
    return x, context


def _timesteps(step):
    return torch.full((2,), 999.0 - 99.0 * step)


def _ldm_path(unet, settings, steps, x, context):
    with torch.no_grad(), apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
        outputs = []
        for i in steps:
            handle.set_step(i)
            outputs.append(unet(x, _timesteps(i), context=context))
    return outputs, handle.stats


def _forge_path(patcher, settings, steps, x, context, forge=None):
    forge = forge or StubForge()
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED, attention=attention_function)
    try:
        outputs = []
        for i in steps:
            result.set_step(i)
            outputs.append(forge.denoise(result.patcher, x, _timesteps(i), context))
    finally:
        forge.unload()
    return outputs, result


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _assert_close(ours, reference, label):
    errors = [_rel(a, b) for a, b in zip(ours, reference, strict=True)]
    assert max(errors) <= TOLERANCE, f"{label}: relative errors {errors}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", CASES)
def test_forge_path_matches_ldm_path(ldm_unet, shape, size):
    unet = ldm_unet(shape)
    settings, steps = CASES[shape]
    x, context = _inputs(unet, SIZES[size])
    reference, ldm_stats = _ldm_path(unet, settings, steps, x, context)
    ours, result = _forge_path(StubUnetPatcher.around(unet), settings, steps, x, context)
    _assert_close(ours, reference, f"{shape} {size}")
    assert result.stats == ldm_stats
    assert result.stats.rad_forwards >= 1 and result.stats.pool_forwards >= 1 and result.stats.windowed_calls > 0


def test_stub_driver_matches_ldm_unpatched(ldm_unet):
    """Keeps the stand-in honest: with no patches it computes what the ldm U-Net computes."""
    unet = ldm_unet("sdxl")
    x, context = _inputs(unet, (32, 32))
    with torch.no_grad():
        reference = unet(x, _timesteps(0), context=context)
        ours = unet_forward(unet, x, _timesteps(0), context, {})
    assert _rel(ours, reference) <= TOLERANCE


def test_patch_really_changes_the_output(ldm_unet):
    unet = ldm_unet("sd1")
    x, context = _inputs(unet, (32, 32))
    plain = StubForge().denoise(StubUnetPatcher.around(unet), x, _timesteps(0), context)
    (patched,), _ = _forge_path(StubUnetPatcher.around(unet), HiDiffusionSettings(), (0,), x, context)
    assert _rel(patched, plain) > 100 * TOLERANCE


def test_odd_windows_global_matches_ldm_path(ldm_unet):
    unet = ldm_unet("sd1")
    settings = HiDiffusionSettings(odd_windows="global")
    x, context = _inputs(unet, SIZES["odd"])
    reference, ldm_stats = _ldm_path(unet, settings, (0, 8), x, context)
    ours, result = _forge_path(StubUnetPatcher.around(unet), settings, (0, 8), x, context)
    _assert_close(ours, reference, "sd1 odd, global")
    assert result.stats == ldm_stats


def _module_snapshot(unet):
    modules = {name: m for name, m in unet.named_modules()}
    return modules, {k: v.clone() for k, v in unet.state_dict().items()}


def _assert_module_untouched(unet, snapshot):
    modules, state = snapshot
    assert {name: m for name, m in unet.named_modules()} == modules  # same objects: nothing swapped in
    assert unet.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    for m in unet.modules():
        assert "forward" not in m.__dict__ and not m._forward_hooks and not m._forward_pre_hooks
        if isinstance(m, nn.Conv2d):
            assert m.dilation == (1, 1)


def test_input_patcher_and_module_untouched(ldm_unet):
    unet = ldm_unet("sd1")
    patcher = StubUnetPatcher.around(unet)
    options, module = copy.deepcopy(patcher.model_options), _module_snapshot(unet)
    x, context = _inputs(unet, (40, 24))
    forge = StubForge()
    result = patch_forge_unet(patcher, steps=STEPS, seed=SEED, attention=attention_function)
    assert result.patcher is not patcher and patcher.clones_made == 1
    _assert_module_untouched(unet, module)
    result.set_step(0)
    forge.denoise(result.patcher, x, _timesteps(0), context)
    _assert_module_untouched(unet, module)  # also while the clone is loaded: the RAD conv is dilated only in its block
    forge.unload()
    _assert_module_untouched(unet, module)
    assert patcher.model_options == options and patcher.object_patches == {}


class _FluxLike(nn.Module):
    config = {"model_channels": None}


class _RefinerConfig(nn.Module):
    config = {"model_channels": 384, "channel_mult": [1, 2, 4, 4], "adm_in_channels": 2560}


@pytest.mark.parametrize("make, expected", [
    (lambda unet: _FluxLike(), NOT_A_UNET),
    (lambda unet: _RefinerConfig(), REFINER),
    (lambda unet: unet("refiner"), "refiner"),  # structural: 4 levels, no attention at level 0
    (lambda unet: nn.Linear(2, 2), "input_blocks"),  # an MMDiT-like module without a config
])
def test_unsupported_models_refused_before_cloning(ldm_unet, make, expected):
    patcher = StubUnetPatcher.around(make(ldm_unet))
    reason = forge_unsupported_reason(patcher)
    assert reason is not None and reason.startswith("not applied") and expected.lower() in reason.lower()
    assert "\n" not in reason
    with pytest.raises(UnsupportedModelError):
        patch_forge_unet(patcher, steps=STEPS)
    assert patcher.clones_made == 0


def test_unsupported_reason_never_raises():
    class Broken:
        @property
        def model(self):
            raise RuntimeError("boom")

    assert forge_unsupported_reason(None).startswith("not applied")
    assert "boom" in forge_unsupported_reason(Broken())


def test_supported_models_have_no_reason(ldm_unet):
    assert forge_unsupported_reason(StubUnetPatcher.around(ldm_unet("sd1"))) is None
    assert forge_unsupported_reason(StubUnetPatcher.around(ldm_unet("sdxl"))) is None


def test_composes_with_kohya_style_block_patches(ldm_unet):
    unet = ldm_unet("sdxl")
    settings, steps = CASES["sdxl"]
    seen = []

    def kohya_input(h, transformer_options):
        seen.append(transformer_options["block"])
        return h

    def kohya_output(h, hsp, transformer_options):  # Kohya HRFix resizes h to the skip when they differ
        return (h if h.shape[2] == hsp.shape[2] else F.interpolate(h, size=hsp.shape[-2:], mode="bicubic")), hsp

    kohya = StubUnetPatcher.around(unet).clone()
    kohya.set_model_input_block_patch(kohya_input)
    kohya.set_model_output_block_patch(kohya_output)
    x, context = _inputs(unet, (40, 24))
    reference, _ = _ldm_path(unet, settings, steps, x, context)
    ours, result = _forge_path(kohya, settings, steps, x, context)
    _assert_close(ours, reference, "with Kohya-style patches")
    patches = result.patcher.model_options["transformer_options"]["patches"]
    assert patches["input_block_patch"][0] is kohya_input and len(patches["input_block_patch"]) == 2
    assert kohya.model_options["transformer_options"]["patches"]["input_block_patch"] == [kohya_input]
    assert seen.count(("input", 4)) == len(steps) and len(seen) == len(steps) * len(unet.input_blocks)


def test_other_attn1_replace_is_windowed_not_dropped(ldm_unet):
    unet = ldm_unet("sd1")
    batches = []

    def other(q, k, v, extra_options):
        batches.append(q.shape[0])
        return attention_function(q, k, v, extra_options["n_heads"])

    patcher = StubUnetPatcher.around(unet).clone()
    patcher.set_model_attn1_replace(other, "input", 1, 0)
    x, context = _inputs(unet, (32, 32))
    reference, _ = _ldm_path(unet, HiDiffusionSettings(), (0,), x, context)
    ours, _ = _forge_path(patcher, HiDiffusionSettings(), (0,), x, context)
    _assert_close(ours, reference, "with another attn1 replace")
    assert batches == [x.shape[0]] * 4  # once per window, each time with the batch as Forge built it


@pytest.mark.parametrize("keywords", [{}, {"attn_precision": torch.float32}])
def test_the_kernel_inside_the_windows_gets_the_host_keywords(ldm_unet, keywords):
    """What the host's block hands an attn1 replace for its kernel (reForge main: attn_precision, fp32 for SD2.x)
    reaches the kernel in every window; a host that hands none (Forge main, Neo, Classic) gets (q, k, v, heads, None)."""
    unet = ldm_unet("sd1")
    calls = []

    def kernel(q, k, v, heads, mask=None, **host_keywords):
        calls.append(host_keywords)
        return attention_function(q, k, v, heads, mask)

    patcher = StubUnetPatcher.around(unet).clone()
    for name, value in keywords.items():  # the stand-in's block hands transformer options on in extra_options, as hosts do
        patcher.set_transformer_option(name, value)
    result = patch_forge_unet(patcher, HiDiffusionSettings(raunet=False), steps=STEPS, seed=SEED, attention=kernel)
    result.set_step(0)
    x, context = _inputs(unet, (32, 32))
    forge = StubForge()
    forge.denoise(result.patcher, x, _timesteps(0), context)
    forge.unload()
    assert result.stats.windowed_calls > 0 and calls == [keywords] * len(calls)


def test_repatch_while_a_stale_clone_is_loaded(ldm_unet):
    """Forge keeps the last clone loaded until another clone loads; the stale clone's patches pass through."""
    unet = ldm_unet("sd1")
    module = _module_snapshot(unet)
    base, forge = StubUnetPatcher.around(unet), StubForge()
    x, context = _inputs(unet, (32, 32))
    reference, _ = _ldm_path(unet, HiDiffusionSettings(), (0,), x, context)
    first = patch_forge_unet(base, steps=STEPS, seed=SEED, attention=attention_function)
    forge.denoise(first.patcher, x, _timesteps(0), context)
    assert first.stats.rad_forwards == 1 and unet.input_blocks[3][0].op.dilation == (1, 1)
    ours, second = _forge_path(base, HiDiffusionSettings(), (0,), x, context, forge)
    _assert_close(ours, reference, "re-patched")
    assert second.unet_map == first.unet_map
    _assert_module_untouched(unet, module)


def test_repatching_a_patched_patcher_does_not_stack(ldm_unet):
    unet = ldm_unet("sd1")
    x, context = _inputs(unet, (32, 32))
    reference, _ = _ldm_path(unet, HiDiffusionSettings(), (0,), x, context)
    first = patch_forge_unet(StubUnetPatcher.around(unet), steps=STEPS, seed=SEED, attention=attention_function)
    ours, second = _forge_path(first.patcher, HiDiffusionSettings(), (0,), x, context)
    _assert_close(ours, reference, "patched twice")
    options = second.patcher.model_options
    assert len(options["transformer_options"]["patches"]["input_block_patch"]) == 1
    assert len(options["transformer_options"]["patches"]["output_block_patch"]) == 1
    assert len(options["conditioning_modifiers"]) == 2  # the control watch and the other-RAU-Net watch
    assert first.stats.forwards == 0 and second.stats.forwards == 1


def test_disabled_parts_add_no_patches(ldm_unet):
    patcher = StubUnetPatcher.around(ldm_unet("sdxl"))
    raunet_only = patch_forge_unet(patcher, HiDiffusionSettings(mswmsa=False), steps=STEPS).patcher
    assert "patches_replace" not in raunet_only.model_options["transformer_options"]
    mswmsa_only = patch_forge_unet(patcher, HiDiffusionSettings(raunet=False), steps=STEPS).patcher
    options = mswmsa_only.model_options["transformer_options"]
    assert mswmsa_only.object_patches == {} and "controlnet_model_function_wrapper" not in options
    pool, restore = options["patches"]["input_block_patch"][0], options["patches"]["output_block_patch"][0]
    h = torch.ones(1, 4, 8, 8)  # the per-forward patches only read the block index and the size: nothing pooled
    assert pool(h, {"block": ("input", 1), "original_shape": [1, 4, 8, 8]}) is h
    assert restore(h, h, {"block": ("output", 3)}) == (h, h)
    replaces = mswmsa_only.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert sorted(replaces) == [("input", 4, 0), ("input", 5, 0), ("output", 3, 0), ("output", 4, 0), ("output", 5, 0)]


def test_set_step_and_resolved_for(ldm_unet):
    result = patch_forge_unet(StubUnetPatcher.around(ldm_unet("sdxl")), steps=10)
    assert result.family == "sdxl" and result.resolved_for((32, 32)).schedule.rad == range(1)
    result.set_step(3, steps=50)
    assert result.step == 3 and result.resolved_for((32, 32)).schedule.rad == range(8)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            result.set_step(bad)
    with pytest.raises(ValueError):
        patch_forge_unet(StubUnetPatcher.around(ldm_unet("sdxl")), steps=0)
