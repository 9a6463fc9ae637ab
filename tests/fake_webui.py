"""A miniature of A1111 1.10.1's processing loop around the REAL ldm U-Net, for driving the real Script.

Call order and exception handling follow modules/processing.py, scripts.py, sd_samplers_common.py and
sd_samplers_cfg_denoiser.py (docs/design.md §11 gives the order with line references): hooks swallow
exceptions, a sampling exception propagates (postprocess is skipped), an interrupt returns the last latent.
"""

import os
import sys
import time
import traceback
from types import SimpleNamespace

import torch

STUBS = os.path.join(os.path.dirname(__file__), "webui_stubs")


class InterruptedException(BaseException):
    pass


class CFGDenoiser:
    """Counts calls like A1111's: ``step`` per forward, ``total_steps`` = steps (x2 for second order)."""

    def __init__(self, p, steps, second_order):
        self.p, self.steps, self.step = p, steps, 0
        self.total_steps = steps * 2 if second_order else steps

    def forward(self, x, t, context):
        from modules import script_callbacks, shared

        if shared.state.interrupted or shared.state.skipped:
            raise InterruptedException
        x_in = torch.cat([x, x])  # cond rows + uncond rows, one batched U-Net call
        params = script_callbacks.CFGDenoiserParams(x_in, None, t, shared.state.sampling_step,
                                                    shared.state.sampling_steps, context, context, self)
        if getattr(self.p, "params_without_denoiser", False):  # A1111 1.7 (sd_samplers_cfg_denoiser.py:133)
            params.denoiser = None
        script_callbacks.cfg_denoiser_callback(params)
        context = params.text_cond  # a refiner switch may change the conditioning
        timesteps, ctx = torch.full((x_in.shape[0],), float(t)), torch.cat([context, context * 0])
        forge = getattr(self.p.sd_model, "forge_objects", None)
        if forge is not None:  # Forge: the sampler takes forge_objects.unet at sampling time
            out = self.p.forge_runtime.denoise(forge.unet, params.x, timesteps, ctx)
        else:  # a host-side tiler (Tiled Diffusion) wraps the model call: p.tiled_unet stands in for it
            unet_call = getattr(self.p, "tiled_unet", None) or self.p.sd_model.model.diffusion_model
            out = unet_call(params.x, timesteps, context=ctx)
        cond, uncond = out.chunk(2)
        self.step += 1
        return uncond + 3.0 * (cond - uncond)


def schedule_for(steps):
    """The noise levels sample_loop evaluates (here DDPM-timestep-like), noisiest first, ending at 0 as k-diffusion
    schedules do."""
    return [999 - i * (999 // steps) for i in range(steps)] + [0]


def sample_loop(p, x, steps, sampler, sigmas=None):
    """launch_sampling + a k-diffusion-like loop; the sampler callback sets state.sampling_step after call 1.
    ``sigmas``: the schedule the Sampler hands its function (sd_samplers_kdiffusion.py:211-230); the loop uses it."""
    from modules import shared

    second_order = sampler == "Heun"
    denoiser = CFGDenoiser(p, steps, second_order)
    if getattr(p, "sampler", None) is not None:  # every A1111 Sampler keeps its denoiser (sd_samplers_common.py)
        p.sampler.model_wrap_cfg = denoiser
    shared.state.sampling_steps, shared.state.sampling_step = steps, 0
    p.denoiser_log.append(denoiser)
    last = x
    try:
        for i, t in enumerate((sigmas or schedule_for(steps))[:-1]):
            d = denoiser.forward(x, t, p.context)
            shared.state.sampling_step = i
            if second_order and i < steps - 1:
                d = 0.5 * (d + denoiser.forward(x - 0.01 * d, t - 1, p.context))
            x = last = x - 0.02 * d
        return x
    except InterruptedException:
        return last


def run_sampler(p, x, steps):
    """Sampler.sample: the sampler exists before process_before_every_sampling (processing.py:1308, 1386, 1607),
    which may wrap its ``func``; it is called as ``self.func(...)`` with the schedule as a keyword."""
    p.sampler = SimpleNamespace(func=sample_loop)
    _before_every_sampling(p, x)
    return p.sampler.func(p, x, steps, p.sampler_name, sigmas=schedule_for(steps))


def make_p(unet, *, width=256, height=256, steps=4, seed=42, batch_size=1, n_iter=1, sampler="Euler",
           enable_hr=False, hr_scale=2, hr_steps=0, init_latent=None, denoising_strength=0.75, model_name="random-sd15"):
    context_dim = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    sd_model = SimpleNamespace(model=SimpleNamespace(diffusion_model=unet), is_sd1=True, is_sd2=False, is_sdxl=False,
                               sd_checkpoint_info=SimpleNamespace(name_for_extra=model_name, title=model_name))
    p = SimpleNamespace(
        sd_model=sd_model, width=width, height=height, steps=steps, seed=seed, batch_size=batch_size, n_iter=n_iter,
        sampler_name=sampler, enable_hr=enable_hr, hr_upscale_to_x=width * hr_scale, hr_upscale_to_y=height * hr_scale,
        hr_second_pass_steps=hr_steps, denoising_strength=denoising_strength, is_hr_pass=False, iteration=0,
        extra_generation_params={}, all_seeds=[], context=torch.ones(batch_size, 3, context_dim) * 0.1,
        init_latent=init_latent, denoiser_log=[],
    )
    if init_latent is not None:  # only img2img's processing object has init_images (processing.py:1557)
        p.init_images = [object()]
    p.sample = lambda: _sample(p)
    return p


def _before_every_sampling(p, x):
    """Forge resets forge_objects before the hook, and calls it twice for the hires pass (design.md §11.3).
    A1111 1.7-1.9 (``p.legacy_hooks``) have no such hook: only process_batch and before_hr run."""
    if getattr(p, "legacy_hooks", False):
        return
    calls = 2 if getattr(p, "forge_original", None) is not None and p.is_hr_pass else 1
    for _ in range(calls):
        if getattr(p, "forge_original", None) is not None:
            p.sd_model.forge_objects.unet = p.forge_original
        p.scripts.process_before_every_sampling(p, x=x, noise=x, c=None, uc=None)


def make_forge_p(unet, **kwargs):
    """A Forge-shaped ``p``: the engine has forge_objects and no ``.model.diffusion_model``."""
    from forge_stub import StubForge, StubUnetPatcher

    p = make_p(unet, **kwargs)
    p.forge_original = StubUnetPatcher.around(unet)
    p.forge_runtime = StubForge()
    p.sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=p.forge_original), is_sd1=True, is_sdxl=False,
                                 sd_checkpoint_info=p.sd_model.sd_checkpoint_info)
    return p


