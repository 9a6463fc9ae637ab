"""Benchmark: a CFG-batched U-Net loop, stock vs RAU-Net vs MSW-MSA vs both, and the reference, side by side.

    python -m hidiffusion_ext.devtools.bench --family sd15 --size 1024 --steps 6 [--repeat 5] [--json out.json]
    python -m hidiffusion_ext.devtools.bench --overhead [--sizes 512 1024 2048]
    python -m hidiffusion_ext.devtools.bench --table out/*.json

A benchmark, not a test. One process, one set of random weights: ldm U-Nets in the shape of SD1.5 / SDXL (SDXL with
depth-1 transformers, see devtools/models.py), A1111-style SDP attention installed at class level, and, when
``hidiffusion`` and ``diffusers`` are installed, the reference on the same weights (diffusers' own converter).
After one warm-up loop per configuration, the configurations run round-robin ``--repeat`` times; each figure is
the min / median / max of those runs, and every ratio is taken between medians. Peak memory per configuration:
``torch.cuda.max_memory_allocated`` on CUDA, the growth of the process's peak RSS on CPU (Linux: the peak is reset
through /proc/self/clear_refs before each run). "predicted" is the cost model's compute ratio (core/cost_model.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from ..core import msw_msa
from ..core.cost_model import schedule_ratio
from ..core.presets import block_roles, plan_for, resolve
from ..core.settings import HiDiffusionSettings
from ..core.unet_map import inspect_unet
from ..ldm.unet_patch import apply_hidiffusion
from .attention import sdp_attention

SHAPES = {"sd15": ("sd1", 8, 768), "sdxl": ("sdxl", 64, 2048)}  # ldm shape, heads / head channels, context dim
OURS = {"raunet": (True, False), "mswmsa": (False, True), "both": (True, True)}


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


class Memory:
    """Peak memory of one run, in bytes above what was allocated (CUDA) or resident (CPU) when it started."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")  # resets VmHWM (the peak RSS) to the current RSS
            except OSError:
                pass
            self.base = _status_kb("VmRSS")

    def peak(self) -> Optional[int]:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() - self.base
        peak = _status_kb("VmHWM")
        return None if peak is None or self.base is None else (peak - self.base) * 1024


