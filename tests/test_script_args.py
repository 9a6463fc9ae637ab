"""API arguments (positional, named dict, bad values), PNG info round trip, X/Y/Z axes and ui()."""

from types import SimpleNamespace

import fake_webui
import pytest

from hidiffusion_ext.webui import fields, infotext, xyz_axes
from hidiffusion_ext.webui import session as webui_session
from hidiffusion_ext.webui.arguments import HiDiffusionArgumentError, ScriptArgs, parse

NAMES, DEFAULTS = fields.names(), fields.defaults()


def test_positional_in_ui_order_with_defaults_for_missing_tail():
    a = parse([True, False, True, "SDXL", "0.5"])
    assert (a.enabled, a.raunet, a.mswmsa, a.preset, a.t1, a.t2, a.apply_to) == (True, False, True, "SDXL", 0.5, None, "auto")
    assert parse([True] + [None] * 0).as_list()[1:] == [DEFAULTS[n] for n in NAMES[1:]]


def test_named_dict_as_the_single_argument():
    a = parse([{"enabled": True, "raunet": True, "mswmsa": True, "t1": 0.4, "apply_to": "hires pass"}, False, True])
    assert a == ScriptArgs(enabled=True, t1=0.4, apply_to="hires pass")
    assert parse([{"preset": "sdxl_turbo", "aggressive": "OFF"}]).preset == "SDXL Turbo"


@pytest.mark.parametrize("bad, field, allowed", [
    ([{"enabled": True, "foo": 1}], "'foo'", "enabled, raunet"),
    ([{"enabled": "yes"}], "enabled", "true or false"),
    ([{"t1": 1.5}], "t1", "from 0 to 1"),
    ([{"t2": "abc"}], "t2", "number from 0 to 1"),
    ([{"t1": True}], "t1", "number"),
    ([True, True, True, "SD9"], "preset", "Auto, SD1/SD2, SDXL, SDXL Turbo"),
    ([{"apply_to": "sometimes"}], "apply_to", "auto, first pass, hires pass, both"),
    ([{"aggressive": 1}], "aggressive", "auto, on, off"),
    ([{"odd_windows": "skip"}], "odd_windows", "bicubic, global"),
])
def test_bad_values_name_the_field_and_the_allowed_values(bad, field, allowed):
    with pytest.raises(HiDiffusionArgumentError) as error:
        parse(bad)
    assert field in str(error.value) and allowed in str(error.value)
    assert error.value.status_code == 422 and error.value.detail == str(error.value)


def test_bad_value_is_a_quiet_422_in_the_webui_api():
    """The error handling of A1111 1.10's modules/api/api.py (Forge's is the same): a 422 with our detail, and
    an HTTPException, for which it prints no console traceback."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    app, tracebacks = FastAPI(), []

    def handle_exception(request: Request, e: Exception):
        err = {"error": type(e).__name__, "detail": vars(e).get("detail", ""), "body": vars(e).get("body", ""),
               "errors": str(e)}
        if not isinstance(e, HTTPException):  # api.py prints a traceback for everything else
            tracebacks.append(err)
        return JSONResponse(status_code=vars(e).get("status_code", 500), content=jsonable_encoder(err))

    @app.middleware("http")
    async def exception_handling(request, call_next):
        try:
            return await call_next(request)
        except Exception as e:
            return handle_exception(request, e)

    app.add_exception_handler(HTTPException, handle_exception)

    @app.post("/sdapi/v1/txt2img")
    def txt2img(payload: dict):
        parse(payload["alwayson_scripts"]["HiDiffusion"]["args"])
        return {}

    response = TestClient(app).post("/sdapi/v1/txt2img",
                                    json={"alwayson_scripts": {"HiDiffusion": {"args": [{"t1": 7}]}}})
    assert response.status_code == 422 and "t1 must be from 0 to 1" in response.json()["detail"]
    assert tracebacks == []


def test_bad_api_value_fails_the_request_and_patches_nothing(ldm_unet):
    module = fake_webui.load_script_module()
    unet = ldm_unet("sd1")
    p = fake_webui.make_p(unet)
    with pytest.raises(HiDiffusionArgumentError, match="t1"):
        fake_webui.process_images(p, module.HiDiffusionScript(), [{"enabled": True, "t1": 7}])
    assert all("forward" not in vars(m) and not m._forward_hooks for m in unet.modules())
    assert webui_session.active() is None


def test_infotext_round_trip_through_the_paste_fields():
    module = fake_webui.load_script_module()
    pytest.importorskip("gradio")
    import gradio as gr

    script = module.HiDiffusionScript()
    with gr.Blocks():
        controls = script.ui(False)
    original = ScriptArgs(enabled=True, raunet=False, preset="SDXL", t1=0.55, aggressive="off", apply_to="hires pass")
    written = infotext.to_infotext(original)
    as_text = {k: str(v) for k, v in written.items()}  # parse_generation_parameters gives strings
    pasted = [read(as_text) for _, read in script.infotext_fields]
    assert parse(pasted) == original
    assert [c for c, _ in script.infotext_fields] == controls
    without = [read({"Steps": "20"}) for _, read in script.infotext_fields]
    assert parse(without) == ScriptArgs()  # a paste without our keys turns HiDiffusion off


def test_ui_builds_twice_under_real_gradio_with_unique_ids():
    gr = pytest.importorskip("gradio")
    module = fake_webui.load_script_module()
    script = module.HiDiffusionScript()
    script.is_img2img = True
    for _ in range(2):  # the API calls ui() a second time for its defaults
        with gr.Blocks():
            controls = script.ui(True)
        assert [c.value for c in controls] == [False, True, True, "Auto", "", "", "auto", "auto", "bicubic"]
    ids = [c.elem_id for c in controls]
    assert len(set(ids)) == len(ids) and all(i.startswith("script_img2img_hidiffusion_") for i in ids)


def test_settings_page_registers_a_default_per_control():
    pytest.importorskip("gradio")
    fake_webui.load_script_module()
    from modules import script_callbacks, shared

    script_callbacks.ui_settings_callback()
    assert {k for k in shared.opts.data_labels if k.startswith("hidiffusion_default_")} >= {
        "hidiffusion_default_enabled", "hidiffusion_default_apply_to"}
    assert not script_callbacks.errors


def test_xyz_axes_register_once_and_drive_the_cell():
    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
            self.label, self.type, self.apply, self.choices = label, type, apply, choices

    xyz = SimpleNamespace(AxisOption=AxisOption, axis_options=[AxisOption("Nothing", str, None)])
    data = [SimpleNamespace(script_class=type("Script", (), {"__module__": "xyz_grid.py"}), module=xyz)]
    assert xyz_axes.register(data) and xyz_axes.register(data)
    labels = [o.label for o in xyz.axis_options]
    assert len(labels) == len(set(labels)) == 1 + len(xyz_axes.axes())
    for wanted in ("Enabled", "RAU-Net", "MSW-MSA", "T1", "T2", "Apply to"):
        assert f"[HiDiffusion] {wanted}" in labels
    p = SimpleNamespace()
    next(o for o in xyz.axis_options if o.label == "[HiDiffusion] T1").apply(p, 0.6, [0.6])
    next(o for o in xyz.axis_options if o.label == "[HiDiffusion] Enabled").apply(p, "True", [])
    from hidiffusion_ext.webui.script_hooks import arguments

    a = arguments(p, [False] + [DEFAULTS[n] for n in NAMES[1:]])
    assert a.enabled and a.t1 == 0.6
    assert not xyz_axes.register([])


# The resolved-schedule readout's wiring is tested in tests/test_readout_ui.py, its text in tests/test_readout.py.
