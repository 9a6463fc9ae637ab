"""The Forge adapter on Forge's real backend against the ldm adapter, same weights (needs FORGE_DIR).

Runs Forge's IntegratedUNet2DConditionModel (built under Forge's own operations), KModel, UnetPatcher,
memory_management.load_models_gpu (which applies and undoes object patches) and calc_cond_uncond_batch (which
builds transformer_options per call), with Forge's CPU attention kernel: relative error <= 1e-4 in fp32.

Run with FORGE_DIR=/path/to/stable-diffusion-webui-forge (a checkout of main); skipped otherwise. Forge's backend is
imported by tests/forge_backend.py (with stand-ins for three packages this project does not install).
"""

import os

import pytest
import torch
from forge_backend import forge_backend

from hidiffusion_ext import HiDiffusionSettings, UnsupportedModelError, apply_hidiffusion
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.forge.unet_patch import REFINER, forge_unsupported_reason, patch_forge_unet

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(FORGE_DIR, "backend")),
                                reason="set FORGE_DIR to a stable-diffusion-webui-forge checkout")

TOLERANCE = 1e-4  # Forge's sub-quadratic CPU attention vs ldm's einsum attention
STEPS, SEED = 10, 1234
SIZES = {"square": (32, 32), "nonsquare": (40, 24), "odd": (33, 25)}
CASES = {
    "sd1": (HiDiffusionSettings(t1=0.7, t2=0.3), (0, 5, 8)),  # RAD steps 0-6, pooling 0-2, then inactive
    "sdxl": (HiDiffusionSettings(), (0, 2, 7)),  # aggressive: RAD step 0, pooling 1-3, then inactive
}


@pytest.fixture(scope="module")
def forge():
    with forge_backend(FORGE_DIR) as backend:
        yield backend


def forge_config(params: dict, **extra) -> dict:
    """The IntegratedUNet2DConditionModel config of an ldm UNetModel's params (per-ResBlock transformer depths)."""
    attention = [2**level in params["attention_resolutions"] for level in range(len(params["channel_mult"]))]
    depth, blocks = params["transformer_depth"], params["num_res_blocks"]
    return dict(
        in_channels=params["in_channels"], model_channels=params["model_channels"], out_channels=params["out_channels"],
        num_res_blocks=blocks, channel_mult=list(params["channel_mult"]), num_heads=params.get("num_heads", -1),
        num_head_channels=params.get("num_head_channels", -1), use_spatial_transformer=True,
        transformer_depth=[depth if a else 0 for a in attention for _ in range(blocks)],
        transformer_depth_output=[depth if a else 0 for a in attention for _ in range(blocks + 1)],
        transformer_depth_middle=depth, context_dim=params["context_dim"],
        use_linear_in_transformer=params["use_linear_in_transformer"], **extra,
    )


def _forge_patcher(forge, params, state_dict=None, **extra):
    config = forge_config(params, **extra)
    if state_dict is None:  # Forge's operations create weights only when a state dict is loaded
        torch.manual_seed(2)
        state_dict = forge.IntegratedUNet2DConditionModel.from_config(config).state_dict()
    with forge.using_forge_operations(device=torch.device("cpu"), dtype=torch.float32):
        unet = forge.IntegratedUNet2DConditionModel.from_config(config)
    unet.load_state_dict(state_dict, strict=True)  # Forge's key layout is ldm's
    unet.storage_dtype = unet.computation_dtype = torch.float32
    kmodel = forge.KModel(unet, diffusers_scheduler=None, k_predictor=forge.Prediction(prediction_type="epsilon"))
    cpu = torch.device("cpu")
    return forge.UnetPatcher(kmodel, load_device=cpu, offload_device=cpu)


@pytest.fixture(scope="module")
def nets(forge):
    """(ldm unet, Forge UnetPatcher) with identical weights, per shape."""
    cache = {}

    def get(shape):
        if shape not in cache:
            params = unet_params(shape)
            ldm = build_ldm_unet(params, seed=1)
            cache[shape] = ldm, _forge_patcher(forge, params, ldm.state_dict())
        return cache[shape]

    return get


def _inputs(context_dim, hw):
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 4, *hw, generator=g), torch.randn(2, 7, context_dim, generator=g)


def _sigma(step):
    return torch.tensor([14.6 * 0.7**step])


def _forge_eps(forge, patcher, x, context, step):
    """One denoiser call (cond and uncond batched) through Forge's loader and calc_cond_uncond_batch."""
    forge.memory_management.load_models_gpu([patcher])
    cond = [{"model_conds": {"c_crossattn": forge.ConditionCrossAttn(context[:1])}}]
    uncond = [{"model_conds": {"c_crossattn": forge.ConditionCrossAttn(context[1:])}}]
    sigma = _sigma(step)
    with torch.no_grad():
        denoised = forge.calc_cond_uncond_batch(patcher.model, cond, uncond, x, sigma, patcher.model_options)
    return torch.cat([(x - d) / sigma for d in denoised])


