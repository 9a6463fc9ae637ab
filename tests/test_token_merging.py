"""Token merging (A1111's built-in ToMe: the real ``tomesd`` package, applied as sd_models.apply_token_merging does)
next to HiDiffusion on the real ldm U-Net, through the Script in the A1111 generation loop stand-in.

Decision (conflicts.py): ToMe merges the top-level self-attention's tokens before attn1 runs; MSW-MSA yields on
every block ToMe merges (never windows over merged tokens, never a silent skip), RAU-Net stays; the note says so.
"""

import fake_webui
import pytest
import tomesd
import torch
from conftest import run_unet

from hidiffusion_ext.core.presets import block_roles, plan_for
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.ldm.unet_patch import windowed_transformers
from hidiffusion_ext.webui import conflicts
from hidiffusion_ext.webui import session as webui_session

STEPS, SIZE = 3, 256  # a 32x32 latent; "apply to: both" runs RAU-Net at any size


def apply_token_merging(sd_model, ratio):
    """modules/sd_models.py:1011-1038 (A1111 1.10.1): remove the old patch, apply tomesd with A1111's arguments."""
    if getattr(sd_model, "applied_token_merged_ratio", 0) > 0:
        tomesd.remove_patch(sd_model)
    if ratio > 0:
        tomesd.apply_patch(sd_model, ratio=ratio, use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False)
    sd_model.applied_token_merged_ratio = ratio


def engine(p):
    """The stand-in's sd_model as a torch module, as A1111's LatentDiffusion is (tomesd walks its modules)."""
    sd_model, model = torch.nn.Module(), torch.nn.Module()
    model.diffusion_model = p.sd_model.model.diffusion_model
    for name, value in vars(p.sd_model).items():
        setattr(sd_model, name, model if name == "model" else value)
    p.sd_model = sd_model
    return p


def generate(unet, script, ratio, **named):
    """One txt2img generation; ToMe is applied before the scripts run, as process_images does (processing.py:841)."""
    p = engine(fake_webui.make_p(unet, width=SIZE, height=SIZE, steps=STEPS))
    apply_token_merging(p.sd_model, ratio)
    try:
        processed = fake_webui.process_images(p, script, fake_webui.script_args(**named))
    finally:
        apply_token_merging(p.sd_model, 0)  # processing.py:850
    return p, processed.images[0]


def no_forward_overrides(unet):
    return all("forward" not in vars(m) for m in unet.modules())


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_msw_msa_yields_to_token_merging_and_raunet_stays(ldm_unet, script, hidiffusion_log, ratio):
    unet = ldm_unet("sd1")
    blocks = len(windowed_transformers(unet, block_roles(inspect_unet(unet), plan_for("sd15"))))
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    stock = run_unet(unet, x)
    p, both = generate(unet, script, ratio)
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.windowed_calls == 0  # no window ever saw merged tokens (0.75 used to window a quarter "grid")
    assert stats.yielded_window_calls == stats.forwards * blocks == STEPS * blocks
    assert stats.rad_forwards == 1  # RAU-Net stays: int(3 * 0.4) = 1 RAD step
    note = p.extra_generation_params["HiDiffusion note"]
    assert f"Token merging (ratio {ratio:g}) merges the top-level self-attention's tokens: " \
           f"MSW-MSA left to it on {blocks} of {blocks} blocks" in note
    assert "MSW-MSA ran on no step" not in note
    assert not any("do not form a grid" in m for m in hidiffusion_log)
    predicted = [m.rsplit("sampling, ", 1)[1] for m in hidiffusion_log if "U-Net compute predicted" in m]
    # The output is ToMe + RAU-Net alone: MSW-MSA took no part in it.
    _, tome_alone_raunet = generate(unet, script, ratio, mswmsa=False)
    assert torch.equal(both, tome_alone_raunet)
    predicted += [m.rsplit("sampling, ", 1)[1] for m in hidiffusion_log if "U-Net compute predicted" in m][len(predicted):]
    assert len(predicted) == 2 and predicted[0] == predicted[1]  # the console's saving is RAU-Net's alone
    # Nothing of ours is left, and with ToMe removed (as A1111 does after the generation) the U-Net is stock.
    assert no_forward_overrides(unet) and not any(type(m).__name__ == "ToMeBlock" for m in unet.modules())
    assert torch.equal(run_unet(unet, x), stock)


def test_windows_run_without_token_merging_and_on_levels_it_does_not_merge(ldm_unet, script):
    unet = ldm_unet("sd1")
    generate(unet, script, 0)
    assert webui_session.last.passes[(0, False)].patch.stats.windowed_calls > 0
    sd_model = engine(fake_webui.make_p(unet)).sd_model
    apply_token_merging(sd_model, 0.5)
    try:
        blocks = windowed_transformers(unet, block_roles(inspect_unet(unet), plan_for("sd15")))
        assert {conflicts.tome_ratio(b, 1) for b in blocks} == {0.5}
        assert {conflicts.tome_ratio(b, 2) for b in blocks} == {None}  # SDXL's windowed level: A1111 merges level 0 only
        assert [d.tool for d in conflicts.a1111_decisions(None, blocks, 2)] == []
    finally:
        apply_token_merging(sd_model, 0)


def test_forge_token_merging_is_named_and_left_per_call():
    """Forge's ToMe (backend/misc/tomesd.py TomePatcher) is an attn1_patch defined in backend.misc.tomesd."""
    def tomesd_m(q, k, v, extra_options):
        return q, k, v

    tomesd_m.__module__ = "backend.misc.tomesd"
    patcher = type("P", (), {"model_options": {"transformer_options": {"patches": {"attn1_patch": [tomesd_m]}}}})()
    [decision] = conflicts.forge_decisions(patcher)
    assert decision.action == conflicts.WINDOWS_YIELD_PER_CALL
    assert decision.note == conflicts.TOME_PER_CALL_NOTE == ("Token merging merges the top-level self-attention's tokens: "
                                                             "MSW-MSA left to it on every call it merges")
