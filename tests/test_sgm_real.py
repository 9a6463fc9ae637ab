"""The adapter on sgm's own UNetModel (Stability-AI/generative-models, the SDXL code A1111 runs).

sgm is not on PyPI, so this runs only when SGM_DIR points to a checkout (A1111 keeps one in
repositories/generative-models) and skips otherwise. sgm's package __init__ files pull its training
stack (lightning, kornia, ...), so those packages are registered by path and only the U-Net's modules are imported.
"""

import importlib
import os
import sys
import types

import pytest
import torch

from hidiffusion_ext import active_handle, apply_hidiffusion
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params

SGM_DIR = os.environ.get("SGM_DIR")
pytestmark = pytest.mark.skipif(not SGM_DIR, reason="set SGM_DIR to a generative-models checkout")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sgm_unet_class():
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):  # their __init__s import the training stack
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(SGM_DIR, *name.split("."))]
            sys.modules[name] = package
    return importlib.import_module("sgm.modules.diffusionmodules.openaimodel").UNetModel


def sgm_params(depth=1, adm_in_channels=None):
    """The SDXL-like test shape in sgm's own terms: per-level transformer depth, optional label embedding."""
    params = {k: v for k, v in unet_params("sdxl").items() if k != "image_size"}  # sgm takes no image_size
    params.update(transformer_depth=[0, depth, depth], transformer_depth_middle=depth)
    if adm_in_channels:
        params.update(num_classes="sequential", adm_in_channels=adm_in_channels)
    return params


def build_sgm(unet_class, params, state_dict=None):
    torch.manual_seed(3)
    unet = unet_class(**params).eval().requires_grad_(False)
    if state_dict is None:
        for module in unet.modules():  # zero-initialised output layers would hide every patch
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.numel() and not weight.any() and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    else:
        unet.load_state_dict(state_dict, strict=True)
    return unet


def _trajectory(unet, steps, x, context, **kwargs):
    outputs = []
    with apply_hidiffusion(unet, steps=steps, seed=5) as handle:
        for step in range(steps):
            handle.set_step(step)
            with torch.no_grad():
                outputs.append(unet(x, torch.full((x.shape[0],), 900.0 - 80 * step), context=context, **kwargs))
    return outputs, handle.stats


def test_sgm_unet_patched_matches_ldm_on_the_same_weights(sgm_unet_class):
    ldm = build_ldm_unet(unet_params("sdxl"), seed=1)
    sgm = build_sgm(sgm_unet_class, sgm_params(), ldm.state_dict())  # sgm's key layout is ldm's
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 40, 48, generator=g), torch.randn(2, 7, 64, generator=g)
    ours_ldm, stats_ldm = _trajectory(ldm, 10, x, context)
    ours_sgm, stats_sgm = _trajectory(sgm, 10, x, context)
    errors = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours_sgm, ours_ldm)]
    assert max(errors) <= TOLERANCE, errors
    assert (stats_sgm.rad_forwards, stats_sgm.pool_forwards, stats_sgm.windowed_calls) == (
        stats_ldm.rad_forwards, stats_ldm.pool_forwards, stats_ldm.windowed_calls)
    assert stats_sgm.rad_forwards > 0 and stats_sgm.pool_forwards > 0 and stats_sgm.windowed_calls > 0


def test_sgm_sdxl_with_depth_two_and_label_embedding(sgm_unet_class):
    """Real SDXL has 2-10 transformer blocks per level and a vector condition ``y``: every attn1 is windowed."""
    unet = build_sgm(sgm_unet_class, sgm_params(depth=2, adm_in_channels=24))
    g = torch.Generator().manual_seed(0)
    x, context, y = torch.randn(2, 4, 48, 48, generator=g), torch.randn(2, 7, 64, generator=g), torch.randn(2, 24, generator=g)
    t = torch.full((2,), 500.0)
    with torch.no_grad():
        plain = unet(x, t, context=context, y=y)
    outputs, stats = _trajectory(unet, 10, x, context, y=y)
    windowed_attn1 = 2 * (2 + 3)  # depth 2 x (2 input + 3 output blocks at level 1)
    assert stats.windowed_calls == 10 * windowed_attn1
    assert (stats.rad_forwards, stats.pool_forwards) == (1, 3)  # aggressive: RAD at step 0, pooling at 1-3 of 10
    with torch.no_grad():
        unpatched_step0 = unet(x, torch.full((2,), 900.0), context=context, y=y)
    assert not torch.allclose(outputs[0], unpatched_step0)
    with torch.no_grad():
        assert active_handle(unet) is None and torch.equal(unet(x, t, context=context, y=y), plain)
