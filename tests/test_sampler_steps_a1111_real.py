"""The steps of A1111's own samplers (DDIM, PLMS, UniPC: modules/sd_samplers_timesteps_impl.py; Restart:
modules/sd_samplers_extra.py), call by call, from an A1111 checkout (A1111_DIR; skipped without it). The files run
as they are; only ``modules.shared`` (opts) and the package path around them are stood in for.
"""

import importlib.util
import os
import sys
import types
from types import SimpleNamespace as NS

import pytest
import torch
from test_sampler_steps import sampling  # noqa: F401  (the fixture: k_diffusion.sampling without its __init__)

from hidiffusion_ext.core.schedule import switch_step
from hidiffusion_ext.webui.step_tracking import NOISE_LEVEL, ScheduleCapture, step_from_denoiser

A1111_DIR = os.environ.get("A1111_DIR", "")
TIMESTEPS_IMPL = os.path.join(A1111_DIR, "modules", "sd_samplers_timesteps_impl.py")
pytestmark = pytest.mark.skipif(not os.path.isfile(TIMESTEPS_IMPL), reason="set A1111_DIR to a stable-diffusion-webui checkout")
T1 = 0.5


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def a1111(sampling):  # noqa: F811
    """modules.sd_samplers_timesteps_impl and modules.sd_samplers_extra, loaded from A1111_DIR."""
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "modules" or n.startswith("modules.")}
    root = os.path.join(A1111_DIR, "modules")
    try:
        for name in ("modules", "modules.models", "modules.models.diffusion", "modules.models.diffusion.uni_pc"):
            package = sys.modules[name] = types.ModuleType(name)
            package.__path__ = []
        # shared_options.py: the UniPC options' defaults
        sys.modules["modules"].shared = sys.modules["modules.shared"] = NS(opts=NS(
            uni_pc_variant="bh1", uni_pc_skip_type="time_uniform", uni_pc_order=3, uni_pc_lower_order_final=True))
        _load("modules.torch_utils", os.path.join(root, "torch_utils.py"))
        sys.modules["modules.models.diffusion.uni_pc"].uni_pc = _load(
            "modules.models.diffusion.uni_pc.uni_pc", os.path.join(root, "models", "diffusion", "uni_pc", "uni_pc.py"))
        yield NS(timesteps=_load("modules.sd_samplers_timesteps_impl", TIMESTEPS_IMPL),
                 extra=_load("modules.sd_samplers_extra", os.path.join(root, "sd_samplers_extra.py")))
    finally:
        for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def get_timesteps(steps):
    """sd_samplers_timesteps.py CompVisSampler.get_timesteps (1.10.1), without discard_next_to_last_sigma."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def alphas_cumprod():
    """SD1.5's DDPM schedule (v1-inference.yaml: linear_start 0.00085, linear_end 0.012, 1000 steps)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def run(func, steps, **kwargs):
    """Call an A1111 sampler function as its Sampler does (``self.func(model_wrap_cfg, x, ..., **kwargs)``)."""
    sampler, calls = NS(func=func), []
    capture = ScheduleCapture(sampler)

    def model(x, level, **extra):
        params = NS(sigma=level, sampling_step=0, total_sampling_steps=steps,
                    denoiser=NS(steps=steps, step=len(calls), total_steps=steps))
        step, _, source = step_from_denoiser(params, capture)
        assert source == NOISE_LEVEL
        calls.append((float(level[0]), step))
        return x * 0.1 if "timesteps" in kwargs else x * 0.9

    model.inner_model = NS(inner_model=NS(alphas_cumprod=alphas_cumprod()))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sampler.func(model, x, extra_args={}, callback=lambda d: None, disable=True, **kwargs)  # as launch_sampling does
    capture.undo()
    assert sampler.func is func
    return calls


def steps_of(calls):
    return [step for _, step in calls]


def test_ddim_one_call_per_iteration(a1111):
    """A1111's DDIM runs steps - 1 iterations (timesteps 751, 501, 251 at 4 steps)."""
    assert run(a1111.timesteps.ddim, 4, timesteps=get_timesteps(4)) == [(751.0, 0), (501.0, 1), (251.0, 2)]


def test_plms_evaluations_at_one_timestep_agree(a1111):
    """PLMS's first iteration evaluates timestep 751 and then 501, which the next iteration evaluates again: both
    calls at 501 are step 1 (the call counter made them steps 1 and 2: RAD switched between them)."""
    calls = run(a1111.timesteps.plms, 4, timesteps=get_timesteps(4))
    assert calls == [(751.0, 0), (501.0, 1), (501.0, 1), (251.0, 2)]
    assert [t for t, step in calls if step < switch_step(4, T1)] == [751.0, 501.0, 501.0]


def test_unipc_steps_follow_its_timesteps(a1111):
    calls = run(a1111.timesteps.unipc, 8, timesteps=get_timesteps(8))
    assert steps_of(calls) == sorted(steps_of(calls)) and steps_of(calls)[0] == 0
    assert all(a == b for (t1, a), (t2, b) in zip(calls, calls[1:]) if t1 == t2)


def test_restart_rounds_back_up_in_noise_get_the_steps_of_that_noise(a1111, sampling):  # noqa: F811
    """At 20 steps Restart samples a shorter Karras schedule and adds a round from sigma 0.1 back up to 2: its
    calls there are placed by their noise, so RAD (steps 0-9) runs again where the noise is that of steps 0-9."""
    steps = 20
    sigmas = sampling.get_sigmas_karras(steps, 0.0292, 14.6146)
    calls = run(a1111.extra.restart_sampler, steps, sigmas=sigmas)
    assert len(calls) == 2 * (11 + 9) - 1  # Heun on an 11-step schedule, a 9-step restart round, a last Euler step
    stock_then_rad = [i for i in range(1, len(calls)) if calls[i - 1][1] >= 10 > calls[i][1]]
    assert stock_then_rad, "the restart round went back above the RAD switch level"
    switch_level = float(sigmas[switch_step(steps, T1)])
    for sigma, step in calls:
        assert (step < 10) == (sigma > switch_level * (1 - 1e-5))
