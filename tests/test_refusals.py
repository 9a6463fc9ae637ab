"""Models HiDiffusion cannot patch are refused with one clear message and left untouched."""

import pytest
import torch
from torch import nn

from hidiffusion_ext import HiDiffusionSettings, UnsupportedModelError, apply_hidiffusion
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params


def fingerprint(model):
    return [(n, sorted(vars(m)), len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()]


class FakeMMDiT(nn.Module):
    """SD3/Flux-like: transformer blocks, no input_blocks."""

    def __init__(self):
        super().__init__()
        self.joint_blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])


def test_refiner_layout_is_refused_untouched():
    refiner = build_ldm_unet(unet_params("refiner"))
    before = fingerprint(refiner)
    with pytest.raises(UnsupportedModelError, match="refiner"):
        apply_hidiffusion(refiner, steps=10)
    assert fingerprint(refiner) == before


@pytest.mark.parametrize("model", [FakeMMDiT(), nn.Sequential(nn.Conv2d(4, 4, 3)), nn.Linear(3, 3)])
def test_non_unets_are_refused_untouched(model):
    before = fingerprint(model)
    with pytest.raises(UnsupportedModelError, match="not U-Nets"):
        apply_hidiffusion(model, steps=10)
    assert fingerprint(model) == before


def test_family_that_does_not_fit_the_structure(ldm_unet):
    unet = ldm_unet("sd1")
    with pytest.raises(UnsupportedModelError, match="family 'sdxl'"):
        apply_hidiffusion(unet, HiDiffusionSettings(family="sdxl"), steps=10)
    assert all("forward" not in vars(m) for m in unet.modules())


def test_inpainting_unets_are_supported(ldm_unet):
    unet = ldm_unet("sd1", in_channels=9)
    with torch.no_grad(), apply_hidiffusion(unet, steps=10) as handle:
        out = unet(torch.randn(1, 9, 32, 32), torch.tensor([10.0]), context=torch.zeros(1, 2, 32))
    assert out.shape == (1, 4, 32, 32) and handle.stats.rad_forwards == 1


@pytest.mark.parametrize("bad", [dict(steps=0), dict(steps=2.5), dict(steps=10, seed="x"), dict(steps=10, shift_rng="rand")])
def test_bad_arguments_raise_before_touching(ldm_unet, bad):
    unet = ldm_unet("sd1")
    with pytest.raises(ValueError):
        apply_hidiffusion(unet, **bad)
    assert all("forward" not in vars(m) for m in unet.modules())
