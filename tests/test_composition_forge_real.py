"""HiDiffusion next to Forge's built-in U-Net tools, each by its own patch function from the checkout (needs FORGE_DIR).

The tools run as their scripts run them (on forge_objects.unet before our script, which Forge loads after its
extensions-builtin), through Forge's real sampling_function; the session's conflict check decides:
Kohya HRFix (Deep Shrink): RAU-Net yields; StyleAlign: its shared attention runs inside each window; MultiDiffusion:
native tiles run without RAU-Net; SAG, PAG, FreeU: compose. Nothing stays patched afterwards.
"""

import copy
import importlib.util
import os
import sys
from types import SimpleNamespace

import fake_webui
import pytest
import test_forge_controlnet_real as cnr
import torch

from hidiffusion_ext import HiDiffusionSettings
from hidiffusion_ext.devtools.models import unet_params
from hidiffusion_ext.forge.unet_patch import is_own_forge_patch, patch_forge_unet
from hidiffusion_ext.webui import conflicts

sys.path.insert(0, fake_webui.STUBS)  # the tools' own `from modules import ...`
from modules import script_callbacks  # noqa: E402

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(FORGE_DIR, "backend")),
                                reason="set FORGE_DIR to a stable-diffusion-webui-forge checkout")
BUILTIN = os.path.join(FORGE_DIR, "extensions-builtin")
STEPS, SEED = 10, 1234
SIZE = (32, 32)
fc, base = cnr.fc, cnr.base  # the same fixtures: Forge's backend, and the SD1-shaped patcher built on it


def tool(relative_path: str):
    """A Forge built-in script module, loaded by path as Forge's script loader does (module name = file name)."""
    path = os.path.join(BUILTIN, relative_path)
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_script(script, patcher, *args):
    """Run a tool's process_before_every_sampling on a Forge-shaped p; returns the patcher it leaves."""
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)), extra_generation_params={},
                        is_hr_pass=False, cfg_scale=7.0)
    script.process_before_every_sampling(p, *args)
    return p.sd_model.forge_objects.unet


def hidiffusion(patcher, settings=HiDiffusionSettings(), native=None):
    """What the session does for a pass: the conflict check on the tools' patcher, then our clone."""
    decisions = conflicts.forge_decisions(patcher, own=is_own_forge_patch)
    result = patch_forge_unet(patcher, settings, steps=STEPS, seed=SEED)
    if native:
        result.set_tile_gate(SIZE, native)
    conflicts.apply_decisions(result, decisions)
    return result, decisions


def run(fc, result, x, context, steps=(0,)):
    outputs = [result.set_step(step) or cnr.denoise(fc, result.patcher, x, context, step) for step in steps]
    result.remove()
    return outputs


def inputs(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, *SIZE, generator=g), torch.randn(2, 7, unet_params("sd1")["context_dim"], generator=g)


def untouched(fc, base, before):
    fc.memory_management.unload_model_clones(base)
    return copy.deepcopy(base.model_options) == before[0] and base.object_patches == before[1]


def snapshot(base):
    return copy.deepcopy(base.model_options), dict(base.object_patches)


def test_kohya_deep_shrink_makes_raunet_yield_without_a_double_shrink(fc, base):
    before = snapshot(base)
    kohya = tool("sd_forge_kohya_hrfix/scripts/kohya_hrfix.py")
    shrunk = kohya.opPatchModelAddDownscale.patch(base, 3, 2.0, 0.0, 0.35, True, "bicubic", "bicubic")[0]
    x, context = inputs()
    result, decisions = hidiffusion(shrunk)
    assert [(d.tool, d.action) for d in decisions] == [("Kohya HRFix (Deep Shrink)", conflicts.RAUNET_YIELDS)]
    ours = run(fc, result, x, context)
    assert result.raunet_skipped and result.stats.rad_forwards == result.stats.pool_forwards == 0
    assert any("Deep Shrink" in note and "RAU-Net off" in note for note in result.notes)
    assert result.stats.windowed_calls > 0  # MSW-MSA stays
    windows_only, _ = hidiffusion(shrunk, HiDiffusionSettings(raunet=False))
    assert torch.equal(ours[0], run(fc, windows_only, x, context)[0])  # exactly Deep Shrink + MSW-MSA
    unchecked = patch_forge_unet(shrunk, steps=STEPS, seed=SEED)  # without the check: both shrink the deep path
    doubled = run(fc, unchecked, x, context)
    assert unchecked.stats.rad_forwards == 1 and not torch.equal(doubled[0], ours[0])
    assert untouched(fc, base, before)


