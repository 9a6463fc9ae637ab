"""The live "resolved schedule" line under the controls: it follows the tab's size, steps and hires fields.

The tab's sliders may be built before or after the accordion (users can reorder the UI), so each one is
wired when both it and the readout exist. Display only: any failure here is logged and never breaks the UI.
"""

from __future__ import annotations

import logging

from ..core.unet_map import UnsupportedModelError
from . import fields, host_model
from .arguments import HiDiffusionArgumentError, parse
from .tab_preview import TabValues, preview

log = logging.getLogger("hidiffusion")
_UNREAD = object()  # Readout.text(): the model was not read by the caller

# elem_id after "txt2img_"/"img2img_" -> TabValues field. Hires fix is an InputAccordion, whose checkbox is
# "txt2img_hr-checkbox". txt2img_denoising_strength is the hires one: the hires pass runs its full hires
# steps (A1111 passes them explicitly), so it does not change the count.
TAB_FIELDS = {
    "txt2img": {"width": "width", "height": "height", "steps": "steps", "hr-checkbox": "hires", "hr_scale": "hr_scale",
                "hr_resize_x": "hr_resize_x", "hr_resize_y": "hr_resize_y", "hires_steps": "hr_steps"},
    "img2img": {"width": "width", "height": "height", "steps": "steps", "denoising_strength": "denoising"},
}


def loaded_model():
    """The loaded model without triggering a load (``shared.sd_model`` would load one on first access).

    Raises UnsupportedModelError for a model HiDiffusion does not apply to.
    """
    try:
        from modules import sd_models
    except ImportError:
        return None
    return host_model.model_info(getattr(sd_models.model_data, "sd_model", None))


class Readout:
    """One per tab's Script instance: the Markdown component and the values it last saw."""

    def __init__(self, is_img2img: bool, model_source=loaded_model):
        self.tab = "img2img" if is_img2img else "txt2img"
        self.values = self._fresh_values()
        self.controls = [None] * len(fields.FIELDS)
        self.markdown = None
        self.sources = []  # (component, TabValues field), captured from after_component
        self._built_values = {}  # field -> value the component was built with (what a reloaded page shows)
        self._built_controls = list(self.controls)
        self._model_source = model_source

    def _fresh_values(self) -> TabValues:
        return TabValues(denoising=0.75 if self.tab == "img2img" else None)

    def on_page_load(self, fallback: str) -> str:
        """A (re)loaded page shows every control as built: start again from those values."""
        self.values = self._fresh_values()
        for field, value in self._built_values.items():
            self._remember(field, value)
        self.controls = list(self._built_controls)
        return self.initial_text(fallback)

    def capture(self, component, elem_id) -> None:
        prefix = self.tab + "_"
        if not isinstance(elem_id, str) or not elem_id.startswith(prefix):
            return
        field = TAB_FIELDS[self.tab].get(elem_id[len(prefix):])
        if field is None:
            return
        self._built_values[field] = getattr(component, "value", None)
        self._remember(field, self._built_values[field])
        self.sources.append((component, field))
        if self.attached:
            self._wire(component, field)

    @property
    def attached(self) -> bool:
        return self.markdown is not None

    def start(self, control_values) -> None:
        """ui() is about to build the controls with these values (ignored once the tab's readout exists)."""
        if not self.attached:
            self.controls = list(control_values)
            self._built_controls = list(self.controls)

    def attach(self, markdown, controls) -> None:
        """Called by ui() once our controls exist. A second ui() call (the API's, for default arguments, in
        a Blocks that is never shown) leaves the tab's readout as it is."""
        if self.attached:
            return
        self.markdown = markdown
        for index, control in enumerate(controls):
            self._wire(control, index)
        for component, field in self.sources:
            self._wire(component, field)

    def initial_text(self, fallback: str) -> str:
        """At UI build time the model may still be loading: then the hint until the first change."""
        try:
            model = self._model_source()
        except Exception:
            return self.text()  # text() explains
        return self.text(model) if model is not None else fallback

    def text(self, model=_UNREAD) -> str:
        """The line for the current values; ``model`` when the caller has already read it."""
        try:
            args = parse([{name: _ui_value(v) for name, v in zip(fields.names(), self.controls) if v is not None}])
            return preview(args, self._model_source() if model is _UNREAD else model, self.values)
        except (HiDiffusionArgumentError, UnsupportedModelError) as error:
            return f"Resolved schedule: {error}"
        except Exception as error:  # display only: never an error popup for a slider move
            log.debug("HiDiffusion: readout failed: %s", error)
            return "Resolved schedule: not available for this model."

    def update(self, key, value) -> str:
        """One control or tab field changed: remember it and return the new text."""
        if isinstance(key, int):
            self.controls[key] = value
        else:
            self._remember(key, value)
        return self.text()

    def _remember(self, field: str, value) -> None:
        if value is None:
            return
        try:
            setattr(self.values, field, bool(value) if field == "hires" else float(value))
        except (TypeError, ValueError):
            pass

    def _wire(self, component, key) -> None:
        try:
            component.change(fn=lambda value, key=key: self.update(key, value), inputs=[component],
                             outputs=[self.markdown], show_progress="hidden")
        except Exception as error:  # a component without .change, or a Blocks that is gone
            log.debug("HiDiffusion: readout not wired to %r: %s", component, error)


def _ui_value(value):
    return None if value == "" else value
