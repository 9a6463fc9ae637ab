"""What the readout knows besides the tab's own fields: img2img's Resize by, a model switch, and the other tools
that will take a part of HiDiffusion (Settings and other scripts' accordions); and the schedule strip."""

from types import SimpleNamespace

import fake_webui
import pytest

from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.webui import fields, page_state
from hidiffusion_ext.webui.other_tools import OtherTools, accordion_tool, settings_tools
from hidiffusion_ext.webui.pass_plan import ModelInfo
from hidiffusion_ext.webui.readout import readout_text, readout_view

ON = [fields.by_name(n).default for n in fields.names()]
ON[0] = True
PREVIEW = "resize: from <span class='resolution'>800x600</span> to <span class='resolution'>1200x904</span>"


@pytest.fixture
def sd15(ldm_unet):
    model = ModelInfo(inspect_unet(ldm_unet("sd1")), "random-sd15")
    return lambda: model


@pytest.fixture
def sdxl(ldm_unet):
    model = ModelInfo(inspect_unet(ldm_unet("sdxl")), "random-sdxl")
    return lambda: model


def test_img2img_resize_by_takes_the_image_size_times_the_scale(sd15):
    by = {"width": 512, "height": 512, "steps": 20, "denoising": 1, "page_state": '{"resize": "by", "version": 0}',
          "resize_preview": PREVIEW}
    text = readout_text("img2img", sd15, ON, by)
    assert "first pass 1200x904, 20 steps" in text and "(Resize by: the image's size times the scale)" in text
    to = {**by, "page_state": '{"resize": "to"}'}
    assert "first pass 512x512, 20 steps" in readout_text("img2img", sd15, ON, to)
    empty = readout_text("img2img", sd15, ON, {**by, "resize_preview": "no image selected"})
    assert "first pass 512x512" in empty and "Resize by: no image loaded, Width/Height shown" in empty
    assert "first pass 512x512" in readout_text("img2img", sd15, ON, {**by, "page_state": "not json"})
    assert "first pass 512x512" in readout_text("txt2img", sd15, ON, by)  # txt2img has no Resize by


def test_forge_rounds_its_resize_by_preview_and_the_readout_reads_it(sd15):
    forge = "resize: from <span class='resolution'>1000x750</span> to <span class='resolution'>1496x1120</span>"
    values = {"steps": 10, "denoising": 1, "page_state": '{"resize": "by"}', "resize_preview": forge}
    assert "first pass 1496x1120, 10 steps" in readout_text("img2img", sd15, ON, values)
    assert page_state.resize_by_size("resize: from 0x0 to 0x0") is None


def test_a_model_load_or_a_settings_change_bumps_the_version_the_page_polls():
    fake_webui.load_script_module()  # registers its callbacks, as the webui's script loader does
    from modules import script_callbacks, shared

    before = page_state.version()["version"]
    script_callbacks.model_loaded_callback(SimpleNamespace())
    assert page_state.version()["version"] == before + 1

    calls = []
    shared.opts.add_option("token_merging_ratio", shared.OptionInfo(0.0, "ToMe", section=("opt", "Optimizations"),
                                                                     onchange=lambda: calls.append("own")))
    page_state.watch_settings(shared.opts)
    page_state.watch_settings(shared.opts)  # a second app start (a UI reload) chains once only
    try:
        shared.opts.set("token_merging_ratio", 0.5)
        assert calls == ["own"] and page_state.version()["version"] == before + 2
        shared.opts.set("token_merging_ratio", 0.5, run_callbacks=False)  # override_settings: no bump
        assert page_state.version()["version"] == before + 2
    finally:
        shared.opts.data_labels.pop("token_merging_ratio")
        shared.opts.data.pop("token_merging_ratio")


def test_the_version_route_answers_a_counter_only():
    fastapi = pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    app = fastapi.FastAPI()
    page_state.register(app)
    answer = testclient.TestClient(app).get(page_state.ROUTE)
    assert answer.status_code == 200 and set(answer.json()) == {"version"}


def test_hypertile_and_token_merging_from_settings_per_pass():
    opts = SimpleNamespace(token_merging_ratio=0.3, token_merging_ratio_hr=0.6, token_merging_ratio_img2img=0,
                           hypertile_enable_unet=False, hypertile_enable_unet_secondpass=True)
    assert settings_tools("txt2img", False, opts) == OtherTools(token_merging=0.3, hypertile=False)
    assert settings_tools("txt2img", True, opts) == OtherTools(token_merging=0.6, hypertile=True)
    assert settings_tools("img2img", False, opts) == OtherTools(token_merging=0.3)  # img2img's 0 falls back
    assert settings_tools("txt2img", False, SimpleNamespace()) == OtherTools()  # Forge: no HyperTile options