def test_stylealign_shares_attention_inside_each_window(fc, base):
    before = snapshot(base)
    script = tool("sd_forge_stylealign/scripts/forge_stylealign.py").StyleAlignForForge()
    styled = with_script(script, base, True, 1.0)
    assert [(d.tool, d.action) for d in conflicts.forge_decisions(styled)] == [("StyleAlign", conflicts.INSIDE_WINDOWS)]
    replaces = styled.model_options["transformer_options"]["patches_replace"]["attn1"]
    calls = []
    for key, aligned in list(replaces.items()):  # record what StyleAlign's attention is handed, then run it
        replaces[key] = (lambda q, k, v, to, key=key, aligned=aligned: calls.append((key, q.shape)) or aligned(q, k, v, to))
    result, _ = hidiffusion(styled, HiDiffusionSettings(raunet=False))
    x, context = inputs(batch=2)
    first = run(fc, result, x, context)[0]
    assert result.stats.windowed_calls == 5 and any("inside each MSW-MSA window" in n for n in result.notes)
    top = [shape for key, shape in calls if key in (("input", 1, 0), ("input", 2, 0))]
    tokens = SIZE[0] * SIZE[1]
    assert top == [torch.Size([4, tokens // 4, top[0][-1]])] * 8  # 2 blocks x 4 windows, the 4 rows Forge batched
    other = x.clone()
    other[1] = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(9))
    again, _ = hidiffusion(styled, HiDiffusionSettings(raunet=False))
    changed = run(fc, again, other, context)[0]
    assert not torch.equal(first[0], changed[0])  # image 0 attends to image 1: still shared
    plain, _ = hidiffusion(base, HiDiffusionSettings(raunet=False))
    unshared = run(fc, plain, x, context)[0]
    plain_other, _ = hidiffusion(base, HiDiffusionSettings(raunet=False))
    assert torch.equal(unshared[0], run(fc, plain_other, other, context)[0][0])  # without StyleAlign it is not
    assert untouched(fc, base, before)


def test_multidiffusion_tiles_at_native_size_run_without_raunet(fc, base):
    before = snapshot(base)
    tiled = tool("sd_forge_multidiffusion/lib_multidiffusion/tiled_diffusion.py").TiledDiffusion()
    tiles = tiled.apply(base, "MultiDiffusion", 128, 128, 0, 4)[0]  # 16x16 latent tiles of a 32x32 latent
    x, context = inputs()
    result, decisions = hidiffusion(tiles, native=16)
    assert [(d.tool, d.action) for d in decisions] == [("MultiDiffusion", conflicts.COMPOSE)]
    ours = run(fc, result, x, context)
    assert result.stats.native_tile_forwards > 0 and result.stats.rad_forwards == 0
    windows_only, _ = hidiffusion(tiles, HiDiffusionSettings(raunet=False), native=16)
    assert torch.equal(ours[0], run(fc, windows_only, x, context)[0])
    assert untouched(fc, base, before)


@pytest.mark.parametrize("name", ["SAG", "PAG", "FreeU"])
def test_guidance_and_skip_scaling_compose(fc, base, name):
    before = snapshot(base)
    if name == "SAG":
        patched = tool("sd_forge_sag/scripts/forge_sag.py").opSelfAttentionGuidance.patch(base, 0.5, 2.0, 1.0)[0]
    elif name == "PAG":
        module = tool("sd_forge_perturbed_attention/scripts/forge_perturbed_attention.py")
        patched = with_script(module.PerturbedAttentionGuidanceForForge(), base, True, 3.0, 0.0, 0.0, 1.0)
        module.PerturbedAttentionGuidanceForForge.doPAG = True  # what its cfg-denoiser callback sets inside its range
        script_callbacks.callback_map["callbacks_cfg_denoiser"].pop()  # that callback: not for the other tests
    else:
        module = tool("sd_forge_freeu/scripts/forge_freeu.py")
        patched = module.patch_freeu_v2(base, 1.3, 1.4, 0.9, 0.2)
        module.FreeUForForge.doFreeU = True
    x, context = inputs()
    result, decisions = hidiffusion(patched)
    assert [(d.tool, d.action) for d in decisions] == [(name, conflicts.COMPOSE)]
    both = run(fc, result, x, context)[0]
    assert result.stats.rad_forwards > 0 and result.stats.windowed_calls > 0 and torch.isfinite(both).all()
    alone, _ = hidiffusion(base)
    assert not torch.equal(both, run(fc, alone, x, context)[0])  # the tool still acts under HiDiffusion
    assert untouched(fc, base, before)
