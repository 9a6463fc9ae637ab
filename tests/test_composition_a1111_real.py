"""HiDiffusion next to A1111-side U-Net tools, by each tool's own code from a checkout (each test skips without it).

- A1111_DIR: A1111's built-in HyperTile wraps each attn1's instance forward for good and switches it per generation;
  where it tiles the top-level self-attention, MSW-MSA yields on those blocks (design.md §11.7).
- KOHYA_HIRESFIX_DIR: wcde/sd-webui-kohya-hiresfix's Script (Deep Shrink): RAU-Net yields for the pass.
- DEEPSHRINK_HIRESFIX_DIR: Filexor/DeepShrinkHires.fix's SD U-Net (its own block loop): RAU-Net yields, and its
  between-block scaling keeps its sizes.
"""

import importlib.util
import os
import sys

import pytest
import torch
from conftest import run_unet

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.presets import block_roles, plan_for
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.ldm.unet_patch import windowed_transformers
from hidiffusion_ext.webui import conflicts

A1111_DIR = os.environ.get("A1111_DIR", "")
HYPERTILE = os.path.join(A1111_DIR, "extensions-builtin", "hypertile", "hypertile.py")
needs_hypertile = pytest.mark.skipif(not os.path.isfile(HYPERTILE), reason="set A1111_DIR to a stable-diffusion-webui checkout")
SIZE, STEPS, SEED = (32, 32), 10, 3


