"""Composition with other U-Net tools, on the real ldm U-Net: RAU-Net decided per forward (tiles, crops), windows
yielded to a tool that splits the same attention, and the per-window call of another tool's attention."""

import fake_webui
import pytest
import torch
from conftest import run_unet

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.geometry import STOCK
from hidiffusion_ext.forge import attention as forge_attention
from hidiffusion_ext.webui import conflicts
from hidiffusion_ext.webui import session as webui_session

STEPS, SEED = 10, 7
PASS, NATIVE = (32, 32), 16  # a pass latent above the (test) native size, and that native size


def _tiles(x, size):
    h, w = x.shape[-2:]
    return [x[..., i:i + size, j:j + size] for i in range(0, h, size) for j in range(0, w, size)]


def test_native_tiles_run_stock_and_full_size_forwards_keep_the_schedule(ldm_unet):
    unet = ldm_unet("sd1")
    x = torch.randn(1, 4, *PASS, generator=torch.Generator().manual_seed(0))
    stock_tiles = [run_unet(unet, tile) for tile in _tiles(x, NATIVE)]
    settings = HiDiffusionSettings(mswmsa=False)
    with apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
        handle.set_tile_gate(PASS, NATIVE)
        handle.set_step(0)  # a RAD step
        tiled = [run_unet(unet, tile) for tile in _tiles(x, NATIVE)]
        assert handle.stats.native_tile_forwards == 4 and handle.stats.rad_forwards == 0
        assert handle.geometry_for((NATIVE, NATIVE)) == STOCK  # a ControlNet feeding a tile gets the stock geometry
        run_unet(unet, x)  # the pass's own size: the schedule decides
        larger_tile = run_unet(unet, x[..., :24, :24])  # a tile above the native area follows the schedule too
        assert handle.stats.rad_forwards == 2 and handle.stats.native_tile_forwards == 4
    for ours, stock in zip(tiled, stock_tiles, strict=True):
        assert torch.equal(ours, stock)  # bit for bit: nothing of RAU-Net ran on a native tile
    assert larger_tile.shape[-2:] == (24, 24)


def test_a_gate_never_applies_to_a_forced_native_pass(ldm_unet):
    """"apply to: both" at the native size is the user's choice: only forwards smaller than the pass are gated."""
    unet = ldm_unet("sd1")
    x = torch.randn(1, 4, NATIVE, NATIVE, generator=torch.Generator().manual_seed(1))
    with apply_hidiffusion(unet, HiDiffusionSettings(mswmsa=False), steps=STEPS, seed=SEED) as handle:
        handle.set_tile_gate((NATIVE, NATIVE), NATIVE)
        handle.set_step(0)
        run_unet(unet, x)
        assert handle.stats.rad_forwards == 1 and handle.stats.native_tile_forwards == 0


def test_yielded_windows_run_the_hosts_attention_and_keep_the_other_blocks_shifts(ldm_unet):
    unet = ldm_unet("sd1")
    x = torch.randn(1, 4, *PASS, generator=torch.Generator().manual_seed(2))
    settings = HiDiffusionSettings(raunet=False)
    with apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
        handle.set_step(3)
        both = run_unet(unet, x)
        windowed = handle.stats.windowed_calls
    with apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
        handle.yield_windows([0, 1], "a tiler")  # the two input-side blocks
        handle.set_step(3)
        partly = run_unet(unet, x)
        assert handle.stats.yielded_window_calls == 2 and handle.stats.windowed_calls == windowed - 2
    with apply_hidiffusion(unet, settings, steps=STEPS, seed=SEED) as handle:
        handle.yield_windows(None, "a tiler")
        handle.set_step(3)
        none = run_unet(unet, x)
        assert handle.stats.windowed_calls == 0 and handle.stats.yielded_window_calls == windowed
    stock = run_unet(unet, x)
    assert torch.equal(none, stock)
    assert not torch.equal(partly, both) and not torch.equal(partly, stock)


