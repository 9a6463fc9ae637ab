"""Benchmark: a CFG-batched U-Net loop, plain vs RAU-Net vs MSW-MSA vs both, and against the reference.

    python -m hidiffusion_ext.devtools.bench --family sd15 --size 2048 --steps 20 --width-scale 0.25 [--device cuda]

A benchmark, not a test: it prints seconds and ratios measured side by side in one process. The U-Nets
are random-weight ldm nets in the shape of SD1.5 / SDXL (SDXL with depth-1 transformers; see
devtools/models.py) with A1111-style SDP attention installed at class level. When ``hidiffusion`` and
``diffusers`` are installed, the reference runs on the same weights converted by diffusers' converter.
"""

from __future__ import annotations

import argparse
import time

import torch

from ..core.settings import HiDiffusionSettings
from ..ldm.unet_patch import apply_hidiffusion
from .attention import sdp_attention

SHAPES = {"sd15": ("sd1", 8, 768), "sdxl": ("sdxl", 64, 2048)}  # ldm shape, heads / head channels, context dim


def build(family: str, width_scale: float, seed: int = 0):
    from .models import REFERENCE_NAMES, build_ldm_unet, unet_params

    shape, heads, context_dim = SHAPES[family]
    width = max(32, round(320 * width_scale / 32) * 32)  # GroupNorm(32) needs multiples of 32
    params = unet_params(shape, width)
    params["context_dim"] = context_dim
    if shape == "sd1":
        params["num_heads"] = heads
    else:
        params["num_head_channels"] = max(8, min(heads, width // 2))
    return build_ldm_unet(params, seed), params, REFERENCE_NAMES[shape]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loop(call, steps: int, device, set_step=None) -> float:
    call()  # warm-up (kernels, allocator)
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        if set_step:
            set_step(i)
        call()
    _sync(device)
    return time.perf_counter() - start


def run(args) -> dict:
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    unet, params, name = build(args.family, args.width_scale)
    unet = unet.to(device, dtype)
    latent = args.size // 8
    x = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)  # uncond + cond in one batch
    t = torch.full((2,), 500.0, device=device)
    context = torch.randn(2, 77, params["context_dim"], device=device, dtype=dtype)
    results = {}
    with torch.no_grad(), sdp_attention():
        results["baseline"] = time_loop(lambda: unet(x, t, context=context), args.steps, device)
        for label, raunet, mswmsa in (("raunet", True, False), ("mswmsa", False, True), ("both", True, True)):
            settings = HiDiffusionSettings(raunet=raunet, mswmsa=mswmsa)
            with apply_hidiffusion(unet, settings, steps=args.steps, seed=0) as handle:
                results[label] = time_loop(lambda: unet(x, t, context=context), args.steps, device, handle.set_step)
    if not args.no_reference:
        results.update(time_reference(unet, params, name, x, t, context, args, device, dtype))
    return results


def time_reference(unet, params, name, x, t, context, args, device, dtype) -> dict:
    try:
        from hidiffusion import apply_hidiffusion as ref_apply
        from hidiffusion import remove_hidiffusion as ref_remove

        from .models import to_diffusers
    except ImportError:
        return {}
    twin = to_diffusers(unet.float().cpu(), params, name).to(device, dtype)
    unet.to(device, dtype)
    twin._num_timesteps = args.steps
    out = {}
    with torch.no_grad():
        out["reference_baseline"] = time_loop(lambda: twin(x, t, encoder_hidden_states=context), args.steps, device)
        ref_apply(twin)
        try:
            # the reference counts calls itself; one warm-up call shifts its schedule by one step (design.md §9.2)
            out["reference_both"] = time_loop(lambda: twin(x, t, encoder_hidden_states=context), args.steps, device)
        finally:
            ref_remove(twin)
    return out


def report(args, r: dict) -> str:
    lines = [f"HiDiffusion bench: {args.family} {args.size}px, {args.steps} steps, width x{args.width_scale}, "
             f"{args.device} {args.dtype}, CFG batch 2"]
    for key, seconds in r.items():
        lines.append(f"  {key:<20} {seconds:8.2f} s")
    base = r["baseline"]
    for key in ("raunet", "mswmsa", "both"):
        lines.append(f"  ours {key}/baseline    {r[key] / base:6.3f}  (speed-up x{base / r[key]:.2f})")
    if "reference_both" in r:
        lines.append(f"  reference/its baseline {r['reference_both'] / r['reference_baseline']:6.3f}")
        lines.append(f"  ours both/reference    {r['both'] / r['reference_both']:6.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(SHAPES), default="sd15")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width-scale", type=float, default=1.0, help="fraction of the real 320 base channels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference even if installed")
    args = parser.parse_args(argv)
    print(report(args, run(args)), flush=True)


if __name__ == "__main__":
    main()
