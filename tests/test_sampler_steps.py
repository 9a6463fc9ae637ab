"""Which step each U-Net call belongs to, call by call, on the real k-diffusion sampling functions (PyPI
``k-diffusion``, the functions A1111 and Forge call), as the webui calls them: ``sampler.func(model, x, sigmas=...)``
with the schedule read from those arguments (step_tracking.ScheduleCapture).

The rule (design.md §9.1): step i is the calls at noise levels in (level[i+1], level[i]]. So a call at a planned
level gets that level's step, two calls at one level get the same step, and the steps of samplers with a fixed
number of calls per step are the call counter's where they evaluate once per step.
"""

import functools
import importlib.util
import sys
import types
from types import SimpleNamespace as NS

import pytest
import torch
from absent_packages import stand_ins

from hidiffusion_ext.core.schedule import switch_step
from hidiffusion_ext.webui.step_tracking import CALL_COUNT, NOISE_LEVEL, ScheduleCapture, step_from_denoiser

STEPS, T1 = 4, 0.5  # the lane: RAD on steps 0-1
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146  # SD1.5's range


@pytest.fixture(scope="module")
def sampling():
    """k_diffusion.sampling without the package __init__ (it imports training code: wandb, clean-fid, ...);
    torchvision, which its utils import for image helpers these tests never call, is stood in for if absent."""
    spec = importlib.util.find_spec("k_diffusion")
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "k_diffusion"}
    sys.modules["k_diffusion"] = package
    try:
        with stand_ins(["torchvision"]):
            module = importlib.import_module("k_diffusion.sampling")
        yield module
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "k_diffusion"]:
            del sys.modules[name]
        sys.modules.update(saved)


def run(sampling, name, steps=STEPS, second_order=False, schedule=None, **extra):
    """Run the named sampler as A1111's KDiffusionSampler does; returns [(sigma, step, counter step)] per call."""
    sigmas = (schedule or sampling.get_sigmas_karras)(steps, SIGMA_MIN, SIGMA_MAX)
    sampler = NS(func=getattr(sampling, name))
    capture = ScheduleCapture(sampler)
    calls = []

    def denoiser(x, sigma, **kwargs):  # a stable toy denoiser: the calls, not the image, are under test
        params = NS(sigma=sigma, sampling_step=0, total_sampling_steps=steps,
                    denoiser=NS(steps=steps, step=len(calls), total_steps=steps * 2 if second_order else steps))
        step, _, source = step_from_denoiser(params, capture)
        _, _, counted = step_from_denoiser(params, None)
        assert source == NOISE_LEVEL
        calls.append((float(sigma[0]), step, counted))
        return x * 0.9

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * SIGMA_MAX
    if name in ("sample_dpm_fast", "sample_dpm_adaptive"):  # A1111 hands these the range and the step count
        n = {"n": steps} if name == "sample_dpm_fast" else {}  # sd_samplers_kdiffusion.py:206-214
        sampler.func(denoiser, x, sigma_min=float(sigmas[-2]), sigma_max=float(sigmas[0]), disable=True, **n, **extra)
    else:
        sampler.func(denoiser, x, sigmas=sigmas, disable=True, **extra)
    capture.undo()
    assert sampler.func is getattr(sampling, name)  # the wrapper is gone
    return [(sigma, step, counted_step(i, steps, second_order)) for i, (sigma, step, _) in enumerate(calls)]


def counted_step(i, steps, second_order):
    return i // 2 if second_order else i


def steps_of(table):
    return [step for _, step, _ in table]


ONE_CALL_PER_STEP = ["sample_euler", "sample_euler_ancestral", "sample_lms", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
                     "sample_dpmpp_3m_sde"]


@pytest.mark.parametrize("name", ONE_CALL_PER_STEP)
def test_one_call_per_step_samplers_keep_the_call_counter_steps(sampling, name):
    table = run(sampling, name)
    assert steps_of(table) == [counted for _, _, counted in table] == list(range(STEPS))


def test_heun_second_evaluation_belongs_to_the_level_it_is_evaluated_at(sampling):
    """Heun evaluates step i again at level i+1: that call runs the U-Net of level i+1, as step i+1's first call
    does; RAD then covers 3 calls at 4 steps, T1 0.5 (the counter gave 4: two different U-Nets at level 2)."""
    table = run(sampling, "sample_heun", second_order=True)
    assert steps_of(table) == [0, 1, 1, 2, 2, 3, 3]
    rad = [sigma for sigma, step, _ in table if step < switch_step(STEPS, T1)]
    assert len(rad) == 3 and len(set(rad)) == 2


@pytest.mark.parametrize("name, eta", [("sample_dpm_2", None), ("sample_dpm_2_ancestral", 0.0),
                                       ("sample_dpmpp_2s_ancestral", 0.0), ("sample_dpmpp_sde", 0.0)])
def test_midpoint_samplers_keep_both_evaluations_in_their_step(sampling, name, eta):
    """Without added noise their second evaluation lies between two planned levels: the step's own, as the
    counter said."""
    table = run(sampling, name, second_order=True, **({} if eta is None else {"eta": eta}))
    assert steps_of(table) == [0, 0, 1, 1, 2, 2, 3] == [counted for _, _, counted in table]


