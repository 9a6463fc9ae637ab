"""The field table is the only place a control is declared: every consumer follows it, for every row, and a new row
reaches the UI, the API, PNG info, X/Y/Z, the Settings page and the tooltips without another edit."""

from types import SimpleNamespace

import fake_webui
import pytest

from hidiffusion_ext.webui import fields, infotext, xyz_axes
from hidiffusion_ext.webui.arguments import ScriptArgs, parse
from hidiffusion_ext.webui.fields import CHOICE, RATIO, SWITCH, Field
from hidiffusion_ext.webui.script_hooks import arguments

gr = pytest.importorskip("gradio")

NEW_ROW = Field("window_blend", CHOICE, "off", "Window blend", "A control added by one row.", "HiDiffusion window blend",
                choices=("off", "soft"), axis="Window blend", row=3)


def other_value(field: Field):
    """A valid value that is not the default."""
    if field.kind == SWITCH:
        return not field.default
    if field.kind == RATIO:
        return 0.25
    return next(c for c in field.choices if c != field.default)


def build_ui(script_module, img2img=False):
    script = script_module.HiDiffusionScript()
    script.is_img2img = img2img
    with gr.Blocks():
        controls = script.ui(img2img)
    return script, controls


def settings_page(script_module):
    from modules import script_callbacks, shared

    shared.opts.data_labels.clear()
    script_callbacks.ui_settings_callback()
    assert not script_callbacks.errors
    return shared.opts.data_labels


def xyz_options():
    class AxisOption:
        def __init__(self, label, type, apply, choices=None, **kwargs):
            self.label, self.type, self.apply, self.choices = label, type, apply, choices

    xyz = SimpleNamespace(AxisOption=AxisOption, axis_options=[])
    xyz_axes.register([SimpleNamespace(script_class=type("S", (), {"__module__": "xyz_grid.py"}), module=xyz)])
    return {option.label: option for option in xyz.axis_options}


def check_every_consumer(script_module):
    """Each row of the table is in the UI, the API, PNG info, X/Y/Z, Settings and tooltips, in table order."""
    table = fields.FIELDS
    script, controls = build_ui(script_module)
    assert len(controls) == len(table)
    labels = settings_page(script_module)
    axes = xyz_options()
    for index, (field, control) in enumerate(zip(table, controls)):
        # UI: label, id, default value and tooltip come from the row
        accordion = "-checkbox" if field.widget_kind == "accordion" else ""  # an InputAccordion is its hidden checkbox
        assert control.label == field.label and control.elem_id == f"script_txt2img_hidiffusion_{field.name}{accordion}"
        assert control.value == infotext.control_value(field, field.default)
        assert control.get_config().get("webui_tooltip") == field.tooltip
        # API: positional slot = row order; named field; validation
        value = other_value(field)
        positional = [f.default for f in table]
        positional[index] = value
        assert getattr(parse(positional), field.name) == value
        assert getattr(parse([{field.name: value}]), field.name) == value
        # PNG info: written when not the default (or always for switches), pasted back through the control's reader
        written = infotext.to_infotext(ScriptArgs(**{field.name: value}))
        assert written[field.infotext] == value
        pasted = [read({k: str(v) for k, v in written.items()}) for _, read in script.infotext_fields]
        assert getattr(parse(pasted), field.name) == value
        assert field.infotext in script.paste_field_names
        # X/Y/Z: an axis when the row declares one, and its value wins over the UI's
        if field.axis:
            option = axes[xyz_axes.LABEL_PREFIX + field.axis]
            p = SimpleNamespace()
            option.apply(p, str(value) if field.kind == SWITCH else value, [])
            assert getattr(arguments(p, [f.default for f in table]), field.name) == value
        else:
            assert not any(label.endswith(field.label) for label in axes)
        # Settings page: a default per row that asks for one, with the tooltip as its help
        key = f"hidiffusion_default_{field.name}"
        assert (key in labels) == field.settings_page
        if field.settings_page:
            assert labels[key].default == field.default and field.tooltip in labels[key].comment_after
    assert len(axes) == sum(1 for f in table if f.axis)


def test_every_field_reaches_every_consumer():
    check_every_consumer(fake_webui.load_script_module())


def test_a_new_control_is_one_row(monkeypatch):
    monkeypatch.setattr(fields, "FIELDS", fields.FIELDS + (NEW_ROW,))
    module = fake_webui.load_script_module()
    check_every_consumer(module)
    assert parse([]).window_blend == "off" and ScriptArgs(window_blend="soft").window_blend == "soft"
    script, _ = build_ui(module)
    assert len(script._hidiffusion_readout.controls) == len(fields.FIELDS)  # the readout follows it too
    assert "HiDiffusion window blend" in fields.infotext_keys()  # cleared before each image


def test_bad_value_for_any_field_names_it():
    from hidiffusion_ext.webui.arguments import HiDiffusionArgumentError

    for field in fields.FIELDS:
        with pytest.raises(HiDiffusionArgumentError, match=field.name):
            parse([{field.name: "not a valid value"}])
