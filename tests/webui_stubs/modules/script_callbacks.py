"""modules/script_callbacks.py (1.10.1): registries, param classes and exception-swallowing invokers."""

import dataclasses
import inspect
import traceback


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x, self.image_cond, self.sigma = x, image_cond, sigma
        self.sampling_step, self.total_sampling_steps = sampling_step, total_sampling_steps
        self.text_cond, self.text_uncond, self.denoiser = text_cond, text_uncond, denoiser


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: object
    name: str = "unnamed"


callback_map = {name: [] for name in (
    "callbacks_cfg_denoiser", "callbacks_model_loaded", "callbacks_script_unloaded", "callbacks_ui_settings",
    "callbacks_before_ui", "callbacks_infotext_pasted", "callbacks_list_unets", "callbacks_app_started",
)}
errors = []  # what errors.report would have printed


def _caller_file():
    """The first file on the stack that is not this one (add_callback, script_callbacks.py:127-130)."""
    stack = [x for x in inspect.stack() if x.filename != __file__]
    return stack[0].filename if stack else "unknown file"


def _add(key, fn, name=None):
    callback_map[key].append(ScriptCallback(_caller_file(), fn, name or "unnamed"))


def on_cfg_denoiser(callback, *, name=None): _add("callbacks_cfg_denoiser", callback, name)
def on_model_loaded(callback, *, name=None): _add("callbacks_model_loaded", callback, name)
def on_script_unloaded(callback, *, name=None): _add("callbacks_script_unloaded", callback, name)
def on_ui_settings(callback, *, name=None): _add("callbacks_ui_settings", callback, name)
def on_before_ui(callback, *, name=None): _add("callbacks_before_ui", callback, name)
def on_infotext_pasted(callback, *, name=None): _add("callbacks_infotext_pasted", callback, name)
def on_list_unets(callback, *, name=None): _add("callbacks_list_unets", callback, name)  # script_callbacks.py:602
def on_app_started(callback, *, name=None): _add("callbacks_app_started", callback, name)  # script_callbacks.py:456


def _run(key, *args):
    for c in callback_map[key]:
        try:
            c.callback(*args)
        except Exception:  # report_exception: logged, never propagated
            errors.append(traceback.format_exc())


def cfg_denoiser_callback(params): _run("callbacks_cfg_denoiser", params)
def model_loaded_callback(sd_model): _run("callbacks_model_loaded", sd_model)
def script_unloaded_callback(): [_run("callbacks_script_unloaded")]
def ui_settings_callback(): _run("callbacks_ui_settings")
def before_ui_callback(): _run("callbacks_before_ui")
def app_started_callback(demo, app): _run("callbacks_app_started", demo, app)  # script_callbacks.py:253


def remove_current_script_callbacks():
    """The calling script file's callbacks removed (script_callbacks.py:434-441; there is no ordered map here)."""
    filename = _caller_file()
    if filename == "unknown file":
        return
    for callbacks in callback_map.values():
        callbacks[:] = [cb for cb in callbacks if cb.script != filename]


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()
