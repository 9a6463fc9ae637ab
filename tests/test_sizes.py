"""No crash at any latent size: a stratified set of sides (256-640 px on SD1-like and SDXL-like nets) that covers every
residue class mod 32 on each axis and every odd/even combination of the two axes at every depth, with RAD and pooling
at once. Sides 32-63 hold every residue; a few pairs up to 80 keep the largest sizes in."""

import math

import pytest
import torch

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.devtools.attention import sdp_attention

# (h, w): every residue mod 32 on both axes, paired four ways so that the parities of h and w meet in every combination
PAIRS = sorted({(32 + r, 32 + (r + d) % 32) for r in range(32) for d in (0, 1, 5, 16)}
               | {(80, 80), (80, 33), (33, 80), (79, 64), (64, 79)})


def depth_parities(side: int):
    """The side's parity at each depth of the most demanding geometry: /4 (RAD), then /2 three times (pool, downs)."""
    sizes, s = [side], math.ceil(side / 4)
    for _ in range(4):
        sizes.append(s)
        s = math.ceil(s / 2)
    return [size % 2 for size in sizes]


def test_the_pairs_cover_every_residue_and_parity_combination():
    assert {h % 32 for h, _ in PAIRS} == {w % 32 for _, w in PAIRS} == set(range(32))
    for depth in range(5):
        combos = {(depth_parities(h)[depth], depth_parities(w)[depth]) for h, w in PAIRS}
        assert combos == {(0, 0), (0, 1), (1, 0), (1, 1)}, (depth, combos)
    assert len(PAIRS) < 150


@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_every_residue_class_of_latent_size(ldm_unet, shape):
    unet = ldm_unet(shape)
    context = torch.zeros(1, 2, unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features)
    t = torch.tensor([500.0])
    # RAD and pooling at once (t1=t2=1, not aggressive): the most demanding combination of shapes.
    settings = HiDiffusionSettings(t1=1.0, t2=1.0, aggressive="off")
    failures = []
    # SDP attention installed at class level, as A1111's default optimisation does (and 5x faster on CPU).
    with torch.no_grad(), sdp_attention(), apply_hidiffusion(unet, settings, steps=2) as handle:
        for h, w in PAIRS:
            x = torch.randn(1, 4, h, w)
            try:
                out = unet(x, t, context=context)
                assert out.shape == x.shape
            except Exception as error:  # collect them all, report at once
                failures.append(((h, w), repr(error)[:120]))
    assert not failures, failures[:5]
    assert handle.stats.rad_forwards == handle.stats.pool_forwards == len(PAIRS)
    assert handle.stats.windowed_calls == len(PAIRS) * 5  # 5 windowed transformer blocks in both


@pytest.mark.parametrize("x_hw, skip_hw, shrunk, sized", [
    ((8, 8), (16, 16), False, True),  # x2 lands: the same as stock
    ((9, 8), (17, 16), False, True),  # x2 overshoots an odd skip by 1: to the skip, as the reference does
    ((8, 8), (32, 32), True, True),  # after a RAD: x4 to the skip
    ((8, 8), (32, 32), False, False),  # another tool resized between the blocks (its loop scales after): stock x2
    ((16, 16), (16, 16), False, False),
])
def test_an_upsample_goes_to_its_skip_only_where_hidiffusion_owns_the_sizes(x_hw, skip_hw, shrunk, sized):
    from hidiffusion_ext.core.raunet import sized_to_skip

    assert sized_to_skip(x_hw, skip_hw, shrunk) is sized
