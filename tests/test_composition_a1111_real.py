"""HiDiffusion next to A1111's built-in HyperTile, by HyperTile's own code from a checkout (needs A1111_DIR).

HyperTile wraps each attn1's instance forward for good and switches it per generation; where it tiles the top-level
self-attention, MSW-MSA yields on those blocks (design.md §11.7). Run with A1111_DIR=/path/to/stable-diffusion-webui.
"""

import importlib.util
import os
import sys

import pytest
import torch
from conftest import run_unet

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.presets import block_roles, plan_for
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.ldm.unet_patch import windowed_transformers
from hidiffusion_ext.webui import conflicts

A1111_DIR = os.environ.get("A1111_DIR", "")
HYPERTILE = os.path.join(A1111_DIR, "extensions-builtin", "hypertile", "hypertile.py")
pytestmark = pytest.mark.skipif(not os.path.isfile(HYPERTILE), reason="set A1111_DIR to a stable-diffusion-webui checkout")
SIZE, STEPS, SEED = (32, 32), 10, 3


@pytest.fixture(scope="module")
def hypertile():
    spec = importlib.util.spec_from_file_location("hypertile", HYPERTILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hypertile"] = module  # its dataclass looks its module up there, as on the webui's sys.path
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("hypertile", None)


@pytest.fixture
def unet():
    """A U-Net of its own: HyperTile's wrappers stay on a model for good, as in the webui."""
    return build_ldm_unet(unet_params("sd1"), seed=1)


def hook(hypertile, unet, enable):
    hypertile.set_hypertile_seed(SEED)  # its process() does this per generation
    hypertile.hypertile_hook_model(unet, SIZE[1] * 8, SIZE[0] * 8, enable=enable, tile_size_max=128, swap_size=1,
                                   max_depth=0, is_sdxl=False)


def windowed_attn1(unet):
    return [tb.attn1 for tb in windowed_transformers(unet, block_roles(inspect_unet(unet), plan_for("sd15")))]


def test_msw_msa_yields_where_hypertile_tiles_and_raunet_stays(hypertile, unet):
    x = torch.randn(1, 4, *SIZE, generator=torch.Generator().manual_seed(0))
    hook(hypertile, unet, enable=True)
    wrappers = [attn.forward for attn in windowed_attn1(unet)]
    hypertile_alone = run_unet(unet, x)
    decisions = conflicts.a1111_decisions(None, windowed_attn1(unet))
    assert [(d.tool, d.action, d.windows) for d in decisions] == [("HyperTile", conflicts.WINDOWS_YIELD, (0, 1, 2, 3, 4))]

    hook(hypertile, unet, enable=True)  # same seed: the same tile choices
    with apply_hidiffusion(unet, HiDiffusionSettings(raunet=False), steps=STEPS, seed=SEED) as handle:
        conflicts.apply_decisions(handle, decisions)
        handle.set_step(0)
        windows_yielded = run_unet(unet, x)
        assert handle.stats.windowed_calls == 0 and handle.stats.yielded_window_calls == 5
        assert any("HyperTile" in note and "5 of 5" in note for note in handle.notes)
    assert torch.equal(windows_yielded, hypertile_alone)  # HyperTile's tiles, untouched by windows

    with apply_hidiffusion(unet, HiDiffusionSettings(), steps=STEPS, seed=SEED) as handle:
        conflicts.apply_decisions(handle, decisions)
        handle.set_step(0)
        run_unet(unet, x)
        assert handle.stats.rad_forwards == 1 and handle.stats.windowed_calls == 0
    assert [attn.forward for attn in windowed_attn1(unet)] == wrappers  # HyperTile's wrappers are back, ours gone


def test_hypertile_switched_off_leaves_the_windows_on(hypertile, unet):
    hook(hypertile, unet, enable=True)
    hook(hypertile, unet, enable=False)  # a later generation without it: the wrappers stay, inert
    assert conflicts.a1111_decisions(None, windowed_attn1(unet)) == []
