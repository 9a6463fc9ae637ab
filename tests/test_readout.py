"""The readout as one pure function of the current values: event order, browsers and the model at call time."""

import itertools

import pytest

from hidiffusion_ext.core.unet_map import UnsupportedModelError, inspect_unet
from hidiffusion_ext.webui import fields
from hidiffusion_ext.webui.other_tools import OtherTools
from hidiffusion_ext.webui.pass_plan import ModelInfo
from hidiffusion_ext.webui.readout import readout_text

OFF = [fields.by_name(n).default for n in fields.names()]
ON = [True] + OFF[1:]


@pytest.fixture
def sd15(ldm_unet):
    model = ModelInfo(inspect_unet(ldm_unet("sd1")), "random-sd15")
    return lambda: model


def typed(field, text):
    """The values a number box holds while ``text`` is typed into it: "768" -> 7, 76, 768."""
    return [(field, int(text[:i])) for i in range(1, len(text) + 1)]


def test_every_event_order_gives_the_text_of_the_current_values(sd15):
    """Typing 768 into width and height and 3 into steps fires one event per keystroke, each carrying every
    current value. Whatever order the server handles them in, the last one handled gives the text of the values
    it carries, and the text of the final values says 768x768, 3 steps."""
    page, events = {"width": 512, "height": 512, "steps": 20}, []
    for field, value in typed("width", "768") + typed("height", "768") + typed("steps", "3"):
        page = {**page, field: value}
        events.append(dict(page))
    final = readout_text("txt2img", sd15, ON, events[-1])
    assert "first pass 768x768, 3 steps" in final
    own = [readout_text("txt2img", sd15, ON, event) for event in events]
    assert "first pass 0x512" in own[0]  # the first keystroke alone: 7 px wide
    for order in itertools.permutations(range(len(events))):
        seen = [readout_text("txt2img", sd15, ON, events[i]) for i in order]
        assert seen == [own[i] for i in order]  # nothing carried over from earlier calls
    assert len(set(own)) == len(own)  # each keystroke's values give their own text: only the values decide


def test_two_browsers_at_the_same_time_get_their_own_text(sd15):
    a = {"width": 768, "height": 768, "steps": 3}
    b = {"width": 1024, "height": 640, "steps": 30, "hires": True, "hr_scale": 2}
    text_a, text_b = readout_text("txt2img", sd15, ON, a), readout_text("txt2img", sd15, OFF, b)
    assert "first pass 768x768, 3 steps" in text_a and "hires" not in text_a and "(HiDiffusion is off)" not in text_a
    assert "(HiDiffusion is off)" in text_b and "hires pass 2048x1280, 30 steps" in text_b
    assert readout_text("txt2img", sd15, ON, a) == text_a  # b's call in between changed nothing


def test_img2img_counts_the_steps_denoising_runs(sd15):
    assert "first pass 512x512, 11 steps" in readout_text("img2img", sd15, ON, {"steps": 20, "denoising": 0.5})
    assert "first pass 512x512, 16 steps" in readout_text("img2img", sd15, ON, {"steps": 20})  # default 0.75
    assert "first pass 512x512, 20 steps" in readout_text("img2img", sd15, ON, {"steps": 20, "denoising": 1})


def test_hires_scale_or_resize_to(sd15):
    tab = {"width": 512, "height": 768, "hires": True, "hr_scale": 1.5, "hr_steps": 4}
    assert "hires pass 768x1152, 4 steps" in readout_text("txt2img", sd15, ON, tab)
    assert "hires pass 1024x1536" in readout_text("txt2img", sd15, ON, {**tab, "hr_resize_x": 1024})
    assert "hires pass 800x1200" in readout_text("txt2img", sd15, ON, {**tab, "hr_resize_y": 1200})
    assert "hires pass 1024x1024" in readout_text("txt2img", sd15, ON, {**tab, "hr_resize_x": 1024, "hr_resize_y": 1024})
    assert "hires" not in readout_text("txt2img", sd15, ON, {**tab, "hires": False})
    assert "hires" not in readout_text("img2img", sd15, ON, tab)  # img2img has no hires pass


def test_the_model_is_read_at_call_time(sd15, ldm_unet):
    loaded = [None]
    tab = {"width": 1024, "height": 1024}
    assert "no model is loaded yet" in readout_text("txt2img", lambda: loaded[0], ON, tab)
    assert readout_text("txt2img", lambda: loaded[0], ON, tab, fallback="hint") == "hint"
    loaded[0] = sd15()
    assert "**Resolved for SD1/SD2**" in readout_text("txt2img", lambda: loaded[0], ON, tab)
    loaded[0] = ModelInfo(inspect_unet(ldm_unet("sdxl")), "sd_xl_base_1.0")
    assert "**Resolved for SDXL**" in readout_text("txt2img", lambda: loaded[0], ON, tab)

    def refiner():
        raise UnsupportedModelError("this looks like the SDXL refiner")

    assert readout_text("txt2img", refiner, ON, tab) == "Resolved schedule: this looks like the SDXL refiner"


def test_bad_values_are_named_and_nothing_raises(sd15):
    t1 = fields.names().index("t1")
    bad = ON[:t1] + ["7"] + ON[t1 + 1:]
    assert "t1 must be from 0 to 1" in readout_text("txt2img", sd15, bad, {})
    assert "first pass 512x512, 20 steps" in readout_text("txt2img", sd15, ON, {"width": "abc", "steps": None})

    def broken():
        raise RuntimeError("half-loaded model")

    assert readout_text("txt2img", broken, ON, {}) == "Resolved schedule: not available for this model."


def test_token_merging_from_settings_is_named_before_generate(sd15):
    """Settings -> Optimizations -> Token merging merges the top-level tokens MSW-MSA windows (SD1/SD2): the readout
    says MSW-MSA is left to it, per pass with the pass's own ratio (the hires ratio on the hires pass)."""
    page = {"width": 1024, "height": 1024, "steps": 20, "hires": True, "hr_scale": 1.5, "hr_steps": 10}
    ratios = {False: OtherTools(token_merging=0.5), True: OtherTools()}.get
    text = readout_text("txt2img", sd15, ON, page, settings=ratios)
    first, hires = text.splitlines()[1:]
    assert "MSW-MSA left to Token merging (ratio 0.5, Settings)" in first
    assert "MSW-MSA on" in hires and "Token merging" not in hires
    assert "Token merging" not in readout_text("txt2img", sd15, ON, page, settings=lambda hires: OtherTools())