def test_another_tools_attention_gets_one_call_per_window_with_the_batch_it_built():
    """StyleAlign-like: the tool reads the batch (here: shares attention across it). Inside windows it must see
    batch rows in the host's order, once per window, so sharing stays within a window and across the batch."""
    grid_hw, heads = (8, 8), 2
    q, k, v = (torch.randn(3, 64, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    seen = []

    def shared_attention(q, k, v, extra_options):  # one joint sequence over the batch, as StyleAlign's join does
        seen.append(q.shape)
        b, n, c = q.shape
        joint = torch.nn.functional.scaled_dot_product_attention(
            *(t.reshape(1, b * n, heads, c // heads).transpose(1, 2) for t in (q, k, v)))
        return joint.transpose(1, 2).reshape(b, n, c)

    from hidiffusion_ext.core import msw_msa

    grid = msw_msa.window_grid(grid_hw, 1)
    out = forge_attention.windowed(shared_attention, q, k, v, {"n_heads": heads}, grid, per_window=True)
    assert seen == [torch.Size([3, 16, 8])] * 4
    # Reference: per window, the batch's tokens of that window attend jointly.
    windows = [msw_msa.window_partition(t, grid).view(3, 4, 16, 8) for t in (q, k, v)]
    expected = torch.stack([shared_attention(*(w[:, i] for w in windows), {}) for i in range(4)], dim=1)
    assert torch.allclose(out, msw_msa.window_reverse(expected.reshape(12, 16, 8), grid))


def test_script_counts_native_tile_forwards_in_the_console_line(ldm_unet, monkeypatch, hidiffusion_log):
    """A host-side tiler (Tiled Diffusion's wrapped model call, here the stand-in's tiled_unet) hands the U-Net
    quarter tiles of a pass that is above the native size: the pass plan keeps RAU-Net, every tile runs stock."""
    unet = ldm_unet("sd1")
    monkeypatch.setattr(webui_session, "native_latent", lambda family, v_768=False: NATIVE)
    script = fake_webui.load_script_module().HiDiffusionScript()
    script.is_txt2img = True
    p = fake_webui.make_p(unet, width=PASS[1] * 8, height=PASS[0] * 8, steps=3)
    p.tiled_unet = lambda x, t, context: torch.cat(
        [torch.cat([unet(tile, t, context=context) for tile in _tiles(row, NATIVE)], -1)
         for row in x.split(NATIVE, -2)], -2)
    fake_webui.process_images(p, script, fake_webui.script_args())
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.native_tile_forwards == 3 * 4 and stats.rad_forwards == 0 and stats.windowed_calls > 0
    assert any("12 tile forwards at native size: RAU-Net off" in m for m in hidiffusion_log)
    note = p.extra_generation_params["HiDiffusion note"]
    assert "first pass: 12 tile forwards at native size ran without RAU-Net" in note and "ran on no step" not in note


@pytest.mark.parametrize("latent, expected", [((16, 16), True), ((16, 8), True), ((24, 24), False), ((32, 32), False)])
def test_tile_gate_rule(latent, expected):
    from hidiffusion_ext.core.geometry import TileGate

    assert TileGate(PASS, NATIVE).native_tile(latent) is expected


def test_the_console_line_says_raunet_is_off_and_why_rather_than_a_schedule():
    from types import SimpleNamespace as NS

    resolved = NS(family="sd15", size_class="small", describe=lambda: "sd15 small: T1 0.4, T2 0; RAD steps 0-0")

    def line(raunet=True, skipped=False, reason=None):
        patch = NS(raunet_active=raunet and not skipped, raunet_skipped=skipped)
        return webui_session._raunet_part(NS(patch=patch, plan=NS(raunet_off_reason=reason)), resolved)

    assert line() == "sd15 small: T1 0.4, T2 0; RAD steps 0-0"
    assert line(skipped=True) == "sd15 small: RAU-Net off for this pass (noted above)"  # a yield, e.g. Deep Shrink
    assert line(raunet=False, reason="auto: not above 1.5x the native area") == (
        "sd15 small: RAU-Net off (auto: not above 1.5x the native area)")
    assert line(raunet=False) == "sd15 small: RAU-Net off"  # unticked


def test_a_forge_window_call_whose_tokens_another_tool_recut_keeps_that_tools_attention(ldm_unet):
    """HyperTile's ComfyUI node (the forks) folds tiles of the queries into the batch before the attn1 replace; a
    reference attention brings more keys than queries: those calls get the attention as built, counted as left to
    other tools; a call on the whole grid gets the windows."""
    from forge_stub import StubUnetPatcher

    from hidiffusion_ext.forge.unet_patch import patch_forge_unet

    patch = patch_forge_unet(StubUnetPatcher.around(ldm_unet("sd1")), HiDiffusionSettings(raunet=False), steps=STEPS,
                             seed=SEED)
    patch.set_step(0)
    options = {"original_shape": [2, 4, 32, 32], "n_heads": 2}
    seen = []

    def attend(q, k, v, extra_options):
        seen.append(tuple(q.shape))
        return q

    tiles, whole = torch.randn(8, 256, 32), torch.randn(2, 1024, 32)
    assert torch.equal(patch._windowed_attn1(0, attend, tiles, tiles, tiles, options), tiles)  # 2 rows x 2x2 tiles
    assert torch.equal(patch._windowed_attn1(0, attend, whole, torch.cat([whole] * 2, 1), whole, options), whole)
    assert patch.stats.yielded_window_calls == 2 and patch.stats.windowed_calls == 0
    patch._windowed_attn1(0, attend, whole, whole, whole, options)
    assert patch.stats.windowed_calls == 1 and seen[-1] == (8, 256, 32)  # the whole grid: 4 windows per row
    patch.remove()

    hypertile = conflicts._decision("HyperTile", conflicts.WINDOWS_YIELD_PER_CALL)
    for mswmsa, notes in ((True, [hypertile.note]), (False, [])):  # named only where MSW-MSA would have run
        other = patch_forge_unet(StubUnetPatcher.around(ldm_unet("sd1")), HiDiffusionSettings(mswmsa=mswmsa),
                                 steps=STEPS, seed=SEED)
        conflicts.apply_decisions(other, [hypertile])
        assert other.notes == notes
        other.remove()
