"""Host glue for one generation in A1111 or Forge: patch each sampling pass, track its step, undo, report.

It touches only what it is given (``p``, the sampler's denoiser) and imports no ``modules.*``, so the tests
drive it with small stand-ins. The active generation is module-global on purpose: txt2img and img2img have
separate Script instances but share one U-Net (design.md §11.2).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ..core.cost_model import describe_saving
from ..core.pass_state import HiDiffusionPass
from ..core.presets import plan_for
from ..core.unet_map import UnsupportedModelError
from ..forge.unet_patch import forge_unsupported_reason, is_own_forge_patch, patch_forge_unet, without_hidiffusion
from ..ldm.patch_ledger import sweep
from ..ldm.unet_patch import apply_hidiffusion, remove_hidiffusion, windowed_transformers
from . import conflicts, controlnet_units, fields, host_model, infotext
from .arguments import HiDiffusionArgumentError, ScriptArgs
from .pass_plan import PassPlan, PassSpec, native_latent, plan_pass
from .step_tracking import ScheduleCapture, img2img_executed_steps, step_from_denoiser

log = logging.getLogger("hidiffusion")
if not log.handlers:  # the webuis leave Python logging at WARNING; the per-pass summary is meant to be seen
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@dataclass
class PassRecord:
    key: Tuple[int, bool]  # (batch iteration, hires)
    plan: PassPlan
    patch: HiDiffusionPass  # HiDiffusionHandle (A1111) or ForgeHiDiffusion (Forge): the same contract
    schedule: Optional[ScheduleCapture] = None  # the noise levels the pass's sampler was handed (step_tracking)
    first_call: Optional[float] = None  # perf_counter() at the pass's first denoiser call
    step_sources: Set[str] = field(default_factory=set)  # how the steps were told: by noise level or call count
    fallback_hook: str = ""  # A1111 1.7-1.9: the hook that patched this pass (the console names it)

    @property
    def last_return(self) -> Optional[float]:
        """perf_counter() when the pass's last U-Net forward returned."""
        return self.patch.last_forward_end

    @property
    def seconds(self) -> float:
        """U-Net sampling time: first denoiser call to last U-Net return (A1111 decodes inside p.sample; not counted)."""
        if self.first_call is None or self.last_return is None:
            return 0.0
        return max(0.0, self.last_return - self.first_call)

    @property
    def name(self) -> str:
        return self.plan.spec.name

    @property
    def latent_hw(self) -> Tuple[int, int]:
        return self.plan.spec.latent_hw


_active: Optional[Generation] = None  # the generation being sampled (one at a time in a webui)
last: Optional[Generation] = None  # the most recent finished one, for logs and tests


