"""The cost model's multiply-adds against torch's own FLOP counter on real patched forwards."""

import copy

import pytest
import torch
import torch.nn.functional as F
from controlnet_support import PHASES
from torch import nn
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


class ForgeLinear(nn.Module):
    """Stand-in for Forge's ``ForgeOperations.Linear`` (backend/operations.py, lines 125-156 at dfdcbab6): an
    ``nn.Module``, not an ``nn.Linear``, with ``in_features`` / ``out_features``, ``weight`` and ``bias``, and a forward
    that is ``F.linear``. Forge builds every checkpoint's U-Net under these operations."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def with_forge_linears(unet: nn.Module) -> nn.Module:
    forge_like = copy.deepcopy(unet)
    for parent in list(forge_like.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, ForgeLinear(child))
    return forge_like


def test_forge_operations_are_priced_like_torch_layers(ldm_unet):
    """A U-Net built under Forge's operations costs what the same U-Net built from torch layers costs (it was priced
    without its attention and projections, so the Forge readout said -17% where A1111 said -31%)."""
    unet = ldm_unet("sd1")
    forge_like = with_forge_linears(unet)
    assert not any(isinstance(m, nn.Linear) for m in forge_like.modules())
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500.0])
    context = torch.randn(1, 77, unet.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features)
    with torch.no_grad():
        assert torch.equal(forge_like(x, t, context=context), unet(x, t, context=context))  # a faithful stand-in
    assert inspect_unet(forge_like).block_costs == inspect_unet(unet).block_costs
    assert any(cost.self_attention > 0 for cost in inspect_unet(forge_like).block_costs)
