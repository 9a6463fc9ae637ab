"""Step-by-step comparison of this implementation with the reference package (hidiffusion 0.1.10).

Both see the same weights, the same CFG-batched inputs and the same global-RNG window shifts; the
latent trajectory follows the reference's outputs so every step compares like with like.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from ..core.settings import HiDiffusionSettings
from ..ldm.unet_patch import apply_hidiffusion


@dataclass
class ParityResult:
    rel_errors: List[float]  # per step: max |ours - reference| / max |reference|
    stats: object = None  # our PassStats: what the patch really did
    inputs: Optional[list] = None  # the per-step inputs both saw (the reference's trajectory)
    outputs: Optional[list] = None  # our per-step outputs

    @property
    def worst(self) -> float:
        return max(self.rel_errors)


def make_inputs(params: dict, latent_hw: Tuple[int, int], steps: int, batch: int = 2, seed: int = 0):
    """Initial latent, per-step timesteps and a CFG-style batch of two different contexts."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, params["in_channels"], *latent_hw, generator=g)
    context = torch.randn(batch, 7, params["context_dim"], generator=g)
    timesteps = torch.linspace(999, 1, steps)
    return x, context, timesteps


@contextlib.contextmanager
def reference_overrides(ratios: Optional[dict] = None, aggressive: Optional[bool] = None):
    """Temporarily change the reference's module globals (how its large-class schedule is emulated)."""
    import hidiffusion.hidiffusion as ref

    saved = {k: dict(v) for k, v in ref.switching_threshold_ratio_dict.items()}, ref.is_aggressive_raunet
    try:
        for key, (t1, t2) in (ratios or {}).items():
            ref.switching_threshold_ratio_dict[key] = {"T1_ratio": t1, "T2_ratio": t2}
        if aggressive is not None:
            ref.is_aggressive_raunet = aggressive
        yield
    finally:
        ref.switching_threshold_ratio_dict.clear()
        ref.switching_threshold_ratio_dict.update(saved[0])
        ref.is_aggressive_raunet = saved[1]


def run_reference(twin, x, context, timesteps, raunet: bool, mswmsa: bool, rng_seed: int):
    """Reference outputs and the inputs it saw, one U-Net call per step."""
    from hidiffusion import apply_hidiffusion as ref_apply
    from hidiffusion import remove_hidiffusion as ref_remove

    twin._num_timesteps = len(timesteps)
    ref_apply(twin, apply_raunet=raunet, apply_window_attn=mswmsa)
    inputs, outputs = [], []
    torch.manual_seed(rng_seed)
    try:
        with torch.no_grad():
            for t in timesteps:
                inputs.append(x)
                out = twin(x, t.expand(x.shape[0]), encoder_hidden_states=context).sample
                outputs.append(out)
                x = torch.cat([x[:, : out.shape[1]] - 0.05 * out, x[:, out.shape[1]:]], dim=1)  # inpaint: keep mask
    finally:
        ref_remove(twin)
    return inputs, outputs


def run_ours(unet, inputs, context, timesteps, settings: HiDiffusionSettings, rng_seed: int, model_name: str = ""):
    """Our outputs on the reference's inputs, and the PassStats of the patch."""
    outputs = []
    torch.manual_seed(rng_seed)
    with torch.no_grad(), apply_hidiffusion(unet, settings, steps=len(timesteps), shift_rng="global",
                                            model_name=model_name) as handle:
        for i, (x, t) in enumerate(zip(inputs, timesteps)):
            handle.set_step(i)
            outputs.append(unet(x, t.expand(x.shape[0]), context=context))
    return outputs, handle.stats


def compare(unet, twin, params, latent_hw, steps: int, settings: HiDiffusionSettings, model_name: str = "",
            rng_seed: int = 1234, batch: int = 2) -> ParityResult:
    x, context, timesteps = make_inputs(params, latent_hw, steps, batch=batch)
    inputs, ref_out = run_reference(twin, x, context, timesteps, settings.raunet, settings.mswmsa, rng_seed)
    ours, stats = run_ours(unet, inputs, context, timesteps, settings, rng_seed, model_name)
    errors = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, ref_out)]
    return ParityResult(errors, stats, inputs, ours)
