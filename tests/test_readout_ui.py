"""The readout wired into a real Gradio 3.41 tab (A1111's): one handler, every input, no server-side values."""

from types import SimpleNamespace

import fake_webui
import pytest

from hidiffusion_ext.webui import fields

gr = pytest.importorskip("gradio")
T1 = fields.names().index("t1")


def readout_listeners(blocks, readout):
    """{(trigger, target id): (dependency index, dependency, fn)} of the listeners that write the readout."""
    found = {}
    for index, (dependency, block_fn) in enumerate(zip(blocks.dependencies, blocks.fns)):
        if dependency["outputs"] == [readout.markdown._id, readout.strip._id] and dependency["trigger"] != "load":
            found.setdefault((dependency["trigger"], dependency["targets"][0]), []).append(
                (index, dependency, _text_only(block_fn.fn)))
    return found


def _text_only(fn):
    """The handler's readout line (it returns the line and the strip); unchanged outputs pass through."""
    def text(*values):
        result = fn(*values)
        return result[0] if isinstance(result, tuple) and isinstance(result[0], str) else result

    text.handler = fn
    return text


def latest(listeners, trigger, component):
    return listeners[(trigger, component._id)][-1][2]


def txt2img_tab(script, steps_after_accordion=True):
    """A1111 1.10's txt2img fields that the readout follows; steps is built after the accordion (a reordered
    UI) unless told otherwise. Returns (blocks, components by name, our controls)."""
    from modules.ui_components import InputAccordion

    made = {}

    def slider(name, value):
        made[name] = gr.Slider(value=value, minimum=0, maximum=2048, elem_id=f"txt2img_{name}")
        script.after_component(made[name], elem_id=made[name].elem_id)

    with gr.Blocks() as blocks:
        slider("width", 512)
        slider("height", 512)
        if not steps_after_accordion:
            slider("steps", 20)
        with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as made["hr"]:
            slider("hires_steps", 0)
            slider("hr_scale", 2.0)
            slider("hr_resize_x", 0)
            slider("hr_resize_y", 0)
        script.after_component(made["hr"], elem_id=made["hr"].elem_id)  # the hook sees the checkbox's own kwargs
        controls = script.ui(False)
        if steps_after_accordion:
            slider("steps", 20)
    return blocks, made, controls


@pytest.fixture
def module():
    return fake_webui.load_script_module()


@pytest.fixture
def loaded(module, ldm_unet):
    """Sets (and finally clears) the webui's loaded model: an SD1.5-shaped ldm U-Net, or ``kind``."""
    from modules import sd_models

    def load(kind="sd1"):
        sd_models.model_data.sd_model = SimpleNamespace(model=SimpleNamespace(diffusion_model=ldm_unet(kind)))

    sd_models.model_data.sd_model = None
    yield load
    sd_models.model_data.sd_model = None


def values_for(readout, made, controls, **changed):
    """The input values a browser sends: every input's current value, ``changed`` by field or control name."""
    by_component = {id(c): c.value for c in readout.inputs()}
    for name, value in changed.items():
        component = made.get(name) or controls[fields.names().index(name)]
        by_component[id(component)] = value
    return [by_component[id(c)] for c in readout.inputs()]


def test_every_input_triggers_one_handler_with_every_input(module, loaded):
    script = module.HiDiffusionScript()
    blocks, made, controls = txt2img_tab(script)
    readout = script._hidiffusion_readout
    inputs = [c._id for c in controls] + [made[n]._id for n in
                                          ("width", "height", "hires_steps", "hr_scale", "hr_resize_x", "hr_resize_y", "hr")]
    page_state = readout.sources[-2][0]  # ours, filled by the page's script
    inputs.append(page_state._id)
    assert [c._id for c in readout.inputs()] == inputs + [made["steps"]._id]  # steps came after ui(): wired again
    listeners = readout_listeners(blocks, readout)
    for component in readout.inputs():
        (_, change, fn), = [x for x in listeners[("change", component._id)] if len(x[1]["inputs"]) == len(inputs) + 1]
        (_, then, then_fn), = [x for x in listeners[("then", component._id)] if x[1]["trigger_after"] == _index(blocks, change)]
        assert change["inputs"] == then["inputs"] == [c._id for c in readout.inputs()]
        assert then_fn.handler is fn.handler
        if isinstance(component, gr.Slider):  # drag end and number-box blur
            assert latest(listeners, "release", component).handler is fn.handler
    first_wiring = listeners[("change", made["width"]._id)][0][2]
    assert first_wiring(*values_for(readout, made, controls)[:-1]) == (gr.update(), gr.update())  # without steps: silent

    on_change = latest(listeners, "change", made["width"])
    assert on_change(*values_for(readout, made, controls)).startswith("Resolved schedule: no model is loaded yet")
    loaded()
    text = on_change(*values_for(readout, made, controls, width=768, height=768, steps=3, enabled=True))
    assert text.splitlines()[:2] == [
        "**Resolved for SD1/SD2**",
        "- first pass 768x768, 3 steps: RAU-Net sd15 small: T1 0.4, T2 0; RAD steps 0-0, pooling steps none of 3; "
        "MSW-MSA on; ≈ −58% U-Net compute"]
    hires = on_change(*values_for(readout, made, controls, width=1024, hr=True, steps=10))
    assert "(HiDiffusion is off)" in hires and "hires pass 2048x1024, 10 steps" in hires
    resized = on_change(*values_for(readout, made, controls, hr=True, hr_resize_x=1024, hires_steps=4))
    assert "hires pass 1024x1024, 4 steps" in resized
    assert "T1 0.7" in on_change(*values_for(readout, made, controls, width=1024, t1="0.7"))
    assert "t1 must be from 0 to 1" in on_change(*values_for(readout, made, controls, t1="7"))
    loaded("refiner")
    assert "looks like the SDXL refiner" in on_change(*values_for(readout, made, controls, width=1024))