class Generation:
    """One process_images() call: its arguments, its passes and what they changed."""

    def __init__(self, p, args: ScriptArgs):
        self.p = p
        self.args = args
        self.passes: Dict[Tuple[int, bool], PassRecord] = {}
        self.current: Optional[PassRecord] = None
        self.notes: List[str] = []

    # -- patching ---------------------------------------------------------------------------------------
    def patch_pass(self, p, latent_hw: Tuple[int, int], fallback_hook: str = "") -> None:
        """Patch the U-Net for the sampling pass about to start, whose latent is ``latent_hw``."""
        hires = bool(getattr(p, "is_hr_pass", False))
        key = (int(getattr(p, "iteration", 0)), hires)
        if self.current is not None and self.current.key == key:
            # Forge calls this hook twice for the hires pass: the new patch (on a new clone) replaces the old, and
            # its schedule capture the old one's, on the same sampler
            if self.current.schedule is not None:
                self.current.schedule.undo()
            self.current = None
        self.end_pass()
        forge = host_model.forge_objects(p.sd_model)
        if forge is not None:  # a fork that hands the hires pass the first pass's clone: never run on its patches
            forge.unet = without_hidiffusion(forge.unet)
        unet = host_model.diffusion_model(p.sd_model)
        spec = PassSpec("hires pass" if hires else "first pass", (int(latent_hw[0]), int(latent_hw[1])),
                        _pass_steps(p, hires), hires, _batch_seed(p))
        try:
            model = host_model.model_info(p.sd_model, unet)  # the one inspection of this pass's U-Net
            plan = plan_pass(self.args, model, spec)
        except UnsupportedModelError as error:
            reason = forge_unsupported_reason(forge.unet) if forge else None
            self._note(f"not applied: {reason or error}")
            return
        if not plan.touched:
            return
        common = dict(steps=spec.steps, seed=spec.seed, model_name=model.name, unet_map=model.unet_map)
        if forge:
            decisions = conflicts.forge_decisions(forge.unet, own=is_own_forge_patch)  # before our clone joins them
            patch = patch_forge_unet(forge.unet, plan.settings, **common)
            forge.unet = patch.patcher  # the clone is the undo (Forge resets forge_objects every pass)
        else:
            patch = self._patch_a1111(p, unet, plan.settings, common)
            if patch is None:
                return
            decisions = conflicts.a1111_decisions(p, windowed_transformers(unet, patch.roles),
                                                  2 ** plan_for(patch.family).window_level)
        patch.set_tile_gate(spec.latent_hw, native_latent(plan.family, model.v_768))
        conflicts.apply_decisions(patch, decisions)
        self.current = self.passes[key] = PassRecord(key, plan, patch, ScheduleCapture(getattr(p, "sampler", None)),
                                                          fallback_hook=fallback_hook)

    def _patch_a1111(self, p, unet, settings, common) -> Optional[HiDiffusionPass]:
        """The ldm U-Net and the ControlNet units feeding it; None, with a note, when a unit rules HiDiffusion out."""
        units = controlnet_units.a1111_units(p)
        lllite = next((unit for unit in units if unit.kind == controlnet_units.LLLITE), None)
        if lllite is not None:
            self._note(controlnet_units.LLLITE_NOTE.format(label=lllite.label))
            return None
        patch = apply_hidiffusion(unet, settings, **common)
        try:
            for unit in units:
                patch.patch_control(unit.kind, unit.model, unit.encoder, unit.label)
        except BaseException:
            patch.remove()
            raise
        return patch

    def on_denoiser_call(self, params) -> None:
        if self.current is not None:
            if self.current.first_call is None:
                self.current.first_call = time.perf_counter()
            # A1111 1.7 does not hand its callbacks the denoiser; the running one is the sampler's model_wrap_cfg
            running = getattr(getattr(self.p, "sampler", None), "model_wrap_cfg", None)
            step, steps, source = step_from_denoiser(params, self.current.schedule, running)
            self.current.step_sources.add(source)
            self.current.patch.set_step(step, steps)

    def end_pass(self) -> None:
        record, self.current = self.current, None
        if record is None:
            return
        record.patch.remove()
        if record.schedule is not None:
            record.schedule.undo()
        stats, resolved = record.patch.stats, record.patch.resolved_for(record.latent_hw)
        for note in record.patch.notes:
            self._note(note, echo=False)  # the patch logged it when it happened
        if record.patch.stats.native_tile_forwards:  # the console line below counts them
            self._note(f"{record.name}: {record.patch.stats.native_tile_forwards} tile forwards at native size ran "
                       "without RAU-Net", echo=False)
        control = (f"; {stats.control_units} control unit{'s' if stats.control_units != 1 else ''} under RAU-Net "
                   f"geometry ({stats.control_forwards} resized calls)") if stats.control_units else ""
        tiles = (f"; {stats.native_tile_forwards} tile forwards at native size: RAU-Net off"
                 if stats.native_tile_forwards else "")
        yielded = f"; {stats.yielded_window_calls} attn calls left to other tools" if stats.yielded_window_calls else ""
        predicted = describe_saving(record.patch.predicted_ratio(record.latent_hw))
        steps_by = f"; steps by {' and '.join(sorted(record.step_sources))}" if record.step_sources else ""
        hook = f"; patched at {record.fallback_hook}" if record.fallback_hook else ""
        log.info("HiDiffusion %s %dx%d: %s; %d U-Net calls (%d RAD, %d pooled, %d windowed attn)%s%s%s%s%s; "
                 "%.1f s U-Net sampling, %s predicted", record.name, record.latent_hw[1] * 8, record.latent_hw[0] * 8,
                 _raunet_part(record, resolved), stats.forwards, stats.rad_forwards, stats.pool_forwards, stats.windowed_calls,
                 control, tiles, yielded, steps_by, hook, record.seconds, predicted)

    # -- results ----------------------------------------------------------------------------------------
    @property
    def modified(self) -> bool:
        return any(record.patch.stats.modified for record in self.passes.values())

    def write_infotext(self, extra_generation_params: dict) -> None:
        for key in fields.infotext_keys():
            extra_generation_params.pop(key, None)
        if self.modified or self.notes:  # a change, or a reason why none could be made: both belong to the image
            notes = self.notes + self._idle_part_notes()
            extra_generation_params.update(infotext.to_infotext(self.args, "; ".join(notes) or None))

    def _idle_part_notes(self) -> List[str]:
        """A part that is switched on but changed no step says so: the infotext tells what really ran."""
        records = list(self.passes.values())
        notes = []
        if self.args.raunet and not any(r.patch.stats.rad_forwards or r.patch.stats.pool_forwards for r in records):
            scheduled = [r for r in records if r.patch.raunet_active
                         and not r.patch.stats.native_tile_forwards]  # tiles are noted on their own
            if scheduled:  # e.g. 2 steps: int(2 * 0.4) = 0
                resolved = scheduled[0].patch.resolved_for(scheduled[0].latent_hw)
                notes.append(f"RAU-Net ran on no step ({resolved.schedule.describe()})")
            elif not self.notes:  # otherwise the skip reason (ControlNet, ...) is noted already
                notes.append("RAU-Net ran on no step (auto: no pass above 1.5x the model's native area)")
        if self.args.mswmsa and not any(r.patch.stats.windowed_calls or r.patch.stats.yielded_window_calls
                                        for r in records):  # windows left to another tool are noted with it
            notes.append("MSW-MSA ran on no step")
        return notes

    def _note(self, message: str, echo: bool = True) -> None:
        if message not in self.notes:
            self.notes.append(message)
            if echo:
                log.warning("HiDiffusion: %s", message)


