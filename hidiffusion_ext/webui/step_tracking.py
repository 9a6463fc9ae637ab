"""Which sampler step a U-Net call belongs to (design.md §9.1).

By noise level, where the pass's planned schedule is known: the call's sigma (k-diffusion samplers) or DDPM
timestep (DDIM, PLMS, UniPC) against the levels the sampler was handed, step i being the calls at noise levels
in (level[i+1], level[i]]. Two calls at the same noise level always get the same U-Net, whatever the sampler does
between them: a second-order sampler's extra evaluation belongs to the step whose level it is evaluated at
(Heun: 0, 1, 1, 2, 2, ... as the reference's call counter on diffusers' Heun schedule), DPM adaptive and DPM
fast place their evaluations where their own step sizes put them, Restart's rounds back up to higher noise get
the steps of that noise, and PLMS's two evaluations at one timestep agree.

The schedule is read from the sampler function's own arguments (``sigmas`` or ``timesteps``; DPM fast and
adaptive get ``sigma_min``/``sigma_max`` (and ``n``) and step log-uniformly in sigma, so their levels are that
spacing over the pass's steps)
by wrapping ``p.sampler.func`` for the pass; A1111 and Forge call it as an attribute at sampling time.

By call count, where no schedule was seen (A1111 1.7-1.9, whose fallback hooks run before the sampler exists,
or a sampler function that takes none of those arguments): ``denoiser.step`` counts denoiser calls of the pass
and ``denoiser.total_steps`` is ``steps`` (x2 for second-order samplers), so their ratio gives the step. A1111 1.7
does not pass the denoiser in ``CFGDenoiserParams``: the running one is ``p.sampler.model_wrap_cfg`` (every
A1111 sampler has it). ``CFGDenoiserParams.sampling_step`` lags one step behind (the sampler callback sets it
after a step), so it is only the last resort. ``steps`` is the length of the current pass: ``p.steps``, the hires
steps, or img2img's executed steps.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple

NOISE_LEVEL, CALL_COUNT = "noise level", "call count"
_SAME_LEVEL = 1e-5  # relative: a call's sigma equals its schedule entry up to the float round trip


def step_of_call(call_index: int, steps: int, total_calls: int) -> int:
    if steps <= 0 or total_calls <= 0:
        return call_index
    calls_per_step = max(1, round(total_calls / steps))
    return call_index // calls_per_step


def step_of_noise_level(level: float, levels: Sequence[float]) -> int:
    """The step whose noise levels (level[i+1], level[i]] hold ``level``; ``levels`` noisiest first."""
    inner = levels[1:-1]  # level[0] starts step 0 and anything noisier is step 0 too; the last level ends the pass
    return sum(1 for planned in inner if planned >= level * (1 - _SAME_LEVEL))


def noise_levels(kwargs: dict, steps: int) -> Optional[Tuple[float, ...]]:
    """The pass's planned noise levels, noisiest first, from a sampler function's keyword arguments."""
    if kwargs.get("sigmas") is not None:
        return tuple(float(s) for s in kwargs["sigmas"])
    if kwargs.get("timesteps") is not None:  # A1111/Forge's DDIM, PLMS, UniPC: ascending DDPM timesteps
        return tuple(sorted((float(t) for t in kwargs["timesteps"]), reverse=True))
    if kwargs.get("sigma_min") is not None and kwargs.get("sigma_max") is not None:  # DPM fast (with n), adaptive
        high, low, n = float(kwargs["sigma_max"]), float(kwargs["sigma_min"]), int(kwargs.get("n") or steps)
        if n >= 1 and high > low > 0:
            return tuple(math.exp(math.log(high) + (math.log(low) - math.log(high)) * i / n) for i in range(n + 1))
    return None


class ScheduleCapture:
    """Wraps ``sampler.func`` on the instance for one pass to read the schedule it is called with; ``undo()``."""

    def __init__(self, sampler):
        self._kwargs: Optional[dict] = None
        self.mismatch = False  # the pass's first call was not at the schedule's first level: another scale
        self._first_seen = False
        self._sampler = sampler
        func = getattr(sampler, "func", None)
        if sampler is None or not callable(func) or getattr(func, "_hidiffusion_capture", False):
            self._sampler = None
            return

        @functools.wraps(func)  # keeps inspect.signature(): the host reads the function's parameters through it
        def capturing(*args, **kwargs):
            self._kwargs = {k: v for k, v in kwargs.items() if k in ("sigmas", "timesteps", "sigma_min", "sigma_max", "n")}
            return func(*args, **kwargs)

        capturing._hidiffusion_capture = True
        sampler.func = capturing

    def levels(self, steps: int) -> Optional[Tuple[float, ...]]:
        """The noise levels of a pass of ``steps`` steps, once the sampler function was called; else None."""
        return None if self._kwargs is None or self.mismatch else noise_levels(self._kwargs, steps)

    def trusts(self, step: int) -> bool:
        """Whether the calls' levels are on the schedule's scale: decided by the pass's first call, at step 0."""
        if not self._first_seen:
            self._first_seen, self.mismatch = True, step != 0
        return not self.mismatch

    @property
    def by_timestep(self) -> bool:
        return self._kwargs is not None and self._kwargs.get("timesteps") is not None

    def undo(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None and "func" in vars(sampler) and getattr(sampler.func, "_hidiffusion_capture", False):
            original = sampler.func.__wrapped__
            if getattr(type(sampler), "func", None) is original:
                del sampler.func
            else:
                sampler.func = original


def step_from_denoiser(params, schedule: Optional[ScheduleCapture] = None, running=None) -> tuple:
    """(step, steps, source) of the current pass from an on_cfg_denoiser ``CFGDenoiserParams``; ``running``: the
    sampler's denoiser, for hosts whose params do not carry it (A1111 1.7: seven arguments, no ``denoiser``).

    The first call of a pass is at the schedule's noisiest level for every sampler; where it is not, the call's level
    is on another scale than the schedule (a host's conversion we do not know) and the pass counts calls instead."""
    denoiser = getattr(params, "denoiser", None) or running
    steps = int(getattr(denoiser, "steps", None) or params.total_sampling_steps)
    levels = schedule.levels(steps) if schedule is not None else None
    if levels and schedule.by_timestep and getattr(denoiser, "classic_ddim_eps_estimation", False):
        levels = forge_timestep_sigmas(denoiser, levels)
    level = _call_level(params)
    if levels and len(levels) >= 2 and level is not None:
        step = step_of_noise_level(level, levels)
        if schedule.trusts(step):
            return min(step, max(0, steps - 1)), steps, NOISE_LEVEL
    if denoiser is None or getattr(denoiser, "total_steps", None) is None:
        return int(params.sampling_step), steps, CALL_COUNT
    return step_of_call(int(denoiser.step), steps, int(denoiser.total_steps)), steps, CALL_COUNT


def forge_timestep_sigmas(denoiser, timesteps: Sequence[float]) -> Tuple[float, ...]:
    """Forge's CFGDenoiser hands its callbacks each DDPM timestep of DDIM/PLMS/UniPC as the sigma of that timestep,
    sqrt((1 - a) / a) of alphas_cumprod (classic_ddim_eps_estimation, sd_samplers_cfg_denoiser.py:163-168): the
    schedule's timesteps in those terms."""
    acd = denoiser.inner_model.inner_model.alphas_cumprod
    sigmas = ((1 - acd) / acd) ** 0.5
    return tuple(float(sigmas[min(max(int(round(t)), 0), len(sigmas) - 1)]) for t in timesteps)


def _call_level(params) -> Optional[float]:
    sigma = getattr(params, "sigma", None)
    try:
        return float(sigma.flatten()[0]) if hasattr(sigma, "flatten") else float(sigma)
    except (TypeError, ValueError, IndexError):
        return None


def img2img_executed_steps(steps: int, denoising: float) -> int:
    """Steps img2img really samples: A1111's t_enc = int(min(dn, 0.999) * steps), plus one."""
    return max(1, int(min(float(denoising), 0.999) * int(steps)) + 1)