def test_page_load_shows_the_built_values_and_the_api_call_changes_nothing(module, loaded):
    script = module.HiDiffusionScript()
    blocks, made, controls = txt2img_tab(script, steps_after_accordion=False)
    readout = script._hidiffusion_readout
    assert readout.wiring == 1  # every field existed when ui() ran: wired once
    on_load = next(fn.fn for d, fn in zip(blocks.dependencies, blocks.fns)
                   if d["trigger"] == "load" and d["outputs"] == [readout.markdown._id])
    strip_on_load = next(fn.fn for d, fn in zip(blocks.dependencies, blocks.fns)
                         if d["trigger"] == "load" and d["outputs"] == [readout.strip._id])
    assert strip_on_load() == ""  # nothing to draw before a model
    assert on_load().startswith("The resolved schedule")  # the hint while the webui loads its model
    loaded()
    assert on_load().splitlines() == [
        "**Resolved for SD1/SD2** (HiDiffusion is off)",
        "- first pass 512x512, 20 steps: RAU-Net off (auto: not above 1.5x the native area); MSW-MSA on; "
        "≈ −41% U-Net compute"]
    assert strip_on_load().count("hidiffusion-strip-stock") == 20 + 1  # 20 steps, and the legend's key
    count = len(blocks.dependencies)
    with gr.Blocks():
        script.ui(False)  # the API's second call, for default arguments
    assert script._hidiffusion_readout is readout and readout.controls == controls and readout.wiring == 1
    assert len(blocks.dependencies) == count and on_load().startswith("**Resolved for SD1/SD2**")


def test_img2img_follows_denoising_and_has_no_hires(module, loaded):
    script = module.HiDiffusionScript()
    script.is_img2img = True
    with gr.Blocks() as blocks:
        made = {name: gr.Slider(value=value, elem_id=f"img2img_{name}") for name, value in
                (("width", 512), ("height", 512), ("steps", 20), ("denoising_strength", 0.75))}
        for component in made.values():
            script.after_component(component, elem_id=component.elem_id)
        hr = gr.Checkbox(False, elem_id="txt2img_hr-checkbox")  # another tab's field: not followed
        script.after_component(hr, elem_id=hr.elem_id)
        controls = script.ui(True)
    readout = script._hidiffusion_readout
    assert [field for _, field in readout.sources] == ["width", "height", "steps", "denoising", "page_state"]
    loaded()
    on_change = latest(readout_listeners(blocks, readout), "change", made["denoising_strength"])
    assert "first pass 512x512, 11 steps" in on_change(*values_for(readout, made, controls, denoising_strength=0.5))
    assert "first pass 512x512, 16 steps" in on_change(*values_for(readout, made, controls))


def _index(blocks, dependency):
    return next(i for i, d in enumerate(blocks.dependencies) if d is dependency)


def test_a_fresh_page_loads_the_settings_defaults_of_that_moment(module, loaded, monkeypatch):
    """A1111's ui-config.json pinned the values it saw at the first start, so a Settings default never reached the
    page: our controls stay out of it, and each page load sets them (and the readout) from Settings."""
    from modules import shared

    script = module.HiDiffusionScript()
    blocks, made, controls = txt2img_tab(script, steps_after_accordion=False)
    readout = script._hidiffusion_readout
    loads = {d["outputs"][0]: fn.fn for d, fn in zip(blocks.dependencies, blocks.fns) if d["trigger"] == "load"}
    page_fields = [f for f in fields.FIELDS if f.settings_page]
    assert sorted(loads) == sorted([readout.markdown._id, readout.strip._id] +
                                   [controls[fields.FIELDS.index(f)]._id for f in page_fields])
    assert all(c.do_not_save_to_config for c in controls) and controls[0].accordion.do_not_save_to_config
    loaded()
    mswmsa = controls[fields.names().index("mswmsa")]
    assert loads[mswmsa._id]() is True and "MSW-MSA on" in loads[readout.markdown._id]()
    monkeypatch.setitem(shared.opts.data, "hidiffusion_default_mswmsa", False)
    monkeypatch.setitem(shared.opts.data, "hidiffusion_default_enabled", True)
    assert loads[mswmsa._id]() is False and loads[controls[0]._id]() is True
    assert loads[readout.markdown._id]().splitlines() == [
        "**Resolved for SD1/SD2**",
        "- first pass 512x512, 20 steps: RAU-Net off (auto: not above 1.5x the native area); MSW-MSA off; "
        "≈ no U-Net compute saved"]
