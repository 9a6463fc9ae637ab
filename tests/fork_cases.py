"""The gated cases every Forge fork runs (test_classic_real, test_reforge_real, test_neo_real import them).

Each runs a small U-Net built by the fork's own classes (tests/fork_backend.py) through the fork's own patcher, loader
and sampling path (conditioning modifiers, the sampling function, get_control, the U-Net's patch points), against the
ldm adapter on Stability's ldm UNetModel with the same weights: the fork's U-Net is ldm's code (ldm_patched, or
Forge's backend rewrite of it), so the only difference is the attention kernel (relative error <= 1e-4 in fp32,
as tests/test_forge_real.py bounds Forge main). A test file provides the ``host`` fixture.
"""

import pytest
import torch

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.forge.unet_patch import patch_forge_unet, without_hidiffusion

TOLERANCE = 1e-4  # the fork's CPU attention kernel vs ldm's einsum attention; the rest is the same arithmetic
STEPS, SEED, CFG = 10, 1234, 7.0
SIZES = {"square": (32, 32), "nonsquare": (40, 24), "odd": (33, 25)}
CASES = {
    "sd1": (HiDiffusionSettings(t1=0.7, t2=0.3), (0, 5, 8)),  # RAD steps 0-6, pooling 0-2, then inactive
    "sdxl": (HiDiffusionSettings(), (0, 2, 7)),  # aggressive: RAD step 0, pooling 1-3, then inactive
}
CN_SETTINGS, CN_SIZE = HiDiffusionSettings(t1=0.7, t2=0.3), (25, 17)  # odd: every halving rounds up


@pytest.fixture(scope="module")
def nets(host):
    """(ldm U-Net, the fork's UnetPatcher) with identical weights, per shape."""
    cache = {}

    def get(shape):
        if shape not in cache:
            params = unet_params(shape)
            ldm = build_ldm_unet(params, seed=1)
            cache[shape] = ldm, host.build_patcher(params, ldm.state_dict())
        return cache[shape]

    return get


def sigma(step):
    return torch.tensor([14.6 * 0.7**step])


def inputs(ldm, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    context_dim = next(m.attn2.to_k.in_features for m in ldm.modules() if hasattr(m, "attn2"))
    return torch.randn(1, 4, *hw, generator=g), torch.randn(2, 7, context_dim, generator=g)


def ldm_denoised(predictor, ldm, x, context, step):
    """What the fork's denoiser returns, computed on ldm: eps -> x0 for cond and uncond, then CFG."""
    s = sigma(step).expand(2)
    x_in = predictor.calculate_input(s, torch.cat([x, x]))
    with torch.no_grad():
        eps = ldm(x_in, predictor.timestep(s).float(), context=context)
    cond, uncond = (x - e[None] * s[0] for e in eps)
    return uncond + (cond - uncond) * CFG


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_unpatched_fork_unet_matches_ldm(host, nets):
    ldm, patcher = nets("sd1")
    x, context = inputs(ldm, (32, 32))
    ours = host.denoise(patcher, x, context, sigma(0))
    assert rel(ours, ldm_denoised(host.predictor(patcher), ldm, x, context, 0)) <= TOLERANCE


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", CASES)
def test_fork_path_matches_ldm_path_and_undoes_exactly(host, nets, shape, size):
    ldm, patcher = nets(shape)
    settings, steps = CASES[shape]
    x, context = inputs(ldm, SIZES[size])
    predictor, unet = host.predictor(patcher), patcher.model.diffusion_model
    stock = host.denoise(patcher, x, context, sigma(steps[0]))
    options = repr(patcher.model_options)
    with apply_hidiffusion(ldm, settings, steps=STEPS, seed=SEED) as handle:
        reference = [handle.set_step(i) or ldm_denoised(predictor, ldm, x, context, i) for i in steps]
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED)
    ours = [result.set_step(i) or host.denoise(result.patcher, x, context, sigma(i)) for i in steps]
    result.remove()
    errors = [rel(a, b) for a, b in zip(ours, reference, strict=True)]
    assert max(errors) <= TOLERANCE, f"{shape} {size}: relative errors {errors}"
    assert result.stats == handle.stats
    assert result.stats.rad_forwards and result.stats.pool_forwards and result.stats.windowed_calls

    # Removal: the input patcher never changed, and the stock path is bit-exact once the clone is gone.
    assert repr(patcher.model_options) == options and not patcher.object_patches
    assert torch.equal(host.denoise(patcher, x, context, sigma(steps[0])), stock)
    down = unet.input_blocks[result.roles.rad_block][0]
    assert type(down) is host.Downsample and (down.op.stride, down.op.dilation) == ((2, 2), (1, 1))


def test_a_later_pass_never_sees_this_pass_patch(host, nets):
    """A host that hands the hires pass the first pass's patched clone (no forge_objects reset) gets a clone
    without our patches from without_hidiffusion (session.patch_pass calls it for every pass): bit-exact stock."""
    ldm, patcher = nets("sd1")
    x, context = inputs(ldm, (32, 32))
    stock = host.denoise(patcher, x, context, sigma(0))
    first = patch_forge_unet(patcher, CASES["sd1"][0], steps=STEPS, seed=SEED)
    first.set_step(0)
    host.denoise(first.patcher, x, context, sigma(0))
    first.remove()
    clean = without_hidiffusion(first.patcher)
    assert clean is not first.patcher and without_hidiffusion(patcher) is patcher
    assert without_hidiffusion(clean) is clean and not clean.object_patches  # nothing of ours left on it
    assert torch.equal(host.denoise(clean, x, context, sigma(0)), stock)
    assert first.stats.forwards == 1


