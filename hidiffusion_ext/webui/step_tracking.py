"""Which sampler step a U-Net call belongs to, from what A1111/Forge's CFGDenoiser knows.

``CFGDenoiserParams.sampling_step`` lags one step behind (the sampler callback sets it after the first
model call of a step), so it is not used. ``denoiser.step`` counts denoiser calls of the pass and
``denoiser.total_steps`` is ``steps`` (x2 for second-order samplers), so their ratio gives the step:
Euler 0,1,2,3; Heun/DPM2 0,0,1,1,2,2,3; DDIM/PLMS/UniPC one call per step. ``steps`` is the length of
the current pass: ``p.steps``, the hires steps, or img2img's executed steps.
"""

from __future__ import annotations


def step_of_call(call_index: int, steps: int, total_calls: int) -> int:
    if steps <= 0 or total_calls <= 0:
        return call_index
    calls_per_step = max(1, round(total_calls / steps))
    return call_index // calls_per_step


def step_from_denoiser(params) -> tuple:
    """(step, steps) of the current pass from an on_cfg_denoiser ``CFGDenoiserParams``."""
    denoiser = getattr(params, "denoiser", None)
    steps = getattr(denoiser, "steps", None) or params.total_sampling_steps
    if denoiser is None or getattr(denoiser, "total_steps", None) is None:
        return int(params.sampling_step), int(steps)
    return step_of_call(int(denoiser.step), int(steps), int(denoiser.total_steps)), int(steps)


def img2img_executed_steps(steps: int, denoising: float) -> int:
    """Steps img2img really samples: A1111's t_enc = int(min(dn, 0.999) * steps), plus one."""
    return max(1, int(min(float(denoising), 0.999) * int(steps)) + 1)
