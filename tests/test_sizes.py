"""No crash for every latent size from 32 to 80 on both axes (pixel multiples of 8, 256-640 px on SD1-like and SDXL-like nets)."""

import pytest
import torch

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.devtools.attention import sdp_attention

SIDES = range(32, 81)


@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_every_latent_size(ldm_unet, shape):
    unet = ldm_unet(shape)
    context = torch.zeros(1, 2, unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features)
    t = torch.tensor([500.0])
    # RAD and pooling at once (t1=t2=1, not aggressive): the most demanding combination of shapes.
    settings = HiDiffusionSettings(t1=1.0, t2=1.0, aggressive="off")
    failures = []
    # SDP attention installed at class level, as A1111's default optimisation does (and 5x faster on CPU).
    with torch.no_grad(), sdp_attention(), apply_hidiffusion(unet, settings, steps=2) as handle:
        for h in SIDES:
            for w in SIDES:
                x = torch.randn(1, 4, h, w)
                try:
                    out = unet(x, t, context=context)
                    assert out.shape == x.shape
                except Exception as error:  # collect them all, report at once
                    failures.append(((h, w), repr(error)[:120]))
    assert not failures, failures[:5]
    assert handle.stats.rad_forwards == handle.stats.pool_forwards == len(SIDES) ** 2
    assert handle.stats.windowed_calls == len(SIDES) ** 2 * 5  # 5 windowed transformer blocks in both
