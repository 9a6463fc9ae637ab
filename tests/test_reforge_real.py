"""HiDiffusion on the real code of reForge (needs REFORGE_DIR; skipped otherwise).

Tested at Panchovix/stable-diffusion-webui-reForge main 3b56b268 (ldm_patched's U-Net without block modifiers,
ControlNet objects that never call the model function wrapper) and newmain_newforge 65cb271e (Forge main's backend).
The cases of tests/fork_cases.py run on a small U-Net the fork builds with its own classes, through its own patcher,
loader and sampling path; tests/fork_backend.py imports the fork's code (the layout is recognised by what it has).
"""

from fork_backend import gated_fork
from fork_cases import *  # noqa: F403 - the shared cases run here against this fork

pytestmark, host = gated_fork("REFORGE_DIR")


def test_hypertile_keeps_its_tiles_and_the_windows_stay_where_it_leaves_the_tokens_whole(host, nets):
    """reForge's built-in HyperTile (sd_forge_hypertile runs ComfyUI's node, ldm_patched/contrib/nodes_hypertile.py)
    folds tiles of the top-level queries into the batch: those calls keep its attention (SD1: bit for bit HyperTile
    alone). At max depth 0 it leaves SDXL's windowed level 1 whole, and the windows run there."""
    import pytest
    import torch

    from hidiffusion_ext import HiDiffusionSettings
    from hidiffusion_ext.forge.unet_patch import patch_forge_unet
    from hidiffusion_ext.webui import conflicts

    try:
        from ldm_patched.contrib.nodes_hypertile import HyperTile
    except ImportError:
        pytest.skip("this reForge tree has no HyperTile node")
    for shape in ("sd1", "sdxl"):
        ldm, patcher = nets(shape)
        x, context = inputs(ldm, (32, 32))  # noqa: F405
        tiled = HyperTile().patch(patcher, 128, 1, 0, False)[0]  # 16-latent tiles; swap size 1: no random choice
        alone = host.denoise(tiled, x, context, sigma(0))  # noqa: F405
        decisions = conflicts.forge_decisions(tiled)
        assert [(d.tool, d.action) for d in decisions] == [("HyperTile", conflicts.WINDOWS_YIELD_PER_CALL)]
        result = patch_forge_unet(tiled, HiDiffusionSettings(raunet=False), steps=STEPS, seed=SEED)  # noqa: F405
        conflicts.apply_decisions(result, decisions)
        result.set_step(0)
        both = host.denoise(result.patcher, x, context, sigma(0))  # noqa: F405
        result.remove()
        assert result.notes == ["HyperTile tiles the top-level self-attention: MSW-MSA left to it on every call it tiles"]
        if shape == "sd1":
            assert result.stats.windowed_calls == 0 and result.stats.yielded_window_calls == 5
            assert torch.equal(both, alone)
        else:
            assert result.stats.windowed_calls > 0 and result.stats.yielded_window_calls == 0
            assert not torch.equal(both, alone)


def test_the_kernel_inside_the_windows_gets_the_precision_the_block_asked_for(host, monkeypatch):
    """reForge main's SD2.x runs attention in fp32 (supported_models.SD20: attn_precision), passed by CrossAttention
    to its kernel as a keyword (attention.py: optimized_attention(q, k, v, heads, attn_precision=...)), and by the
    block to an attn1 replace in extra_options: the kernel inside the windows gets it too, or SD2.1 in fp16 on a GPU
    loses its upcast there (black images)."""
    import pytest
    import torch

    from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params

    if host.layout != "ldm_patched":
        pytest.skip("newmain_newforge: Forge main's backend, whose blocks pass their kernel no precision")
    from ldm_patched.modules.supported_models import SD20

    precision = SD20.unet_extra_config["attn_precision"]
    params = unet_params("sd2")
    ldm = build_ldm_unet(params, seed=1)
    patcher = host.build_patcher(params, ldm.state_dict(), attn_precision=precision)
    kernel, keywords = host.attention.optimized_attention, []

    def spy(q, k, v, heads, mask=None, **kwargs):
        keywords.append(kwargs)
        return kernel(q, k, v, heads, mask, **kwargs)

    monkeypatch.setattr(host.attention, "optimized_attention", spy)
    x, context = inputs(ldm, (32, 32))  # noqa: F405
    host.denoise(patcher, x, context, sigma(0))  # noqa: F405
    stock, keywords[:] = list(keywords), []
    result = patch_forge_unet(patcher, CASES["sd1"][0], steps=STEPS, seed=SEED)  # noqa: F405
    result.set_step(0)
    host.denoise(result.patcher, x, context, sigma(0))  # noqa: F405
    result.remove()
    assert result.stats.windowed_calls > 0
    assert stock and all(kw == {"attn_precision": torch.float32} for kw in stock)  # what the host's own call passes
    assert [kw for kw in keywords if kw != {"attn_precision": torch.float32}] == []
