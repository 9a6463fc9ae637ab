"""The cost model's multiply-adds against torch's own FLOP counter on real patched forwards."""

import pytest
import torch
from test_controlnet import PHASES
from torch.utils.flop_counter import FlopCounterMode

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.cost_model import describe_saving, forward_macs
from hidiffusion_ext.core.geometry import ForwardGeometry
from hidiffusion_ext.core.presets import block_roles, plan_for
from hidiffusion_ext.core.unet_map import inspect_unet

FAMILY = {"sd1": "sd15", "sdxl": "sdxl"}
HW = (48, 40)


def counted_macs(unet, settings, step, expected):
    context = torch.zeros(1, 77, unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features)
    with torch.no_grad(), apply_hidiffusion(unet, settings, steps=10) as handle, FlopCounterMode(display=False) as flops:
        handle.set_step(step)
        assert handle.geometry_for(HW) == expected
        unet(torch.zeros(1, 4, *HW), torch.tensor([500.0]), context=context)
    return flops.get_total_flops() / 2


@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_predicted_ratios_match_counted_ones(ldm_unet, shape):
    unet = ldm_unet(shape)
    unet_map = inspect_unet(unet)
    roles = block_roles(unet_map, plan_for(FAMILY[shape]))
    cases = {"stock": (HiDiffusionSettings(raunet=False, mswmsa=False), 0, ForwardGeometry(), False),
             "windows": (HiDiffusionSettings(raunet=False), 0, ForwardGeometry(), True)}
    for phase in ("rad", "pool", "both"):
        settings, step, (rad, pool) = PHASES[shape][phase]
        cases[phase] = (settings.replace(mswmsa=False), step, ForwardGeometry(rad, pool), False)
        cases[phase + "+windows"] = (settings, step, ForwardGeometry(rad, pool), True)
    counted = {name: counted_macs(unet, s, step, geometry) for name, (s, step, geometry, _) in cases.items()}
    predicted = {name: forward_macs(unet_map, roles, HW, geometry, windowed)
                 for name, (_, _, geometry, windowed) in cases.items()}
    assert abs(predicted["stock"] / counted["stock"] - 1) < 0.05  # what it leaves out: time embedding, final conv
    for name in cases:
        ratio_counted, ratio_predicted = counted[name] / counted["stock"], predicted[name] / predicted["stock"]
        assert abs(ratio_predicted - ratio_counted) < 0.02, (name, ratio_predicted, ratio_counted)
    assert predicted["both+windows"] < predicted["both"] < predicted["stock"]


def test_describe_saving():
    assert describe_saving(0.583) == "≈ −42% U-Net compute"
    assert describe_saving(1.0) == "≈ no U-Net compute saved"
