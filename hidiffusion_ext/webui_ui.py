"""The accordion in the txt2img and img2img tabs, and its Settings-page defaults.

Uses only controls that exist in both Gradio 3.41 (A1111) and Gradio 4.40 behind Forge's shims:
Checkbox, Dropdown, Radio, Textbox, Markdown, Row, and the webui's own InputAccordion.
"""

from __future__ import annotations

from . import infotext
from .script_args import AGGRESSIVE, APPLY_TO, DEFAULTS, NAMES, ODD_WINDOWS, PRESETS
from .webui_readout import Readout

LABELS = {
    "enabled": "HiDiffusion",
    "raunet": "RAU-Net",
    "mswmsa": "MSW-MSA",
    "preset": "HiDiffusion preset",
    "t1": "HiDiffusion T1 (empty = auto)",
    "t2": "HiDiffusion T2 (empty = auto)",
    "aggressive": "SDXL aggressive phase",
    "apply_to": "Apply to",
    "odd_windows": "MSW-MSA at odd sizes",
}
HELP = {
    "enabled": "Generate above the model's trained resolution without duplicated subjects (arXiv 2311.17528).",
    "raunet": "Resolution-aware U-Net: the deep blocks run at the trained size for the first steps.",
    "mswmsa": "Top-level self-attention in 4 shifted windows: faster at large sizes, same quality.",
    "preset": "Auto reads the model family from the U-Net; SDXL Turbo needs choosing unless its name says turbo.",
    "t1": "Fraction of the steps for RAU-Net's main phase (SD1/SD2: dilated downsample; SDXL: pooling).",
    "t2": "Fraction of the steps for the second phase (SD1/SD2: pooling; SDXL: dilated downsample).",
    "aggressive": "SDXL below 4096 px: dilated downsample for the first 16% of steps, then pooling (auto = on, "
                  "off for inpainting and Playground models).",
    "apply_to": "auto: MSW-MSA on every pass, RAU-Net only on passes above 1.5x the model's native area.",
    "odd_windows": "bicubic resizes odd grids as the reference does; global keeps plain attention there.",
}
AUTO_TEXT = (
    "**Auto** follows the reference: SD1/SD2 below 2048 px T1 0.4; at 2048 px and up T1 0.7 with T2 0.3. "
    "SDXL below 4096 px T1 0.4 with the aggressive phase; at 4096 px T1 0.7, T2 0.3. Turbo T1 0.5. "
    "The console prints the schedule each pass really ran."
)


READOUT_HINT = "The resolved schedule for this tab's size and steps appears here once a model is loaded."


def readout_of(script, is_img2img: bool) -> Readout:
    """The tab's live readout, created by whichever comes first: ui() or a captured size/steps slider."""
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


def default(name: str):
    """The user's default from Settings → HiDiffusion, else the built-in one."""
    try:
        from modules import shared

        return getattr(shared.opts, option_key(name), DEFAULTS[name])
    except Exception:  # options not loaded yet (API start-up) or not a webui
        return DEFAULTS[name]


def build(script, is_img2img: bool) -> list:
    import gradio as gr
    from modules.ui_components import InputAccordion

    def value(name):
        v = default(name)
        return "" if name in ("t1", "t2") and v is None else v

    def eid(name):
        return script.elem_id(name)

    readout = readout_of(script, is_img2img)
    readout.start(value(name) for name in NAMES)
    with InputAccordion(value("enabled"), label=LABELS["enabled"], elem_id=eid("enabled")) as enabled:
        gr.Markdown(AUTO_TEXT, elem_id=eid("auto_text"))
        # A callable value is re-run on every page load (Gradio 3 and 4), after the model has loaded. A second
        # ui() call (the API's, for default arguments) must not reset the tab's readout: plain text there.
        initial = READOUT_HINT if readout.attached else (lambda: readout.on_page_load(READOUT_HINT))
        resolved = gr.Markdown(initial, elem_id=eid("resolved"))
        with gr.Row():
            raunet = gr.Checkbox(value=value("raunet"), label=LABELS["raunet"], elem_id=eid("raunet"))
            mswmsa = gr.Checkbox(value=value("mswmsa"), label=LABELS["mswmsa"], elem_id=eid("mswmsa"))
            preset = gr.Dropdown(choices=list(PRESETS), value=value("preset"), label=LABELS["preset"], elem_id=eid("preset"))
        with gr.Row():
            t1 = gr.Textbox(value=value("t1"), label=LABELS["t1"], placeholder="auto", elem_id=eid("t1"))
            t2 = gr.Textbox(value=value("t2"), label=LABELS["t2"], placeholder="auto", elem_id=eid("t2"))
            aggressive = gr.Radio(choices=list(AGGRESSIVE), value=value("aggressive"), label=LABELS["aggressive"],
                                  elem_id=eid("aggressive"))
        with gr.Row():
            apply_to = gr.Dropdown(choices=list(APPLY_TO), value=value("apply_to"), label=LABELS["apply_to"],
                                   elem_id=eid("apply_to"))
            odd = gr.Radio(choices=list(ODD_WINDOWS), value=value("odd_windows"), label=LABELS["odd_windows"],
                           elem_id=eid("odd_windows"))
    controls = [enabled, raunet, mswmsa, preset, t1, t2, aggressive, apply_to, odd]
    assert len(controls) == len(NAMES)
    readout.attach(resolved, controls)
    # A callable per key: a paste without the key resets the control (the accordion turns off).
    script.infotext_fields = [(c, _paste(name)) for c, name in zip(controls, NAMES)]
    script.paste_field_names = list(infotext.KEYS.values())
    return controls


def _paste(name: str):
    def read(params):
        try:
            return infotext.field_value(params, name)
        except ValueError:
            return DEFAULTS[name] if name not in ("t1", "t2") else ""

    return read


def register_settings() -> None:
    import gradio as gr
    from modules import shared

    section = ("hidiffusion", "HiDiffusion")
    components = {
        "enabled": (gr.Checkbox, {}), "raunet": (gr.Checkbox, {}), "mswmsa": (gr.Checkbox, {}),
        "preset": (gr.Dropdown, {"choices": list(PRESETS)}), "aggressive": (gr.Radio, {"choices": list(AGGRESSIVE)}),
        "apply_to": (gr.Dropdown, {"choices": list(APPLY_TO)}), "odd_windows": (gr.Radio, {"choices": list(ODD_WINDOWS)}),
    }
    for name, (component, args) in components.items():
        info = shared.OptionInfo(DEFAULTS[name], f"Default: {LABELS[name]}", component, args, section=section)
        shared.opts.add_option(option_key(name), info.info(HELP[name]))
