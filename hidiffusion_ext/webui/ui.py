"""The accordion in the txt2img and img2img tabs, and its Settings-page defaults, both built from the field table.

Uses only controls that exist in both Gradio 3.41 (A1111) and Gradio 4.40 behind Forge's shims: Checkbox,
Dropdown, Radio, Textbox, Markdown, Row, and the webui's own InputAccordion. Tooltips go through the webui's
``tooltip=`` keyword (both hosts pop it in modules/gradio_extensions and show it as the element's title).
"""

from __future__ import annotations

import logging
from itertools import groupby

from . import fields, infotext, page_state
from .readout import Readout

AUTO_TEXT = (
    "**Auto** follows the reference: SD1/SD2 below 2048 px T1 0.4; at 2048 px and up T1 0.7 with T2 0.3. "
    "SDXL below 4096 px T1 0.4 with the aggressive phase; at 4096 px T1 0.7, T2 0.3. Turbo T1 0.5. "
    "The console prints the schedule each pass really ran."
)
READOUT_HINT = "The resolved schedule for this tab's size and steps appears here once a model is loaded."
SETTINGS_SECTION = ("hidiffusion", "HiDiffusion")
log = logging.getLogger("hidiffusion")


def readout_of(script, is_img2img: bool) -> Readout:
    """The tab's readout wiring, created by whichever comes first: ui() or a captured size/steps slider."""
    readout = getattr(script, "_hidiffusion_readout", None)
    if readout is None:
        readout = script._hidiffusion_readout = Readout(is_img2img)
    return readout


def capture(script, component, kwargs: dict) -> None:
    """Script.after_component: remember the tab's size, steps and hires controls for the readout."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    readout_of(script, bool(getattr(script, "is_img2img", False))).capture(component, elem_id)


def option_key(name: str) -> str:
    return f"hidiffusion_default_{name}"


def default(field: fields.Field):
    """The control's initial value: the user's default from Settings -> HiDiffusion, else the built-in one."""
    value = field.default
    if field.settings_page:
        try:
            from modules import shared

            value = getattr(shared.opts, option_key(field.name), field.default)
        except Exception:  # options not loaded yet (API start-up) or not a webui
            pass
    return infotext.control_value(field, value)


def _control(gr, field: fields.Field, value, elem_id: str):
    common = dict(value=value, label=field.label, elem_id=elem_id, tooltip=field.tooltip)
    kind = field.widget_kind
    if kind == "checkbox":
        return gr.Checkbox(**common)
    if kind == "textbox":
        return gr.Textbox(placeholder="auto", **common)
    if kind == "radio":
        return gr.Radio(choices=list(field.choices), **common)
    return gr.Dropdown(choices=list(field.choices), **common)


def build(script, is_img2img: bool) -> list:
    import gradio as gr
    from modules.ui_components import InputAccordion

    table = fields.FIELDS
    values = [default(f) for f in table]
    readout = readout_of(script, is_img2img)
    controls = {}
    switch = next(f for f in table if f.widget_kind == "accordion")
    with InputAccordion(values[table.index(switch)], label=switch.label, elem_id=script.elem_id(switch.name)) as enabled:
        enabled.webui_tooltip = switch.tooltip  # on the hidden checkbox: javascript/hidiffusion.js shows it on the header
        controls[switch.name] = enabled
        gr.Markdown(AUTO_TEXT, elem_id=script.elem_id("auto_text"))
        # A callable value is re-run on every page load (Gradio 3 and 4), after the model has loaded. A second
        # ui() call (the API's, for default arguments) is never shown: plain text there.
        initial = READOUT_HINT if readout.attached else (
            lambda: readout.on_page_load(READOUT_HINT, [default(f) for f in table]))
        resolved = gr.Markdown(initial, elem_id=script.elem_id("resolved"))
        strip = gr.HTML("" if readout.attached else (
            lambda: readout.on_page_load("", [default(f) for f in table], part="strip")),
            elem_id=script.elem_id("strip"))
        # Filled by javascript/hidiffusion.js (page_state.py); hidden by style.css, not visible=False, which
        # Gradio 4 would leave out of the page.
        state = gr.Textbox("", show_label=False, elem_id=script.elem_id("page_state"),
                           elem_classes=["hidiffusion-page-state"])
        state.do_not_save_to_config = True
        rows = [f for f in table if f is not switch]
        for _, row in groupby(sorted(rows, key=lambda f: f.row), key=lambda f: f.row):
            with gr.Row():
                for f in row:
                    controls[f.name] = _control(gr, f, values[table.index(f)], script.elem_id(f.name))
    ordered = [controls[f.name] for f in table]
    for control, f in zip(ordered, table):
        _follow_settings(control, f)
    readout.attach(resolved, ordered, strip, state)
    # A callable per key: a paste without the key resets the control (the accordion turns off).
    script.infotext_fields = [(control, _paste(f)) for control, f in zip(ordered, table)]
    script.paste_field_names = [f.infotext for f in table]
    return ordered


def _follow_settings(control, field: fields.Field) -> None:
    """Each page load sets the control to the Settings default of that moment, so a changed default shows in a fresh
    page. The webui's ui-config.json would pin the value it saw at the first start over it: keep the control out."""
    control.do_not_save_to_config = True
    if getattr(control, "accordion", None) is not None:  # InputAccordion: its open state is saved separately
        control.accordion.do_not_save_to_config = True
    if field.settings_page:
        try:  # what a callable value does (Gradio 3 and 4); the InputAccordion also opens with its value
            control.attach_load_event(lambda: default(field), None)
        except Exception as error:  # an older Gradio: the built value stays (Settings needs a UI reload)
            log.debug("HiDiffusion: %s does not follow Settings on page load: %s", field.name, error)


def _paste(field: fields.Field):
    def read(params):
        try:
            return infotext.field_value(params, field.name)
        except ValueError:
            return infotext.control_value(field, field.default)

    return read


def on_app_started(_demo, app) -> None:
    """The readout's refresh: the version route the page polls, bumped by the Settings it reads (page_state.py)."""
    from modules import shared

    page_state.register(app)
    page_state.watch_settings(shared.opts)


def register_settings() -> None:
    import gradio as gr
    from modules import shared

    components = {"checkbox": gr.Checkbox, "dropdown": gr.Dropdown, "radio": gr.Radio, "accordion": gr.Checkbox,
                  "textbox": gr.Textbox}
    for f in fields.FIELDS:
        if not f.settings_page:
            continue
        args = {"choices": list(f.choices)} if f.choices else {}
        info = shared.OptionInfo(f.default, f"Default: {f.label}", components[f.widget_kind], args, section=SETTINGS_SECTION)
        shared.opts.add_option(option_key(f.name), info.info(f.tooltip))
