"""HiDiffusion next to Tiled Diffusion (MultiDiffusion) on A1111, by its own Script (needs TILED_DIFFUSION_DIR).

Its Script hooks the sampler it creates, and its MultiDiffusion delegate hands the U-Net batches of latent tiles;
RAU-Net decides per forward from the size the U-Net receives (design.md §11.7). Run with TILED_DIFFUSION_DIR=
/path/to/multidiffusion-upscaler-for-automatic1111 (checked at 22798f6).
"""

import os

import fake_webui
import pytest
import tiled_diffusion_host
import torch

from hidiffusion_ext.webui import session as webui_session

TILED_DIFFUSION_DIR = os.environ.get("TILED_DIFFUSION_DIR", "")
pytestmark = pytest.mark.skipif(not tiled_diffusion_host.checkout_has_tiled_diffusion(TILED_DIFFUSION_DIR),
                                reason="set TILED_DIFFUSION_DIR to a multidiffusion-upscaler-for-automatic1111 checkout")
PASS, NATIVE, STEPS = (32, 32), 16, 3  # a pass latent above the (test) native size, and that native size
NOTE = "Tiled Diffusion: composes; tiles at or below the native size run without RAU-Net"


def tiled_diffusion_args(enabled, tile):
    """Its ui() order: enabled, method, overwrite size, keep input size, width, height, tile width, tile height,
    overlap, tile batch size, upscaler, scale, 5 noise-inversion fields, ControlNet tensor on CPU, region control,
    draw background, causal layers (regions off: no region states)."""
    return [enabled, "MultiDiffusion", False, True, 1024, 1024, tile, tile, 4, 4, "None", 2.0,
            False, 10, 1.0, 1.0, 64, False, False, False, False]


@pytest.fixture
def generate(ldm_unet, monkeypatch):
    """One txt2img with Tiled Diffusion's Script before ours; HiDiffusion with ``settings`` or not at all."""
    monkeypatch.setattr(webui_session, "native_latent", lambda family, v_768=False: NATIVE)
    ours = fake_webui.load_script_module().HiDiffusionScript()  # puts the modules stand-ins on sys.path
    ours.is_txt2img = True
    unet = ldm_unet("sd1")
    with tiled_diffusion_host.tiled_diffusion_script(TILED_DIFFUSION_DIR) as tilediffusion:
        theirs = tilediffusion.Script()

        def run(tile, tiled=True, **settings):
            p = fake_webui.make_p(unet, width=PASS[1] * 8, height=PASS[0] * 8, steps=STEPS)
            tiled_diffusion_host.call_the_created_sampler(p)
            others = [(theirs, tiled_diffusion_args(tiled, tile))]
            image = fake_webui.process_images(p, ours, fake_webui.script_args(**settings), others=others).images[0]
            assert not p.scripts.errors, p.scripts.errors
            return image, p

        yield run, unet, tilediffusion


def test_native_tiles_get_no_raunet_and_the_rest_is_tiled_diffusion_alone(generate, hidiffusion_log):
    run, unet, tilediffusion = generate
    seen = []
    hook = unet.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    try:
        alone, p = run(tile=NATIVE, enabled=False)
    finally:
        hook.remove()
    assert seen == [(6, 4, NATIVE, NATIVE)] * 3 * STEPS  # 3x3 tiles of 16 in 3 calls of 3 tiles x (cond, uncond)
    assert p.extra_generation_params["Tiled Diffusion"]["Tile tile width"] == NATIVE

    raunet_only, p = run(tile=NATIVE, enabled=True, mswmsa=False)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.native_tile_forwards == 3 * STEPS and stats.rad_forwards == 0 and stats.pool_forwards == 0
    assert torch.equal(raunet_only, alone)  # bit for bit: nothing of RAU-Net ran on a native tile
    line = next(m for m in hidiffusion_log if m.startswith("HiDiffusion first pass 256x256"))
    assert "RAD steps 0-0" in line  # the plan still describes the full-size case
    assert f"{3 * STEPS} tile forwards at native size: RAU-Net off" in line
    assert any(m == f"HiDiffusion: {NOTE}" for m in hidiffusion_log)
    note = p.extra_generation_params["HiDiffusion note"]
    assert NOTE in note and f"first pass: {3 * STEPS} tile forwards at native size ran without RAU-Net" in note

    both, _ = run(tile=NATIVE, enabled=True)
    assert webui_session.last.passes[(0, False)].patch.stats.windowed_calls > 0  # MSW-MSA keeps its own rule
    assert not torch.equal(both, alone)

    again, _ = run(tile=NATIVE, enabled=False)
    assert torch.equal(again, alone)  # nothing of ours left patched
    assert not hasattr(tilediffusion.Script, "create_sampler_original_md")  # its own postprocess put its hijack back


def test_tiles_above_the_native_size_follow_the_pass_schedule(generate):
    run, _, _ = generate
    run(tile=24, enabled=True, mswmsa=False)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.native_tile_forwards == 0 and stats.rad_forwards > 0


def test_switched_off_it_is_not_named(generate):
    run, _, _ = generate
    _, p = run(tile=NATIVE, tiled=False, enabled=True, mswmsa=False)
    assert webui_session.last.passes[(0, False)].patch.stats.rad_forwards == 1  # full-size forwards: the schedule
    assert "Tiled Diffusion" not in p.extra_generation_params.get("HiDiffusion note", "")