def _ldm_eps(predictor, ldm, x, context, step):
    sigma = _sigma(step).expand(2)
    x_in = predictor.calculate_input(sigma, torch.cat([x, x]))
    with torch.no_grad():
        return ldm(x_in, predictor.timestep(sigma).float(), context=context)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _context_dim(ldm):
    return next(m.attn2.to_k.in_features for m in ldm.modules() if hasattr(m, "attn2"))


def test_forge_unet_unpatched_matches_ldm(forge, nets):
    ldm, patcher = nets("sd1")
    x, context = _inputs(_context_dim(ldm), (32, 32))
    ours = _forge_eps(forge, patcher, x, context, 0)
    assert _rel(ours, _ldm_eps(patcher.model.predictor, ldm, x, context, 0)) <= TOLERANCE


@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_forge_operations_priced_like_ldm(nets, shape):
    """The cost model prices the U-Net Forge builds under its own operations (whose Linear is not an nn.Linear)
    exactly like the ldm one, so the readout's "≈ −N%" is the same on both hosts."""
    ldm, patcher = nets(shape)
    forge_costs = inspect_unet(patcher.model.diffusion_model).block_costs
    assert forge_costs == inspect_unet(ldm).block_costs
    assert any(cost.self_attention > 0 for cost in forge_costs)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", CASES)
def test_real_forge_path_matches_ldm_path(forge, nets, shape, size):
    ldm, patcher = nets(shape)
    settings, steps = CASES[shape]
    x, context = _inputs(_context_dim(ldm), SIZES[size])
    predictor, unet = patcher.model.predictor, patcher.model.diffusion_model
    options = patcher.model_options.copy()
    with apply_hidiffusion(ldm, settings, steps=STEPS, seed=SEED) as handle:
        reference = [handle.set_step(i) or _ldm_eps(predictor, ldm, x, context, i) for i in steps]
    assert forge_unsupported_reason(patcher) is None
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED)
    ours = [result.set_step(i) or _forge_eps(forge, result.patcher, x, context, i) for i in steps]
    errors = [_rel(a, b) for a, b in zip(ours, reference, strict=True)]
    assert max(errors) <= TOLERANCE, f"{shape} {size}: relative errors {errors}"
    assert result.stats == handle.stats and result.stats.rad_forwards and result.stats.pool_forwards

    forge.memory_management.unload_model_clones(patcher)
    rad_block = unet.input_blocks[result.roles.rad_block]
    assert type(rad_block[0]) is forge.Downsample and rad_block[0].op.stride == (2, 2)
    assert patcher.model_options == options and patcher.object_patches == {}


def test_attention_kernel_looked_up_at_call_time(forge, nets, monkeypatch):
    ldm, patcher = nets("sd1")
    seen = []
    kernel = forge.attention.attention_function

    def counting(q, k, v, heads, mask=None):
        seen.append(q.shape[0])
        return kernel(q, k, v, heads, mask)

    result = patch_forge_unet(patcher, steps=STEPS, seed=SEED)
    monkeypatch.setattr(forge.attention, "attention_function", counting)  # after patching
    x, context = _inputs(_context_dim(ldm), (32, 32))
    _forge_eps(forge, result.patcher, x, context, 0)
    forge.memory_management.unload_model_clones(patcher)
    assert seen == [4 * 2] * result.stats.windowed_calls and result.stats.windowed_calls == 5


def test_real_refiner_config_refused(forge):
    params = unet_params("refiner")
    patcher = _forge_patcher(forge, params, num_classes="sequential", adm_in_channels=48)
    assert forge_unsupported_reason(patcher) == REFINER
    with pytest.raises(UnsupportedModelError):
        patch_forge_unet(patcher, steps=STEPS)


def test_deeper_transformers_window_every_index(forge):
    """SDXL stacks several transformer blocks per level (the ldm twin cannot): each index gets its own key."""
    params = dict(unet_params("sdxl"), transformer_depth=2)
    patcher = _forge_patcher(forge, params)
    result = patch_forge_unet(patcher, steps=STEPS, seed=SEED)
    replaces = result.patcher.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert ("input", 4, 1) in replaces and ("output", 5, 1) in replaces and len(replaces) == 10
    x, context = _inputs(params["context_dim"], (32, 32))
    out = _forge_eps(forge, result.patcher, x, context, 0)
    forge.memory_management.unload_model_clones(patcher)
    assert torch.isfinite(out).all() and result.stats.windowed_calls == 10 and result.stats.rad_forwards == 1
