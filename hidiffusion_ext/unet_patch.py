"""HiDiffusion on an ldm/sgm ``UNetModel`` (A1111's SD1/SD2/SDXL), as a removable handle.

Only submodules are touched, never ``UNetModel.forward`` (other extensions replace that):
- a pre-hook on ``input_blocks[0]`` reads the latent size of each forward and fixes its plan;
- the RAD Downsample runs its own forward with a dilated stride-4 conv geometry;
- forward hooks pool one input block's output and restore it after the matching output block;
- every Upsample interpolates to the size of the skip it will be concatenated with;
- MSW-MSA wraps the instance ``attn1.forward`` and calls through to whatever attention the host installed.
All state lives in the handle; ``remove()`` restores every module exactly.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Dict, Optional, Set, Tuple

from torch import nn

from . import msw_msa, raunet
from .patch_ledger import PatchLedger, sweep
from .presets import (
    BlockRoles,
    ResolvedSchedule,
    block_roles,
    detect_family,
    is_non_aggressive_model,
    plan_for,
    resolve,
)
from .settings import HiDiffusionSettings
from .shifts import ShiftRng, make_shift_source
from .unet_map import UNetMap, inspect_unet, is_downsample, is_upsample, transformer_blocks

log = logging.getLogger("hidiffusion")

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, HiDiffusionHandle] = weakref.WeakKeyDictionary()


@dataclass
class PassStats:
    """What HiDiffusion actually changed during the pass (for honest infotext and logs)."""

    forwards: int = 0
    rad_forwards: int = 0
    pool_forwards: int = 0
    windowed_calls: int = 0
    modified_steps: Set[int] = field(default_factory=set)

    @property
    def modified(self) -> bool:
        return bool(self.modified_steps)


@dataclass
class _ForwardState:
    """Decisions for the U-Net forward in progress; reset by the input_blocks[0] pre-hook."""

    latent_hw: Optional[Tuple[int, int]] = None
    rad: bool = False
    pool: bool = False
    pre_pool_size: Optional[Tuple[int, int]] = None
    skip_sizes: Dict[int, Tuple[int, int]] = field(default_factory=dict)


class HiDiffusionHandle:
    """A live patch. ``set_step(i)`` before each sampler step; ``remove()`` (or leave the ``with``) to undo."""

    def __init__(self, unet, unet_map: UNetMap, family: str, roles: BlockRoles, settings: HiDiffusionSettings,
                 steps: int, shifts, non_aggressive_model: bool):
        self.unet_ref = weakref.ref(unet)
        self.unet_map = unet_map
        self.family = family
        self.settings = settings
        self.steps = steps
        self.step = 0
        self.stats = PassStats()
        self.roles = roles
        self._shifts = shifts
        self._non_aggressive_model = non_aggressive_model
        self._resolved: Dict[Tuple[int, int], ResolvedSchedule] = {}
        self._state = _ForwardState()
        self._ledger = PatchLedger()
        self._warned = False
        self.removed = False

    # -- public -----------------------------------------------------------------------------------------
    def set_step(self, step: int, steps: Optional[int] = None) -> None:
        """0-based step of the current sampling pass; drives the RAU-Net schedule and the window shifts.

        ``steps`` updates the pass length when the host only learns it once sampling has started.
        """
        _check_count("step", step, minimum=0)
        if steps is not None and steps != self.steps:
            _check_count("steps", steps, minimum=1)
            self.steps = steps
            self._resolved.clear()
        self.step = step

    def resolved_for(self, latent_hw: Tuple[int, int]) -> ResolvedSchedule:
        """The schedule this handle uses for a latent of ``latent_hw`` (auto values filled in)."""
        key = (int(latent_hw[0]), int(latent_hw[1]))
        if key not in self._resolved:
            self._resolved[key] = resolve(self.family, key, self.steps, self.settings, self._non_aggressive_model)
        return self._resolved[key]

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        unet = self.unet_ref()
        if unet is not None and _ACTIVE.get(unet) is self:
            del _ACTIVE[unet]
        self._ledger.undo()

    def __enter__(self) -> HiDiffusionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- installation -----------------------------------------------------------------------------------
    def _install(self, unet: nn.Module, attn_blocks) -> None:
        s, roles, ledger = self.settings, self.roles, self._ledger
        inputs, outputs = unet.input_blocks, unet.output_blocks
        ledger.hook(inputs[0], self._begin_forward, pre=True)
        if s.raunet:
            if self.family != "sdxl_turbo":  # the reference has no RAD for Turbo (spec §4.2)
                down = next(m for m in inputs[roles.rad_block].children() if is_downsample(m))
                ledger.override_forward(down, self._rad_forward(down))
            ledger.hook(inputs[roles.pool_block], self._pool_output)
            ledger.hook(outputs[roles.restore_block], self._restore_output)
        for j, source in roles.upsample_skip:
            ledger.hook(inputs[source], self._record_skip_size(source))
            up = next(m for m in outputs[j].children() if is_upsample(m))
            ledger.override_forward(up, self._sized_upsample(up, source))
        if s.mswmsa:
            for index, tb in enumerate(attn_blocks):
                ledger.override_forward(tb.attn1, self._windowed_attn1(index))

    # -- per-forward behaviour --------------------------------------------------------------------------
    def _begin_forward(self, module, args):
        latent_hw = tuple(int(n) for n in args[0].shape[-2:])
        schedule = self.resolved_for(latent_hw).schedule
        raunet_on = self.settings.raunet
        self._state = _ForwardState(
            latent_hw=latent_hw,
            rad=raunet_on and self.family != "sdxl_turbo" and schedule.rad_active(self.step),
            pool=raunet_on and schedule.pool_active(self.step),
        )
        self.stats.forwards += 1
        self.stats.rad_forwards += self._state.rad
        self.stats.pool_forwards += self._state.pool
        if self._state.rad or self._state.pool:
            self.stats.modified_steps.add(self.step)

    def _rad_forward(self, down: nn.Module):
        def make(inner):
            def forward(x, *args, **kwargs):
                if not self._state.rad:
                    return inner(x, *args, **kwargs)
                with raunet.dilated(down.op):
                    return inner(x, *args, **kwargs)
            return forward
        return make

    def _pool_output(self, module, args, output):
        if not self._state.pool:
            return None
        self._state.pre_pool_size = tuple(output.shape[-2:])
        return raunet.block_pool(output)

    def _restore_output(self, module, args, output):
        size, self._state.pre_pool_size = self._state.pre_pool_size, None
        return None if size is None else raunet.block_restore(output, size)

    def _record_skip_size(self, source: int):
        def hook(module, args, output):
            self._state.skip_sizes[source] = tuple(output.shape[-2:])
        return hook

    def _sized_upsample(self, up: nn.Module, source: int):
        def make(inner):
            def forward(x, *args, **kwargs):
                size = self._state.skip_sizes.get(source)
                if size is None:
                    return inner(x, *args, **kwargs)
                x = raunet.upsample_to(x, size)
                return up.conv(x) if getattr(up, "use_conv", True) else x
            return forward
        return make

    def _windowed_attn1(self, index: int):
        def make(inner):
            def forward(x, context=None, *args, **kwargs):
                latent_hw = self._state.latent_hw
                if context is not None or latent_hw is None:  # cross-attention, or not inside a U-Net forward
                    return inner(x, context, *args, **kwargs)
                u = self._shifts.draw(self.step, index)  # drawn first, as the reference does
                hw = msw_msa.token_grid(latent_hw, x.shape[1])
                if hw is None:
                    self._warn_once(f"MSW-MSA skipped: {x.shape[1]} tokens do not form a grid for latent {latent_hw}")
                    return inner(x, context, *args, **kwargs)
                grid = msw_msa.window_grid(hw, msw_msa.shift_index(u))
                if grid.resized and self.settings.odd_windows == "global":
                    return inner(x, context, *args, **kwargs)
                self.stats.windowed_calls += 1
                self.stats.modified_steps.add(self.step)
                return msw_msa.windowed_attention(lambda w: inner(w, None, *args, **kwargs), x, grid)
            return forward
        return make

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("HiDiffusion: %s", message)


def apply_hidiffusion(
    unet: nn.Module,
    settings: Optional[HiDiffusionSettings] = None,
    *,
    steps: int,
    seed: Optional[int] = None,
    shift_rng: ShiftRng = None,
    model_name: str = "",
) -> HiDiffusionHandle:
    """Patch ``unet`` for a sampling pass of ``steps`` steps and return the handle.

    Any earlier HiDiffusion patch on ``unet`` is removed first, so applying never stacks.
    Raises UnsupportedModelError (a ValueError) for models HiDiffusion cannot patch, leaving them untouched.
    ``model_name`` (checkpoint name) only feeds "auto": turbo / inpaint / playground hints (spec §2).
    """
    settings = HiDiffusionSettings() if settings is None else settings
    if not isinstance(settings, HiDiffusionSettings):
        raise ValueError(f"settings must be a HiDiffusionSettings, got {type(settings).__name__}")
    _check_count("steps", steps, minimum=1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    unet_map = inspect_unet(unet)
    family = detect_family(unet_map, settings.family, model_name)
    roles = block_roles(unet_map, plan_for(family))
    attn_blocks = windowed_transformers(unet, roles)
    shifts = make_shift_source(shift_rng, seed, len(attn_blocks))
    remove_hidiffusion(unet)

    non_aggressive = is_non_aggressive_model(unet_map, model_name)
    handle = HiDiffusionHandle(unet, unet_map, family, roles, settings, steps, shifts, non_aggressive)
    try:
        handle._install(unet, attn_blocks)
    except BaseException:
        handle.remove()
        raise
    _ACTIVE[unet] = handle
    return handle


def windowed_transformers(unet: nn.Module, roles: BlockRoles):
    """The transformer blocks whose self-attention MSW-MSA windows, in execution order."""
    blocks = [unet.input_blocks[i] for i in roles.window_inputs] + [unet.output_blocks[j] for j in roles.window_outputs]
    return [tb for block in blocks for tb in transformer_blocks(block)]


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def remove_hidiffusion(unet: nn.Module) -> bool:
    """Remove any HiDiffusion patch from ``unet`` (also ones left by an earlier copy of this module)."""
    handle = _ACTIVE.pop(unet, None)
    if handle is not None:
        handle.remove()
    return sweep(unet) > 0 or handle is not None


def active_handle(unet: nn.Module) -> Optional[HiDiffusionHandle]:
    return _ACTIVE.get(unet)
