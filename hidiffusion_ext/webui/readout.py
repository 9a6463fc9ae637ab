"""The live "resolved schedule" line under the controls, computed from the page's current values.

One pure function (``readout_text``) and one event handler: every input the text depends on (our controls and
the tab's size, steps, hires and denoising fields) triggers it with ALL of them as inputs, so whichever event
the server handles last carries every current value. Nothing is kept on the server: two browsers on one
webui each get their own text, and the order events arrive in does not matter.

Gradio 3.41 (A1111) drops an event while the same listener is still pending (typing "768" can send only "7"):
each listener is followed by a ``.then`` of the same function, which reads the values again when the first
one returns, and sliders also fire on release (drag end, number box blur). Gradio 4 (Forge) re-sends the last
change itself. Display only: any failure here is logged and never breaks the UI.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence

from ..core.unet_map import UnsupportedModelError
from . import fields, host_model
from .arguments import HiDiffusionArgumentError, parse
from .other_tools import OtherTools, accordion_tool, page_tools, settings_tools
from .page_state import PAGE_STATE, RESIZE_PREVIEW, page_state, resize_by_size
from .tab_preview import Preview, TabValues, preview

log = logging.getLogger("hidiffusion")

# elem_id after "txt2img_"/"img2img_" -> TabValues field. Hires fix is an InputAccordion, whose checkbox is
# "txt2img_hr-checkbox". txt2img_denoising_strength is the hires one: the hires pass runs its full hires
# steps (A1111 passes them explicitly), so it does not change the count. img2img's "Resize by" preview is the
# webui's own "resize: from AxB to CxD" text, which it updates when the image or the scale changes.
TAB_FIELDS = {
    "txt2img": {"width": "width", "height": "height", "steps": "steps", "hr-checkbox": "hires", "hr_scale": "hr_scale",
                "hr_resize_x": "hr_resize_x", "hr_resize_y": "hr_resize_y", "hires_steps": "hr_steps"},
    "img2img": {"width": "width", "height": "height", "steps": "steps", "denoising_strength": "denoising",
                "scale_resolution_preview": RESIZE_PREVIEW},
}
NO_MODEL = object()  # readout_text(): no model is loaded and the caller wants ``fallback`` for that


def loaded_model():
    """The loaded model without triggering a load (``shared.sd_model`` would load one on first access).

    Raises UnsupportedModelError for a model HiDiffusion does not apply to.
    """
    try:
        from modules import sd_models
    except ImportError:
        return None
    return host_model.model_info(getattr(sd_models.model_data, "sd_model", None))


def tab_values(tab: str, values: Mapping[str, Any]) -> TabValues:
    """The tab's fields from {TabValues field: UI value}; a missing or unreadable one keeps its default.
    With img2img's Resize by tab selected (the page state), the size is the image's times the scale."""
    result = TabValues(denoising=0.75 if tab == "img2img" else None)
    for name, value in values.items():
        if value is None or value == "" or not hasattr(result, name):
            continue
        try:
            setattr(result, name, bool(value) if name == "hires" else float(value))
        except (TypeError, ValueError):
            pass
    if tab == "img2img" and page_state(values.get(PAGE_STATE)).get("resize") == "by":
        size = resize_by_size(values.get(RESIZE_PREVIEW))
        if size is None:
            result.note = "Resize by: no image loaded, Width/Height shown"
        else:
            result.width, result.height = size
            result.note = "Resize by: the image's size times the scale"
    return result


def readout_view(tab: str, model_source: Callable[[], Any], controls: Sequence, values: Mapping[str, Any],
                 fallback: Optional[str] = None, settings: Optional[Callable[[bool], OtherTools]] = None) -> Preview:
    """The readout for these values: ``controls`` in fields.FIELDS order, ``values`` the tab's fields by name (and
    the other tools' accordions, ``tool:<name>``).

    The model and the Settings (``settings(hires)``: Token merging, HyperTile) are read at call time: they change
    without any event on this tab. ``fallback`` replaces the "no model loaded" text (the page-load hint while the
    webui is still starting).
    """
    try:
        args = parse([{name: value for name, value in zip(fields.names(), controls) if value not in (None, "")}])
        model = model_source()
        if model is None and fallback is not None:
            return Preview(fallback)
        settings = settings or (lambda hires: settings_tools(tab, hires))
        ticked = page_tools(values)
        return preview(args, model, tab_values(tab, values), lambda hires: replace(settings(hires), **ticked))
    except (HiDiffusionArgumentError, UnsupportedModelError) as error:
        return Preview(f"Resolved schedule: {error}")
    except Exception as error:  # display only: never an error popup for a slider move
        log.debug("HiDiffusion: readout failed: %s", error)
        return Preview("Resolved schedule: not available for this model.")


def readout_text(*args, **kwargs) -> str:
    """The readout line alone (what screen readers and tests read): readout_view's text."""
    return readout_view(*args, **kwargs).text