def test_controlnet_residual_i_has_the_size_of_skip_i(host, nets, capfd, caplog):
    """The fork's ControlNet (its cldm encoder, its ControlNet object, added by its apply_controlnet_advanced) under
    HiDiffusion: at RAD+pooling, RAD only and stock steps every residual has exactly its skip's size when the U-Net
    adds it, so no host resizes (reForge main would, bicubically) or drops (Forge, Classic) anything."""
    ldm, base = nets("sd1")
    x, context = inputs(ldm, CN_SIZE, seed=3)
    hint = torch.rand(1, 3, CN_SIZE[0] * 8, CN_SIZE[1] * 8, generator=torch.Generator().manual_seed(4))
    controlnet = host.build_controlnet(unet_params("sd1"), seed=21)
    patcher = host.with_control(base, controlnet, hint)
    fingerprint = {k: v.clone() for k, v in controlnet.control_model.state_dict().items()}

    plain = patch_forge_unet(base, CN_SETTINGS, steps=STEPS, seed=SEED)
    baseline = [plain.set_step(i) or host.denoise(plain.patcher, x, context, sigma(i)) for i in (0, 4, 8)]
    plain.remove()

    result = patch_forge_unet(patcher, CN_SETTINGS, steps=STEPS, seed=SEED)
    pairs, residuals = [], []

    def record_skip(h, hsp, transformer_options):  # after ours: the skip as the U-Net stores it (pooled or not)
        pairs.append((tuple(hsp.shape[-2:]), residuals[-1].pop() if residuals[-1] else None))
        return h, hsp

    result.patcher.set_model_output_block_patch(record_skip)
    unet = base.model.diffusion_model
    hook = unet.register_forward_pre_hook(
        lambda module, args, kwargs: residuals.append(
            [tuple(c.shape[-2:]) for c in ((kwargs.get("control") or {}).get("output") or [])]), with_kwargs=True)
    caplog.set_level("DEBUG")
    try:
        outputs = [result.set_step(i) or host.denoise(result.patcher, x, context, sigma(i)) for i in (0, 4, 8)]
    finally:
        hook.remove()
        result.remove()
    assert len(residuals) == 3 and len(pairs) == 3 * len(unet.output_blocks)
    assert all(control is not None for _, control in pairs)
    assert [skip for skip, _ in pairs] == [control for _, control in pairs]
    assert (result.stats.rad_forwards, result.stats.pool_forwards) == (2, 1)
    assert result.stats.control_units == 1 and result.stats.control_forwards == 2 and result.notes == []
    assert "could not be applied" not in capfd.readouterr().out and "Resizing control" not in caplog.text
    assert all(rel(a, b) > 1e-3 for a, b in zip(outputs, baseline, strict=True))  # the control reached the output
    state = controlnet.control_model.state_dict()
    assert "forward" not in vars(controlnet.control_model) and all(torch.equal(state[k], v) for k, v in fingerprint.items())


def test_fork_operations_priced_like_ldm(nets):
    """The cost model prices the U-Net the fork built under its own operations exactly like the ldm one."""
    for shape in ("sd1", "sdxl"):
        ldm, patcher = nets(shape)
        costs = inspect_unet(patcher.model.diffusion_model).block_costs
        assert costs == inspect_unet(ldm).block_costs and any(c.self_attention > 0 for c in costs)


def test_another_rau_net_on_the_model_means_ours_runs_nothing(host, nets):
    """neo_jankhidiffusion object-patches the Downsample/Upsample forwards on its clone: we note it and stand down
    rather than stack two RAU-Nets, whether its clone came before ours (seen on the patcher) or after (seen on the
    loaded U-Net by our conditioning modifier, before the first U-Net call)."""
    ldm, patcher = nets("sd1")
    x, context = inputs(ldm, (32, 32))
    down = patcher.model.diffusion_model.input_blocks[3][0]

    class HDForward:  # the shape of neo_jankhidiffusion's object patch: a callable in place of the forward
        def __call__(self, x):
            return down.op(x)

    before = patcher.clone()
    before.add_object_patch("diffusion_model.input_blocks.3.0.forward", HDForward())
    result = patch_forge_unet(before, CASES["sd1"][0], steps=STEPS, seed=SEED)
    assert result.patcher is before and result.removed and "neo_jankhidiffusion" in result.notes[0]
    assert "input_blocks.3.0.forward (HDForward)" in result.notes[0]

    after = patch_forge_unet(patcher, CASES["sd1"][0], steps=STEPS, seed=SEED)
    down.forward = HDForward()  # what the loader does with its object patch when its clone is loaded
    try:
        after.set_step(0)
        out = host.denoise(after.patcher, x, context, sigma(0))
    finally:
        del down.forward
    assert after.removed and "neo_jankhidiffusion" in after.notes[0] and after.stats.forwards == 0
    assert torch.isfinite(out).all()
