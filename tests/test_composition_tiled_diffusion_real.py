"""HiDiffusion next to Tiled Diffusion's MultiDiffusion on A1111, by its own tiling code (needs TILED_DIFFUSION_DIR).

Its delegate replaces the sampler's inner-model forward and hands the U-Net batches of latent tiles; RAU-Net decides
per forward from the size the U-Net receives (design.md §11.7). Run with TILED_DIFFUSION_DIR=/path/to/
multidiffusion-upscaler-for-automatic1111 (checked at 22798f6).
"""

import os

import fake_webui
import pytest
import tiled_diffusion_host
import torch

from hidiffusion_ext.webui import fields
from hidiffusion_ext.webui import session as webui_session

TILED_DIFFUSION_DIR = os.environ.get("TILED_DIFFUSION_DIR", "")
pytestmark = pytest.mark.skipif(not tiled_diffusion_host.checkout_has_multidiffusion(TILED_DIFFUSION_DIR),
                                reason="set TILED_DIFFUSION_DIR to a multidiffusion-upscaler-for-automatic1111 checkout")
PASS, NATIVE, STEPS = (32, 32), 16, 3  # a pass latent above the (test) native size, and that native size


@pytest.fixture
def generate(ldm_unet, monkeypatch):
    """One txt2img with Tiled Diffusion's MultiDiffusion hooked in; HiDiffusion with ``settings`` or not at all."""
    monkeypatch.setattr(webui_session, "native_latent", lambda family, v_768=False: NATIVE)
    script = fake_webui.load_script_module().HiDiffusionScript()  # puts the modules stand-ins on sys.path
    script.is_txt2img = True
    unet = ldm_unet("sd1")
    with tiled_diffusion_host.multidiffusion_module(TILED_DIFFUSION_DIR) as multidiffusion:
        def run(tile, **settings):
            p = fake_webui.make_p(unet, width=PASS[1] * 8, height=PASS[0] * 8, steps=STEPS)
            delegate = tiled_diffusion_host.hook_multidiffusion(multidiffusion, p, unet.forward, tile, overlap=4,
                                                                tile_batch_size=4)
            values = {f.name: f.default for f in fields.FIELDS} | {"apply_to": "both"} | settings
            image = fake_webui.process_images(p, script, [values[n] for n in fields.names()]).images[0]
            return image, p, delegate

        yield run


def test_native_tiles_get_no_raunet_and_the_rest_is_tiled_diffusion_alone(generate, hidiffusion_log):
    alone, _, delegate = generate(tile=NATIVE, enabled=False)
    assert (delegate.num_tiles, len(delegate.batched_bboxes)) == (9, 3)  # 3x3 tiles of 16, in 3 U-Net calls a step

    raunet_only, p, _ = generate(tile=NATIVE, enabled=True, mswmsa=False)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.native_tile_forwards == 3 * STEPS and stats.rad_forwards == 0 and stats.pool_forwards == 0
    assert torch.equal(raunet_only, alone)  # bit for bit: nothing of RAU-Net ran on a native tile
    line = next(m for m in hidiffusion_log if m.startswith("HiDiffusion first pass 256x256"))
    assert "RAD steps 0-0" in line  # the plan still describes the full-size case
    assert f"{3 * STEPS} tile forwards at native size: RAU-Net off" in line
    assert f"first pass: {3 * STEPS} tile forwards at native size ran without RAU-Net" in p.extra_generation_params[
        "HiDiffusion note"]

    both, _, _ = generate(tile=NATIVE, enabled=True)
    assert webui_session.last.passes[(0, False)].patch.stats.windowed_calls > 0  # MSW-MSA keeps its own rule
    assert not torch.equal(both, alone)

    again, _, _ = generate(tile=NATIVE, enabled=False)
    assert torch.equal(again, alone)  # nothing left patched


def test_tiles_above_the_native_size_follow_the_pass_schedule(generate):
    generate(tile=24, enabled=True, mswmsa=False)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.native_tile_forwards == 0 and stats.rad_forwards > 0