def test_the_readout_names_the_tools_as_the_console_does(sd15, sdxl):
    page = {"width": 1024, "height": 1024, "steps": 10, "hires": True, "hr_scale": 2, "hr_steps": 4}
    hyper_hires = {False: OtherTools(), True: OtherTools(hypertile=True)}.get
    first, hires = readout_text("txt2img", sd15, ON, page, settings=hyper_hires).splitlines()[1:]
    assert "MSW-MSA on" in first and "MSW-MSA left to HyperTile (Settings)" in hires
    assert "saving not predicted" in hires and "≈" in first

    shrink = {**page, "tool:Kohya HRFix (Deep Shrink)": True}
    text = readout_text("txt2img", sd15, ON, shrink, settings=lambda hires: OtherTools())
    assert text.count("RAU-Net left to Kohya HRFix (Deep Shrink)") == 2 and "MSW-MSA on" in text
    unticked = readout_text("txt2img", sd15, ON, {**page, "tool:Kohya HRFix (Deep Shrink)": False},
                            settings=lambda hires: OtherTools())
    assert "Deep Shrink" not in unticked

    tiled = readout_text("txt2img", sd15, ON, {**page, "tool:MultiDiffusion": True}, settings=lambda h: OtherTools())
    assert "MultiDiffusion tiles: tiles at or below the native size without RAU-Net" in tiled

    merging = {False: OtherTools(token_merging=0.5), True: OtherTools(token_merging=0.5)}.get
    assert "Token merging" not in readout_text("txt2img", sdxl, ON, {"width": 2048, "height": 2048}, settings=merging)


def test_other_scripts_accordions_are_found_by_their_title():
    gr = pytest.importorskip("gradio")
    from modules.ui_components import InputAccordion

    with gr.Blocks():
        with InputAccordion(False, label="Kohya HRFix Integrated") as forge_shrink:
            gr.Slider(label="Block Number")
        with gr.Accordion("MultiDiffusion Integrated", open=False):
            tiler = gr.Checkbox(label="Enabled")
            method = gr.Radio(["MultiDiffusion"], label="Method")
        with gr.Accordion("Kohya Hires.fix", open=False):
            with gr.Row():
                wcde = gr.Checkbox(label="Enable extension")
        other = gr.Checkbox(label="Enabled")
    assert accordion_tool(forge_shrink) == "tool:Kohya HRFix (Deep Shrink)"
    assert accordion_tool(tiler) == "tool:MultiDiffusion"
    assert accordion_tool(wcde) == "tool:Kohya Hires.fix (Deep Shrink)"
    assert accordion_tool(method) is None and accordion_tool(other) is None


def test_the_strip_has_a_cell_per_step_marked_as_the_schedule_runs(sd15, sdxl):
    large = readout_view("txt2img", sd15, ON, {"width": 2048, "height": 2048, "steps": 10},
                         settings=lambda hires: OtherTools())
    assert "RAD steps 0-6, pooling steps 0-2 of 10" in large.text
    cells = large.strip.split('hidiffusion-strip-cells')[1].split("</div>")[0]
    kinds = [c.split('"')[0] for c in cells.split("hidiffusion-strip-cell hidiffusion-strip-")[1:]]
    assert kinds == ["both"] * 3 + ["rad"] * 4 + ["stock"] * 3
    assert 'aria-label="first pass 2048x2048, 10 steps: RAD + pooled steps 0-2, RAD steps 3-6, stock steps 7-9"' \
        in large.strip
    assert "MSW-MSA on" in large.strip and "hidiffusion-strip-off" not in large.strip

    xl = readout_view("txt2img", sdxl, ON, {"width": 2048, "height": 2048, "steps": 10},
                      settings=lambda hires: OtherTools())
    assert "aggressive" in xl.text and "RAD steps 0, pooled steps 1-3, stock steps 4-9" in xl.strip

    off = readout_view("txt2img", sd15, [False] + ON[1:], {"width": 512, "height": 512, "steps": 4},
                       settings=lambda hires: OtherTools())
    assert "hidiffusion-strip-off" in off.strip and "stock steps 0-3" in off.strip

    hires_only = ON[:]
    hires_only[fields.names().index("apply_to")] = "hires pass"
    two = readout_view("txt2img", sd15, hires_only, {"width": 1024, "height": 1024, "steps": 4, "hires": True,
                                                     "hr_steps": 2}, settings=lambda hires: OtherTools())
    assert two.strip.count('class="hidiffusion-strip-pass"') == 2 and "MSW-MSA off" in two.strip
    assert readout_view("txt2img", lambda: None, ON, {}).strip == ""