def _sample(p):
    """StableDiffusionProcessingTxt2Img.sample / Img2Img.sample, with the hires pass."""
    g = torch.Generator().manual_seed(p.all_seeds[p.iteration * p.batch_size])
    if p.init_latent is not None:
        steps = int(min(p.denoising_strength, 0.999) * p.steps) + 1
        return run_sampler(p, p.init_latent.clone(), steps)
    x = torch.randn(p.batch_size, 4, p.height // 8, p.width // 8, generator=g)
    samples = run_sampler(p, x, p.steps)
    if not p.enable_hr:
        return samples
    from modules import shared

    if shared.state.interrupted:
        return samples
    p.is_hr_pass = True
    started = time.perf_counter()  # sample_hr_pass decodes the first pass (non-latent upscalers) inside p.sample
    time.sleep(getattr(p, "decode_seconds", 0.0))
    p.decode_window = (started, time.perf_counter())
    samples = torch.nn.functional.interpolate(samples, size=(p.hr_upscale_to_y // 8, p.hr_upscale_to_x // 8))
    p.scripts.before_hr(p)
    samples = run_sampler(p, samples, p.hr_second_pass_steps or p.steps)
    p.is_hr_pass = False
    return samples


class Runner:
    """ScriptRunner (modules/scripts.py: each hook gets ``p.script_args[script.args_from:script.args_to]``) for our
    always-on script and, called first, other always-on scripts: ``script`` (no arguments, e.g. a ControlNet stand-in)
    or ``(script, args)`` (e.g. another extension's real Script). Errors are logged, as errors.report does."""

    def __init__(self, script, args, others=()):
        self.script, self.errors = script, []
        self.scripts = []  # the selectable scripts; none in these runs
        entries = [o if isinstance(o, tuple) else (o, []) for o in others] + [(script, list(args))]
        self.alwayson_scripts, self.script_args = [], []
        for other, other_args in entries:
            other.args_from, other.args_to = len(self.script_args), len(self.script_args) + len(other_args)
            self.alwayson_scripts.append(other)
            self.script_args += list(other_args)
        self.args = self.script_args[script.args_from:script.args_to]

    def _call(self, name, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            try:
                if hasattr(script, name):
                    getattr(script, name)(p, *extra, *self.script_args[script.args_from:script.args_to], **kwargs)
            except Exception:
                self.errors.append(traceback.format_exc())

    def before_process(self, p): self._call("before_process", p)
    def process(self, p): self._call("process", p)
    def process_batch(self, p, **kw): self._call("process_batch", p, **kw)
    def process_before_every_sampling(self, p, **kw): self._call("process_before_every_sampling", p, **kw)
    def before_hr(self, p): self._call("before_hr", p)
    def postprocess(self, p, processed): self._call("postprocess", p, processed)


def process_images(p, script, args, others=()):
    """processing.process_images: before_process, process, per-iteration batch hooks and sampling, postprocess."""
    p.scripts = Runner(script, args, others)
    p.script_args = p.scripts.script_args
    p.all_seeds = [p.seed + i for i in range(p.batch_size * p.n_iter)]
    p.scripts.before_process(p)
    p.scripts.process(p)
    outputs = []
    for n in range(p.n_iter):
        p.iteration = n
        p.scripts.process_batch(p, batch_number=n, prompts=[], seeds=[], subseeds=[])
        outputs.append(p.sample())
    processed = SimpleNamespace(images=outputs, infotext=dict(p.extra_generation_params))
    p.scripts.postprocess(p, processed)
    return processed


def load_script_module():
    """Import scripts/hidiffusion.py the way the webui does (file basename as module name)."""
    import importlib.util

    if STUBS not in sys.path:
        sys.path.insert(0, STUBS)
    from modules import script_callbacks

    try:  # A1111 imports it at start-up; without gradio (never in CI) the UI tests skip themselves
        import modules.gradio_extensons  # noqa: F401
    except ImportError:
        pass

    script_callbacks.clear_callbacks()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "scripts", "hidiffusion.py")
    spec = importlib.util.spec_from_file_location("hidiffusion.py", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_args(**named):
    """Our Script's arguments in ui() order: the fields' defaults, switched on and applied to both passes; ``named``
    overrides (the API's field names)."""
    from hidiffusion_ext.webui import fields

    values = {f.name: f.default for f in fields.FIELDS} | {"enabled": True, "apply_to": "both"} | named
    return [values[n] for n in fields.names()]