def _status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Bench:
    """The configurations of one benchmark, each a callable that runs the whole ``steps`` loop once."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
        self.unet, self.params, self.name = build(args.family, args.width_scale)
        self.unet = self.unet.to(self.device, self.dtype)
        latent = args.size // 8
        self.latent = (latent, latent)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(2, 4, latent, latent, generator=g).to(self.device, self.dtype)  # uncond + cond
        self.t = torch.full((2,), 500.0, device=self.device)
        self.context = torch.randn(2, 77, self.params["context_dim"], generator=g).to(self.device, self.dtype)
        self.configs: Dict[str, Callable[[], None]] = {"baseline": self._ours(None)}
        for label, (raunet, mswmsa) in OURS.items():
            self.configs[label] = self._ours(HiDiffusionSettings(raunet=raunet, mswmsa=mswmsa))
        self.twin = None if args.no_reference else self._reference_twin()
        if self.twin is not None:
            self.configs["reference_baseline"] = self._reference(False)
            self.configs["reference_both"] = self._reference(True)
        if args.configs:  # a subset, for more repeats of what a comparison needs in the same time
            wanted = {"baseline", *args.configs}
            self.configs = {label: run for label, run in self.configs.items() if label in wanted}

    def _ours(self, settings):
        def run():
            if settings is None:
                for _ in range(self.args.steps):
                    self.unet(self.x, self.t, context=self.context)
                return
            with apply_hidiffusion(self.unet, settings, steps=self.args.steps, seed=0) as handle:
                for step in range(self.args.steps):
                    handle.set_step(step)
                    self.unet(self.x, self.t, context=self.context)
        return run

    def _reference_twin(self):
        try:
            from hidiffusion import apply_hidiffusion as ref_apply  # noqa: F401

            from .models import to_diffusers
        except ImportError:
            return None
        twin = to_diffusers(self.unet.float().cpu(), self.params, self.name).to(self.device, self.dtype)
        self.unet.to(self.device, self.dtype)
        twin._num_timesteps = self.args.steps
        return twin

    def _reference(self, patched: bool):
        from hidiffusion import apply_hidiffusion as ref_apply
        from hidiffusion import remove_hidiffusion as ref_remove

        def loop():
            for _ in range(self.args.steps):  # a whole loop: the reference's call counters stay aligned to step 0
                self.twin(self.x, self.t, encoder_hidden_states=self.context)

        def run():
            if not patched:
                return loop()
            ref_apply(self.twin)
            try:
                loop()
            finally:
                ref_remove(self.twin)
        return run

    def predicted(self) -> Dict[str, float]:
        unet_map = inspect_unet(self.unet)
        family = self.args.family
        roles = block_roles(unet_map, plan_for(family))
        schedule = resolve(family, self.latent, self.args.steps, HiDiffusionSettings()).schedule
        return {label: schedule_ratio(unet_map, roles, family, self.latent, schedule, raunet, mswmsa)
                for label, (raunet, mswmsa) in OURS.items()}

    def run(self) -> dict:
        peaks: Dict[str, List[int]] = {label: [] for label in self.configs}
        with torch.no_grad(), sdp_attention():
            seconds = _interleaved(self.configs, self.args.repeat, self.device, Memory(self.device), peaks)
        return self.report(seconds, peaks)

    def report(self, seconds, peaks) -> dict:
        configs = {label: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "runs_s": s,
                           "peak_bytes": max(peaks[label]) if peaks[label] else None} for label, s in seconds.items()}
        median = {label: c["median_s"] for label, c in configs.items()}
        ratios = {f"{label}/baseline": median[label] / median["baseline"] for label in OURS if label in median}
        if "reference_both" in median and "reference_baseline" in median and "both/baseline" in ratios:
            ratios["reference_both/reference_baseline"] = median["reference_both"] / median["reference_baseline"]
            ratios["ours_both/reference_both"] = median["both"] / median["reference_both"]
            ratios["ours_ratio/reference_ratio"] = ratios["both/baseline"] / ratios["reference_both/reference_baseline"]
            # the same comparison within each round, then the median: robust to a shared machine's slow drift
            rounds = zip(seconds["both"], seconds["baseline"], seconds["reference_both"], seconds["reference_baseline"])
            ratios["ours_ratio/reference_ratio, paired"] = statistics.median(
                (both / base) / (ref_both / ref_base) for both, base, ref_both, ref_base in rounds)
        a = self.args
        return {"family": a.family, "size": a.size, "latent": list(self.latent), "steps": a.steps,
                "width": self.params["model_channels"], "device": a.device,
                "device_name": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
                "dtype": a.dtype, "batch": 2, "repeat": a.repeat, "configs": configs, "ratios": ratios,
                "predicted": self.predicted(), "torch": torch.__version__}


def format_report(r: dict) -> str:
    lines = [f"HiDiffusion bench: {r['family']} {r['size']} px (latent {r['latent'][0]}x{r['latent'][1]}), {r['steps']} "
             f"steps, {r['width']} base channels, {r['device_name']} {r['dtype']}, CFG batch {r['batch']}, "
             f"{r['repeat']} interleaved repeats",
             f"  {'config':<20} {'median s':>9} {'min s':>8} {'max s':>8} {'peak MiB':>9}  {'/ its baseline':>14}  predicted"]
    base = {label: ("reference_baseline" if label.startswith("reference") else "baseline") for label in r["configs"]}
    for label, c in r["configs"].items():
        ratio = c["median_s"] / r["configs"][base[label]]["median_s"] if base[label] in r["configs"] else float("nan")
        peak = f"{c['peak_bytes'] / 2**20:9.0f}" if c["peak_bytes"] is not None else f"{'n/a':>9}"
        predicted = f"{r['predicted'][label]:.3f}" if label in r["predicted"] else ""
        lines.append(f"  {label:<20} {c['median_s']:9.3f} {c['min_s']:8.3f} {c['max_s']:8.3f} {peak}  {ratio:14.3f}  {predicted}")
    for name, value in r["ratios"].items():
        lines.append(f"  {name:<36} {value:6.3f}")
    return "\n".join(lines)


def markdown_table(reports: List[dict]) -> str:
    """One row per benchmark run: medians (min-max), peak memory and the ratios, for docs/testing.md."""
    rows = ["| model | size | steps | repeats | device, dtype | ours base s | ours both s | ours both/base | predicted | "
            "ref base s | ref both s | ref both/base | ours/ref ratio (paired) | peak MiB base → both |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        c = r["configs"]
        cell = functools.partial(_seconds_cell, c)
        mib = functools.partial(_mib_cell, c)
        ratios = r["ratios"]
        ref = f"{ratios['reference_both/reference_baseline']:.3f}" if "reference_both/reference_baseline" in ratios else "–"
        versus = f"{ratios['ours_ratio/reference_ratio']:.3f}" if "ours_ratio/reference_ratio" in ratios else "–"
        if "ours_ratio/reference_ratio, paired" in ratios:
            versus += f" ({ratios['ours_ratio/reference_ratio, paired']:.3f})"
        rows.append(f"| {r['family']} ({r['width']} ch) | {r['size']}² | {r['steps']} | {r['repeat']} | "
                    f"{r['device_name']}, {r['dtype']} | {cell('baseline')} | {cell('both')} | "
                    f"{ratios['both/baseline']:.3f} | {r['predicted']['both']:.3f} | "
                    f"{cell('reference_baseline')} | {cell('reference_both')} | {ref} | {versus} | "
                    f"{mib('baseline')} → {mib('both')} |")
    return "\n".join(rows)


def _seconds_cell(configs: dict, label: str) -> str:
    if label not in configs:
        return "–"
    c = configs[label]
    return f"{c['median_s']:.2f} ({c['min_s']:.2f}–{c['max_s']:.2f})"


def _mib_cell(configs: dict, label: str) -> str:
    peak = configs.get(label, {}).get("peak_bytes")
    return "n/a" if peak is None else f"{peak / 2**20:.0f}"


def window_overhead(args) -> List[dict]:
    """MSW-MSA's own cost: the windowed call minus the same attention on already-windowed tokens, per size.

    The attention and the transformer block are the level-0 ones of the benchmark's U-Net (SD1.5 shape).
    """
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    unet, _, _ = build("sd15", args.width_scale)
    unet = unet.to(device, dtype)
    block = unet.input_blocks[1][1].transformer_blocks[0]
    attn1 = block.attn1
    context = torch.randn(2, 77, block.attn2.to_k.in_features, device=device, dtype=dtype)
    results = []
    with torch.no_grad(), sdp_attention():
        for size in args.sizes:
            side = size // 8
            x = torch.randn(2, side * side, attn1.to_q.in_features, device=device, dtype=dtype)
            for k in (0, 1):  # an unshifted window grid and a shifted one (the shift lives in the gather index)
                grid = msw_msa.window_grid((side, side), k)
                windows = msw_msa.window_partition(x, grid)

                def block_forward(grid=grid, x=x):
                    attn1.forward = lambda h, context=None, **kw: msw_msa.windowed_attention(
                        lambda w: type(attn1).forward(attn1, w), h, grid)
                    try:
                        return block(x, context=context)
                    finally:
                        del attn1.forward

                runs = {"windowed": lambda grid=grid, x=x: msw_msa.windowed_attention(lambda w: attn1(w), x, grid),
                        "attention_only": lambda windows=windows: attn1(windows),
                        "block": block_forward,
                        # the copies on their own: a direct figure where the gap above is within the noise
                        "copies": lambda grid=grid, x=x: msw_msa.window_reverse(msw_msa.window_partition(x, grid), grid)}
                times = _interleaved(runs, args.repeat, device)
                median = {label: statistics.median(t) for label, t in times.items()}
                overhead = median["windowed"] - median["attention_only"]
                results.append({"size": size, "tokens": side * side, "shift_k": k, "width": attn1.to_q.in_features,
                                "median_s": median, "overhead_s": overhead,
                                "overhead_of_windowed_attention": overhead / median["windowed"],
                                "overhead_of_block": overhead / median["block"],
                                "copies_of_block": median["copies"] / median["block"]})
    return results


def _interleaved(runs: Dict[str, Callable], repeat: int, device, memory: Optional[Memory] = None,
                 peaks: Optional[Dict[str, List[int]]] = None) -> Dict[str, List[float]]:
    """Seconds per run of each callable: one warm-up each (kernels, allocator, the reference's class swap), then
    ``repeat`` rounds, round-robin so that a shared machine's drift hits every label alike. With ``memory``, each
    run's peak goes into ``peaks[label]``."""
    for run in runs.values():
        run()
    times: Dict[str, List[float]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            if memory is not None:
                memory.start()
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[label].append(time.perf_counter() - start)
            peak = memory.peak() if memory is not None else None
            if peak is not None:
                peaks[label].append(peak)
    return times


def format_overhead(results: List[dict]) -> str:
    lines = ["MSW-MSA overhead: windowed attention call minus the attention alone on pre-windowed tokens (medians)",
             f"  {'image':>6} {'tokens':>7} {'shift':>5} {'windowed s':>11} {'attn only s':>11} {'block s':>9} "
             f"{'overhead':>9} {'% of attn':>9} {'% of block':>10} {'copies s':>9} {'% of block':>10}"]
    for r in results:
        m = r["median_s"]
        lines.append(f"  {r['size']:>6} {r['tokens']:>7} {r['shift_k']:>5} {m['windowed']:11.4f} {m['attention_only']:11.4f} "
                     f"{m['block']:9.4f} {r['overhead_s']:9.4f} {100 * r['overhead_of_windowed_attention']:8.1f}% "
                     f"{100 * r['overhead_of_block']:9.1f}% {m['copies']:9.4f} {100 * r['copies_of_block']:9.1f}%")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(SHAPES), default="sd15")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width-scale", type=float, default=None,
                        help="fraction of the real 320 base channels (default: 1 on cuda, 0.25 on cpu)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved timed runs per configuration")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference even if installed")
    parser.add_argument("--configs", nargs="+", choices=["baseline", *OURS, "reference_baseline", "reference_both"],
                        help="run only these configurations (and baseline, which every ratio needs)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--overhead", action="store_true", help="measure MSW-MSA's partition/reverse overhead instead")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="image sides for --overhead")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print a Markdown table of earlier --json files")
    args = parser.parse_args(argv)
    if args.table:
        reports = [json.load(open(path)) for path in args.table]
        print(markdown_table([r for r in reports if "configs" in r]))
        return
    if args.width_scale is None:
        args.width_scale = 1.0 if args.device.startswith("cuda") else 0.25
    result = window_overhead(args) if args.overhead else Bench(args).run()
    print(format_overhead(result) if args.overhead else format_report(result), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
