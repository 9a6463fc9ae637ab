"""The resolved-schedule text under the controls: same rules as the generation, on the tab's values."""

from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.webui.arguments import ScriptArgs
from hidiffusion_ext.webui.pass_plan import ModelInfo as LoadedModel
from hidiffusion_ext.webui.tab_preview import TabValues, hires_size, passes, preview


def test_hires_size_as_a1111_computes_it():
    assert hires_size(512, 768, 2.0, 0, 0) == (1024, 1536)
    assert hires_size(512, 768, 2.0, 1000, 0) == (1000, 1500)
    assert hires_size(512, 768, 2.0, 0, 1200) == (800, 1200)
    assert hires_size(512, 768, 2.0, 1024, 1024) == (1024, 1024)  # upscaled to cover, then cropped


def test_img2img_counts_executed_steps_and_has_no_hires_pass():
    assert passes(TabValues(steps=20, denoising=0.5, hires=True)) == [("first pass", 512, 512, 11, False)]
    assert passes(TabValues(steps=20, hires=True, hr_steps=0)) == [
        ("first pass", 512, 512, 20, False), ("hires pass", 1024, 1024, 20, True)]


def test_preview_per_family(ldm_unet):
    sdxl = LoadedModel(inspect_unet(ldm_unet("sdxl")), "sd_xl_base_1.0")
    text = preview(ScriptArgs(enabled=True), sdxl, TabValues(width=2048, height=2048, steps=50)).text
    assert text.splitlines() == [
        "**Resolved for SDXL** · sd_xl_base_1.0",
        "- first pass 2048x2048, 50 steps: RAU-Net sdxl small: T1 0.4, T2 0, aggressive; RAD steps 0-7, "
        "pooling steps 8-19 of 50; MSW-MSA on; ≈ −61% U-Net compute",
    ]
    turbo = LoadedModel(inspect_unet(ldm_unet("sdxl")), "sdxl_turbo_1.0")
    assert "RAU-Net sdxl_turbo any: T1 0.5" in preview(ScriptArgs(), turbo, TabValues(width=1024, height=1024, steps=4)).text
    wrong = preview(ScriptArgs(preset="SDXL"), LoadedModel(inspect_unet(ldm_unet("sd1"))), TabValues()).text
    assert wrong.startswith("Resolved schedule: family 'sdxl' does not fit this U-Net")
    assert preview(ScriptArgs(), None, TabValues()).text.startswith("Resolved schedule: no model is loaded yet")
    untouched = preview(ScriptArgs(apply_to="hires pass"), sdxl, TabValues()).text
    assert "first pass 512x512: untouched (apply to: hires pass)" in untouched