@pytest.fixture(scope="module")
def hypertile():
    spec = importlib.util.spec_from_file_location("hypertile", HYPERTILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hypertile"] = module  # its dataclass looks its module up there, as on the webui's sys.path
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("hypertile", None)


@pytest.fixture
def unet():
    """A U-Net of its own: HyperTile's wrappers stay on a model for good, as in the webui."""
    return build_ldm_unet(unet_params("sd1"), seed=1)


def hook(hypertile, unet, enable):
    hypertile.set_hypertile_seed(SEED)  # its process() does this per generation
    hypertile.hypertile_hook_model(unet, SIZE[1] * 8, SIZE[0] * 8, enable=enable, tile_size_max=128, swap_size=1,
                                   max_depth=0, is_sdxl=False)


def windowed_blocks(unet):
    return windowed_transformers(unet, block_roles(inspect_unet(unet), plan_for("sd15")))


def windowed_attn1(unet):
    return [tb.attn1 for tb in windowed_blocks(unet)]


@needs_hypertile
def test_msw_msa_yields_where_hypertile_tiles_and_raunet_stays(hypertile, unet):
    x = torch.randn(1, 4, *SIZE, generator=torch.Generator().manual_seed(0))
    hook(hypertile, unet, enable=True)
    wrappers = [attn.forward for attn in windowed_attn1(unet)]
    hypertile_alone = run_unet(unet, x)
    decisions = conflicts.a1111_decisions(None, windowed_blocks(unet))
    assert [(d.tool, d.action, d.windows) for d in decisions] == [("HyperTile", conflicts.WINDOWS_YIELD, (0, 1, 2, 3, 4))]

    hook(hypertile, unet, enable=True)  # same seed: the same tile choices
    with apply_hidiffusion(unet, HiDiffusionSettings(raunet=False), steps=STEPS, seed=SEED) as handle:
        conflicts.apply_decisions(handle, decisions)
        handle.set_step(0)
        windows_yielded = run_unet(unet, x)
        assert handle.stats.windowed_calls == 0 and handle.stats.yielded_window_calls == 5
        assert any("HyperTile" in note and "5 of 5" in note for note in handle.notes)
    assert torch.equal(windows_yielded, hypertile_alone)  # HyperTile's tiles, untouched by windows

    with apply_hidiffusion(unet, HiDiffusionSettings(), steps=STEPS, seed=SEED) as handle:
        conflicts.apply_decisions(handle, decisions)
        handle.set_step(0)
        run_unet(unet, x)
        assert handle.stats.rad_forwards == 1 and handle.stats.windowed_calls == 0
    assert [attn.forward for attn in windowed_attn1(unet)] == wrappers  # HyperTile's wrappers are back, ours gone


@needs_hypertile
def test_hypertile_switched_off_leaves_the_windows_on(hypertile, unet):
    hook(hypertile, unet, enable=True)
    hook(hypertile, unet, enable=False)  # a later generation without it: the wrappers stay, inert
    assert conflicts.a1111_decisions(None, windowed_blocks(unet)) == []


KOHYA_DIR = os.environ.get("KOHYA_HIRESFIX_DIR", "")
KOHYA_SCRIPT = os.path.join(KOHYA_DIR, "scripts", "khrfix.py")


@pytest.mark.skipif(not os.path.isfile(KOHYA_SCRIPT), reason="set KOHYA_HIRESFIX_DIR to a sd-webui-kohya-hiresfix checkout")
def test_wcde_deep_shrink_makes_raunet_yield_in_a_generation(tmp_path, hidiffusion_log):
    """wcde/sd-webui-kohya-hiresfix's own Script in the A1111 generation loop before ours: it wraps input and output
    blocks in its Scaler from its cfg-denoiser callback; RAU-Net yields for the pass, MSW-MSA stays."""
    import fake_webui

    from hidiffusion_ext.webui import session as webui_session

    ours = fake_webui.load_script_module().HiDiffusionScript()  # clears the stand-in's callbacks first
    ours.is_txt2img = True
    spec = importlib.util.spec_from_file_location("khrfix.py", KOHYA_SCRIPT)
    khrfix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(khrfix)
    khrfix.CONFIG_PATH = tmp_path / "config.yaml"  # it saves its settings at postprocess: not into the checkout
    unet = build_ldm_unet(unet_params("sd1"), seed=1)
    # enable, only_one_pass, d1, d2, s1, s2, scaler, downscale, upscale, smooth_scaling, early_out (its ui() order)
    kohya_args = [True, True, 3, 4, 0.15, 0.3, "bicubic", 0.5, 2.0, False, False]
    images = []
    for enable in (False, True):
        p = fake_webui.make_p(unet, steps=4)
        kohya = (khrfix.KohyaHiresFix(), [enable, *kohya_args[1:]])
        images += fake_webui.process_images(p, ours, fake_webui.script_args(), others=[kohya]).images
        assert not p.scripts.errors, p.scripts.errors
    record = webui_session.last.passes[(0, False)]
    assert record.patch.raunet_skipped and record.patch.stats.rad_forwards == 0
    assert record.patch.stats.windowed_calls > 0
    note = p.extra_generation_params["HiDiffusion note"]
    assert "Kohya Hires.fix (Deep Shrink) shrinks the deep blocks as RAU-Net does: RAU-Net off for this pass" in note
    assert any(": RAU-Net off for this pass (noted above); " in m for m in hidiffusion_log)  # no schedule shown
    assert not torch.equal(*images)  # its Deep Shrink did run
    assert not any(isinstance(block, khrfix.Scaler) for block in [*unet.input_blocks, *unet.output_blocks])


@needs_hypertile
def test_a_generation_names_hypertile_once_and_not_idle_windows(hypertile, unet):
    """Through our Script: the yield is the note; "MSW-MSA ran on no step" would only repeat it."""
    import fake_webui

    from hidiffusion_ext.webui import session as webui_session

    ours = fake_webui.load_script_module().HiDiffusionScript()
    ours.is_txt2img = True
    hook(hypertile, unet, enable=True)
    p = fake_webui.make_p(unet, width=SIZE[1] * 8, height=SIZE[0] * 8, steps=3)
    fake_webui.process_images(p, ours, fake_webui.script_args())
    assert not p.scripts.errors, p.scripts.errors
    stats = webui_session.last.passes[(0, False)].patch.stats
    assert stats.windowed_calls == 0 and stats.yielded_window_calls == 5 * 3 and stats.rad_forwards == 1
    note = p.extra_generation_params["HiDiffusion note"]
    assert note == "HyperTile tiles the top-level self-attention: MSW-MSA left to it on 5 of 5 blocks"


DEEPSHRINK_DIR = os.environ.get("DEEPSHRINK_HIRESFIX_DIR", "")
DEEPSHRINK_SCRIPT = os.path.join(DEEPSHRINK_DIR, "scripts", "DeepShrinkHires.fix.py")


def a1111_sd_unet():
    """modules/sd_unet.py (1.10.1): ``current_unet``, ``SdUnetOption`` (63-72), ``SdUnet`` (75-84) and the
    ``UNetModel_forward`` that sd_hijack.py:41 puts on ldm's UNetModel, calling the selected SD U-Net (86-93)."""
    import types

    module = types.ModuleType("modules.sd_unet")
    module.current_unet = None
    module.SdUnetOption = type("SdUnetOption", (), {"label": None, "model_name": None})
    module.SdUnet = type("SdUnet", (torch.nn.Module,), {"activate": lambda self: None, "deactivate": lambda self: None})

    def create_unet_forward(original_forward):
        def UNetModel_forward(self, x, timesteps=None, context=None, *args, **kwargs):  # noqa: N802 (A1111's name)
            if module.current_unet is not None:
                return module.current_unet.forward(x, timesteps, context, *args, **kwargs)
            return original_forward(self, x, timesteps, context, *args, **kwargs)

        return UNetModel_forward

    module.create_unet_forward = create_unet_forward
    return module


@pytest.mark.skipif(not os.path.isfile(DEEPSHRINK_SCRIPT), reason="set DEEPSHRINK_HIRESFIX_DIR to a DeepShrinkHires.fix checkout")
def test_deepshrinkhires_fix_unet_makes_raunet_yield_in_a_generation(monkeypatch, hidiffusion_log):
    """Filexor/DeepShrinkHires.fix's own SD U-Net (it runs the model's blocks in its own loop, shrinking at a depth
    and timestep), selected as A1111's SD U-Net: RAU-Net yields (no double shrink), MSW-MSA stays."""
    import types

    import fake_webui
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    from hidiffusion_ext.webui import session as webui_session

    ours = fake_webui.load_script_module().HiDiffusionScript()  # puts the modules stand-ins on sys.path
    ours.is_txt2img = True
    sd_unet = a1111_sd_unet()
    monkeypatch.setitem(sys.modules, "modules.sd_unet", sd_unet)
    monkeypatch.setitem(sys.modules, "modules.devices", types.SimpleNamespace(device=torch.device("cpu")))
    monkeypatch.setattr(UNetModel, "forward", sd_unet.create_unet_forward(UNetModel.forward))
    spec = importlib.util.spec_from_file_location("DeepShrinkHires.fix.py", DEEPSHRINK_SCRIPT)
    deepshrink = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(deepshrink)
    theirs = deepshrink.DeepShrinkHiresFix()
    # its ui() order: 8 x (enable, timestep, depth, scale), then experimental (enable, timestep, scales); 2 rows on
    their_args = [True, 900, 3, 2, True, 650, 3, 2] + [False, 900, 3, 2] * 6 + [False, 900, "1"]
    unet = build_ldm_unet(unet_params("sd1"), seed=1)

    def generate(shrink, **settings):
        sd_unet.current_unet = deepshrink.DeepShrinkHiresFix.DeepShrinkHiresFixUNet(unet) if shrink else None
        p = fake_webui.make_p(unet, width=256, height=256, steps=3)  # t 999, 666, 333: its 2 rows act at steps 0, 1
        image = fake_webui.process_images(p, ours, fake_webui.script_args(**settings),
                                          others=[(theirs, their_args)]).images[0]
        assert not p.scripts.errors, p.scripts.errors
        last = webui_session.last if settings.get("enabled", True) else None
        return image, p, last and last.passes[(0, False)].patch.stats

    stock, _, _ = generate(shrink=False, enabled=False)
    shrink_alone, _, _ = generate(shrink=True, enabled=False)
    assert not torch.equal(shrink_alone, stock)  # its U-Net runs and shrinks
    shrink_and_windows, _, _ = generate(shrink=True, raunet=False)
    both, p, stats = generate(shrink=True)
    assert stats.rad_forwards == 0 and stats.windowed_calls > 0
    assert torch.equal(both, shrink_and_windows)  # its shrink and our windows, no RAD on top: no double shrink
    assert p.extra_generation_params["HiDiffusion note"] == (
        "DeepShrinkHires.fix shrinks the deep blocks as RAU-Net does: RAU-Net off for this pass, MSW-MSA on")
    assert any(": RAU-Net off for this pass (noted above); " in m for m in hidiffusion_log)
    sd_unet.current_unet = None
    again, _, _ = generate(shrink=False, enabled=False)
    assert torch.equal(again, stock)  # nothing of ours left behind