def test_an_ancestral_midpoint_below_the_next_level_belongs_to_the_next_step(sampling):
    """DPM++ 2S a at eta 1 (A1111's default) steps to sigma_down < level i+1 and evaluates at the midpoint, which
    lies below level i+1: by noise level it is step i+1's (the counter kept it in step i)."""
    table = run(sampling, "sample_dpmpp_2s_ancestral", second_order=True)
    assert steps_of(table) == [0, 1, 1, 2, 2, 3, 3]


def test_dpm_adaptive_follows_the_noise_level_not_its_call_count(sampling):
    """Any number of calls: RAD on while the noise is above level 2 of 4 (log-uniform, its own spacing); the
    counter switched RAD off after the first 2 calls whatever the trajectory."""
    table = run(sampling, "sample_dpm_adaptive")
    levels = [SIGMA_MAX * (SIGMA_MIN / SIGMA_MAX) ** (i / STEPS) for i in range(STEPS + 1)]
    assert len(table) > 2 * STEPS
    assert steps_of(table) == sorted(steps_of(table)) and steps_of(table)[0] == 0 and steps_of(table)[-1] == STEPS - 1
    rad = [sigma for sigma, step, _ in table if step < switch_step(STEPS, T1)]
    assert rad and all(sigma > levels[2] * (1 - 1e-5) for sigma in rad)
    assert len(rad) > 2 and all(sigma <= levels[2] for sigma, step, _ in table if step >= 2)


def test_dpm_fast_places_each_evaluation_at_its_noise_level(sampling):
    """4 steps: a 3rd-order step (3 evaluations) then a 1st-order one; the counter ran RAD on 2 of the first
    step's 3 evaluations, the noise level keeps the evaluations of one level together."""
    table = run(sampling, "sample_dpm_fast")
    assert len(table) == STEPS
    assert steps_of(table) == sorted(steps_of(table))
    assert [counted for _, _, counted in table] == [0, 1, 2, 3]


def test_a_call_count_is_the_fallback_where_no_schedule_was_seen():
    params = NS(sigma=torch.tensor([3.0]), sampling_step=0, total_sampling_steps=4,
                denoiser=NS(steps=4, step=5, total_steps=8))
    assert step_from_denoiser(params, None) == (2, 4, CALL_COUNT)
    assert ScheduleCapture(None).levels(4) is None


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpmpp_2m"])
def test_schedulers_change_levels_not_calls(sampling, name):
    """Karras, exponential and polyexponential spacing give other noise levels and the same steps per call."""
    second_order = name == "sample_heun"
    polyexponential = functools.partial(sampling.get_sigmas_polyexponential, rho=2.0)  # rho 1 is exponential
    tables = [run(sampling, name, second_order=second_order, schedule=get) for get in
              (sampling.get_sigmas_karras, sampling.get_sigmas_exponential, polyexponential)]
    assert len({tuple(steps_of(t)) for t in tables}) == 1
    assert len({tuple(round(sigma, 6) for sigma, _, _ in t) for t in tables}) == 3


def test_forge_hands_timestep_samplers_calls_as_sigmas():
    """Forge's CFGDenoiser turns each DDPM timestep of DDIM/PLMS/UniPC into that timestep's sigma before the
    callbacks (sd_samplers_cfg_denoiser.py:163-168): the captured timesteps are read in the same terms. Before, every
    call landed in the last step and Forge's DDIM, DDIM CFG++, PLMS and UniPC ran no RAD step."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    acd = torch.cumprod(1 - betas, 0).float()
    sigma_of = ((1 - acd) / acd) ** 0.5
    timesteps = [1, 251, 501, 751]  # CompVisSampler.get_timesteps at 4 steps; DDIM evaluates 751, 501, 251
    sampler, steps = NS(func=lambda *a, **k: None), []
    capture = ScheduleCapture(sampler)
    sampler.func(None, None, timesteps=torch.tensor(timesteps))
    for i, t in enumerate([751, 501, 251]):
        denoiser = NS(steps=4, step=i, total_steps=4, classic_ddim_eps_estimation=True,
                      inner_model=NS(inner_model=NS(alphas_cumprod=acd)))
        params = NS(sigma=sigma_of[t].reshape(1), sampling_step=0, total_sampling_steps=4, denoiser=denoiser)
        steps.append(step_from_denoiser(params, capture)[::2])
    assert steps == [(0, NOISE_LEVEL), (1, NOISE_LEVEL), (2, NOISE_LEVEL)]


def test_a_first_call_on_another_scale_falls_back_to_the_call_count():
    """A host that hands the callbacks another scale than the schedule (not Forge's, which is read above): the first
    call is not at the schedule's first level, so the pass counts calls rather than run RAU-Net on no step."""
    sampler = NS(func=lambda *a, **k: None)
    capture = ScheduleCapture(sampler)
    sampler.func(None, None, timesteps=torch.tensor([1, 251, 501, 751]))
    sources = []
    for i, level in enumerate([14.6, 4.0, 1.0]):  # sigmas against a timestep schedule
        params = NS(sigma=torch.tensor([level]), sampling_step=0, total_sampling_steps=4,
                    denoiser=NS(steps=4, step=i, total_steps=4))
        sources.append(step_from_denoiser(params, capture))
    assert sources == [(0, 4, CALL_COUNT), (1, 4, CALL_COUNT), (2, 4, CALL_COUNT)]
