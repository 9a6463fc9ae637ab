"""HiDiffusion on the real code of Forge Neo (needs NEO_DIR; skipped otherwise).

Tested at nolanlane/sd-webui-forge-classic 6e1e0d5 (the neo branch): Forge main's backend layout with a ComfyUI v0.7.0
ModelPatcher (object patches applied at load, restored at unpatch). The cases of tests/fork_cases.py run on a small
U-Net the fork builds with its own classes, through its own patcher, loader and sampling path; tests/fork_backend.py
imports the fork's code.
"""

import pytest
from fork_backend import gated_fork
from fork_cases import *  # noqa: F403 - the shared cases run here against this fork

pytestmark, host = gated_fork("NEO_DIR")


@pytest.mark.parametrize("variant", ["ForgeOperations", "ForgeOperationsInt8"])
def test_both_neo_linear_variants_priced_like_ldm(host, variant):
    """Neo's ForgeOperations.Linear is a plain nn.Module, ForgeOperationsInt8.Linear an nn.Linear subclass: the cost
    model reads features, so the U-Net built under either is priced like the ldm one."""
    import sys

    import test_forge_real as forge_real
    import torch

    from hidiffusion_ext.core.unet_map import inspect_unet
    from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params

    operations = sys.modules["backend.operations"]
    config = forge_real.forge_config(unet_params("sd1"))
    with operations.using_forge_operations(operations=getattr(operations, variant), device=torch.device("cpu"),
                                           dtype=torch.float32):
        unet = host.backend.IntegratedUNet2DConditionModel.from_config(config)
    linear = next(m for m in unet.modules() if type(m).__name__ == "Linear")
    assert type(linear).__qualname__ == f"{variant}.Linear"
    assert isinstance(linear, torch.nn.Linear) == (variant == "ForgeOperationsInt8")
    assert inspect_unet(unet).block_costs == inspect_unet(build_ldm_unet(unet_params("sd1"))).block_costs