class Readout:
    """One per tab's Script instance: which components feed the readout, never their values."""

    def __init__(self, is_img2img: bool, model_source=loaded_model):
        self.tab = "img2img" if is_img2img else "txt2img"
        self.controls = []  # our controls, in fields.FIELDS order, once ui() built them
        self.markdown = None
        self.strip = None  # the schedule strip (gr.HTML), the second output
        self.sources = []  # (component, value name): the tab's fields, other tools' checkboxes, our page state
        self.wiring = 0  # how many times the inputs were wired; only the latest listeners answer
        self._model_source = model_source

    @property
    def attached(self) -> bool:
        return self.markdown is not None

    def capture(self, component, elem_id) -> None:
        prefix = self.tab + "_"
        if isinstance(elem_id, str) and elem_id.startswith(prefix):
            name = TAB_FIELDS[self.tab].get(elem_id[len(prefix):])
        else:
            name = accordion_tool(component)
        self.add_source(component, name)

    def add_source(self, component, name: Optional[str]) -> None:
        if name is None or name in (n for _, n in self.sources):
            return
        self.sources.append((component, name))
        if self.attached:  # built after our accordion (a reordered UI, a later script): wire again, now with it
            self._wire()

    def attach(self, markdown, controls, strip, page_state) -> None:
        """Called by ui() once our controls exist. A second ui() call (the API's, for default arguments, in
        a Blocks that is never shown) leaves the tab's readout as it is."""
        if self.attached:
            return
        self.markdown, self.controls, self.strip = markdown, list(controls), strip
        self.sources.append((page_state, PAGE_STATE))
        self._wire()

    def view(self, control_values: Sequence, source_values: Sequence, fallback: Optional[str] = None) -> Preview:
        """The readout for our controls' values and the captured sources' values (in ``sources`` order)."""
        named = {name: value for (_, name), value in zip(self.sources, source_values)}
        return readout_view(self.tab, self._model_source, control_values, named, fallback)

    def text(self, control_values: Sequence, source_values: Sequence, fallback: Optional[str] = None) -> str:
        return self.view(control_values, source_values, fallback).text

    def on_page_load(self, fallback: str, control_values: Optional[Sequence] = None, part: str = "text") -> str:
        """A (re)loaded page shows the tab's fields as built and our controls at ``control_values`` (the Settings
        defaults they load with; as built when not given): the text (or the ``part="strip"``) for those values."""
        if control_values is None:
            control_values = [_built(c) for c in self.controls]
        shown = self.view(control_values, [_built(c) for c, _ in self.sources], fallback)
        return shown.strip if part == "strip" else shown.text

    def inputs(self) -> list:
        return list(self.controls) + [component for component, _ in self.sources]

    def _handler(self, wiring: int, count: int):
        def on_change(*values):
            if wiring != self.wiring:  # a later-built field wired every input again: those listeners answer
                return _unchanged(), _unchanged()
            n = len(self.controls)
            shown = self.view(values[:n], values[n:count])
            return shown.text, shown.strip

        return on_change

    def _wire(self) -> None:
        """Every input gets the same handler with every input: .change, then .then, and .release on sliders."""
        self.wiring += 1
        inputs = self.inputs()
        handler = self._handler(self.wiring, len(inputs))
        listen = dict(fn=handler, inputs=inputs, outputs=[self.markdown, self.strip], show_progress="hidden")
        for component in inputs:
            try:
                component.change(**listen).then(**listen)
                if hasattr(component, "release"):
                    component.release(**listen)
            except Exception as error:  # a component without these events, or a Blocks that is gone
                log.debug("HiDiffusion: readout not wired to %r: %s", component, error)


def _built(component):
    """The value a component was built with: what a freshly loaded page shows."""
    return getattr(component, "value", None)


def _unchanged():
    import gradio as gr

    return gr.update()
