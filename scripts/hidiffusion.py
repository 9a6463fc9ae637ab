"""HiDiffusion for AUTOMATIC1111 and Forge: one always-on script. The mechanism is in hidiffusion_ext/.

Life of a generation: before_process removes any patch a crashed run left; process validates the
arguments and wraps p.sample in try/finally; process_before_every_sampling patches the U-Net for each
pass (A1111 >= 1.10, Forge; process_batch/before_hr on 1.7-1.9); on_cfg_denoiser moves the step; the
end of p.sample removes the patch and writes the PNG info; postprocess is a second safety net.
"""

from modules import script_callbacks, scripts

from hidiffusion_ext.webui import page_state, script_hooks, session, ui, xyz_axes

HAS_PER_PASS_HOOK = hasattr(scripts.Script, "process_before_every_sampling")


class HiDiffusionScript(scripts.Script):
    sorting_priority = 15  # where the accordion sits among always-on scripts (Forge runs them in load order)

    def title(self):
        return "HiDiffusion"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return ui.build(self, is_img2img)

    def after_component(self, component, **kwargs):
        ui.capture(self, component, kwargs)

    def before_process(self, p, *args):
        session.cleanup(p)

    def process(self, p, *args):
        script_hooks.start(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        script_hooks.patch_pass(p, kwargs["x"].shape[-2:])

    def process_batch(self, p, *args, **kwargs):
        if not HAS_PER_PASS_HOOK:
            script_hooks.patch_pass(p, script_hooks.first_pass_latent(p), "process_batch")

    def before_hr(self, p, *args):
        if not HAS_PER_PASS_HOOK:
            script_hooks.patch_pass(p, script_hooks.hires_latent(p), "before_hr")

    def postprocess(self, p, processed, *args):
        session.finish(p)


script_callbacks.on_cfg_denoiser(session.on_cfg_denoiser)
script_callbacks.on_model_loaded(session.on_model_loaded)
script_callbacks.on_model_loaded(page_state.bump)  # open pages compute their readout for the new model
script_callbacks.on_app_started(ui.on_app_started)
script_callbacks.on_script_unloaded(session.cleanup)
script_callbacks.on_ui_settings(ui.register_settings)
script_callbacks.on_before_ui(lambda: xyz_axes.register(scripts.scripts_data))