def _raunet_part(record: PassRecord, resolved) -> str:
    """The schedule where RAU-Net runs on the pass; where it does not, that it is off and why, not a schedule."""
    if record.patch.raunet_active:
        return resolved.describe()
    off = f"{resolved.family} {resolved.size_class}: RAU-Net off"
    if record.patch.raunet_skipped:
        return f"{off} for this pass (noted above)"
    return f"{off} ({record.plan.raunet_off_reason})" if record.plan.raunet_off_reason else off


# -- module-level lifecycle, called by the script ---------------------------------------------------------
def begin(p, args: ScriptArgs) -> Generation:
    """Start a generation: undo anything a crashed earlier one left behind, then remember this one."""
    global _active
    cleanup(p)
    _active = Generation(p, args)
    _wrap_sample(p)
    return _active


def fail_generation(p, error: HiDiffusionArgumentError) -> None:
    """Make the request fail with ``error`` before sampling: script hooks swallow exceptions, p.sample does not."""
    cleanup(p)

    def refuse(*args, **kwargs):
        raise error

    p.sample = refuse


def active() -> Optional[Generation]:
    return _active


def on_cfg_denoiser(params) -> None:
    if _active is not None:
        _active.on_denoiser_call(params)


def end_sampling(p) -> None:
    """After each batch's sampling (normal, interrupted or failed): undo the patch, write honest infotext."""
    if _active is not None and _active.p is p:
        _active.end_pass()
        _active.write_infotext(p.extra_generation_params)


def finish(p) -> None:
    """End of the generation (postprocess): the last pass is undone and the infotext final."""
    global _active, last
    generation, _active = _active, None
    if generation is None:
        return
    last = generation
    generation.end_pass()
    generation.write_infotext(p.extra_generation_params)


def cleanup(p=None) -> None:
    """Remove every patch this extension may have left (also from a previous crashed generation)."""
    global _active
    if _active is not None:
        try:
            _active.end_pass()
        finally:
            _active = None
    model = getattr(p, "sd_model", None) if p is not None else None
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if unet is not None:
        remove_hidiffusion(unet)
    for unit in controlnet_units.a1111_units(p) if p is not None else ():
        if hasattr(unit.model, "modules"):
            sweep(unit.model)  # a ControlNet model keeps living between generations


def _wrap_sample(p) -> None:
    """try/finally around each batch's sampling (both passes): A1111 skips postprocess() when sampling raises."""
    original = p.sample
    if getattr(original, "_hidiffusion_wrapped", False):
        original = original._hidiffusion_original

    def sample(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            end_sampling(p)

    sample._hidiffusion_wrapped = True
    sample._hidiffusion_original = original
    p.sample = sample


def _pass_steps(p, hires: bool) -> int:
    """Steps the sampler will run in this pass; refined from the denoiser once sampling starts."""
    if hires:
        return int(getattr(p, "hr_second_pass_steps", 0) or p.steps)
    denoising = getattr(p, "denoising_strength", None)
    if getattr(p, "init_images", None) and denoising is not None:
        return img2img_executed_steps(p.steps, denoising)
    return max(1, int(p.steps))


def _batch_seed(p) -> int:
    """The seed of the first image of the current batch: same infotext, same window shifts."""
    seeds = getattr(p, "all_seeds", None) or [getattr(p, "seed", 0)]
    index = int(getattr(p, "iteration", 0)) * int(getattr(p, "batch_size", 1))
    return int(seeds[min(index, len(seeds) - 1)])


def on_model_loaded(sd_model) -> None:
    """A model (re)load, also the refiner switch mid-sampling: the old patch goes, the generation stays."""
    if _active is not None:
        _active.end_pass()
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    if unet is not None:
        remove_hidiffusion(unet)
