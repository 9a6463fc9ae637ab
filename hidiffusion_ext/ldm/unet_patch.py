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

import weakref
from typing import Optional

from torch import nn

from ..core import msw_msa, raunet
from ..core.pass_state import HiDiffusionPass, checked_arguments
from ..core.presets import BlockRoles, block_roles, detect_family, is_non_aggressive_model, plan_for
from ..core.settings import HiDiffusionSettings
from ..core.shifts import ShiftRng, make_shift_source
from ..core.unet_map import UNetMap, inspect_unet, is_downsample, is_upsample, transformer_blocks
from . import control_patch
from .patch_ledger import PatchLedger, sweep

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, HiDiffusionHandle] = weakref.WeakKeyDictionary()


class HiDiffusionHandle(HiDiffusionPass):
    """A live patch. ``set_step(i)`` before each sampler step; ``remove()`` (or leave the ``with``) to undo."""

    def __init__(self, unet, unet_map: UNetMap, family: str, roles: BlockRoles, settings: HiDiffusionSettings,
                 steps: int, shifts, non_aggressive_model: bool):
        super().__init__(unet_map, family, roles, settings, steps, shifts, non_aggressive_model)
        self.unet_ref = weakref.ref(unet)
        self._ledger = PatchLedger()
        self._control_models = set()

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        unet = self.unet_ref()
        if unet is not None and _ACTIVE.get(unet) is self:
            del _ACTIVE[unet]
        self._ledger.undo()

    def patch_control(self, kind: str, model: nn.Module, encoder: Optional[nn.Module] = None, label: str = "") -> None:
        """Make one sd-webui-controlnet unit follow this pass's RAU-Net geometry (ldm/control_patch.py).

        ``model`` is what the hook loop calls (``param.control_model``), ``encoder`` the cldm ControlNet inside it,
        ``kind`` control_patch.CONTROLNET or T2I_ADAPTER. Undone with the pass.
        """
        if not self.settings.raunet:
            return  # stock sizes all pass long: nothing to follow
        self.stats.control_units += 1
        if id(model) not in self._control_models:  # two units may share one model: one override serves both
            self._control_models.add(id(model))
            make_forward = control_patch.control_forward(self, kind, encoder, label or type(model).__name__)
            self._ledger.override_forward(model, make_forward)

    def __enter__(self) -> HiDiffusionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # -- installation -----------------------------------------------------------------------------------
    def _install(self, unet: nn.Module, attn_blocks) -> None:
        s, roles, ledger = self.settings, self.roles, self._ledger
        inputs, outputs = unet.input_blocks, unet.output_blocks
        ledger.hook(inputs[0], self._begin_forward, pre=True)
        ledger.hook(getattr(unet, "out", outputs[-1]), lambda module, args, output: self.end_forward())
        if s.raunet:
            if self.family != "sdxl_turbo":  # the reference has no RAD for Turbo (design.md §4.2)
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
        self.begin_forward(tuple(int(n) for n in args[0].shape[-2:]))

    def _rad_forward(self, down: nn.Module):
        def make(inner):
            def forward(x, *args, **kwargs):
                if not self._state.rad:
                    return inner(x, *args, **kwargs)
                if raunet.is_stock_downsample_conv(down.op):  # the stock conv on even rows/columns: see raunet
                    return inner(raunet.even_rows_and_columns(x), *args, **kwargs)
                with raunet.dilated(down.op):  # e.g. circular padding (A1111's Tiling): the reference's swap
                    return inner(x, *args, **kwargs)
            return forward
        return make

    def _pool_output(self, module, args, output):
        return self.pool(output) if self._state.pool else None

    def _restore_output(self, module, args, output):
        return self.restore(output)

    def _record_skip_size(self, source: int):
        def hook(module, args, output):
            self._state.skip_sizes[source] = tuple(output.shape[-2:])
        return hook

    def _sized_upsample(self, up: nn.Module, source: int):
        def make(inner):
            def forward(x, *args, **kwargs):
                size = self._state.skip_sizes.get(source)
                if size is None or not raunet.sized_to_skip(x.shape[-2:], size, self._state.geometry.changes_sizes):
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
                grid = self.window_grid(index, x.shape[1], latent_hw)
                if grid is None:
                    return inner(x, context, *args, **kwargs)
                return msw_msa.windowed_attention(lambda w: inner(w, None, *args, **kwargs), x, grid)
            return forward
        return make


def apply_hidiffusion(
    unet: nn.Module,
    settings: Optional[HiDiffusionSettings] = None,
    *,
    steps: int,
    seed: Optional[int] = None,
    shift_rng: ShiftRng = None,
    model_name: str = "",
    unet_map: Optional[UNetMap] = None,
) -> HiDiffusionHandle:
    """Patch ``unet`` for a sampling pass of ``steps`` steps and return the handle.

    Any earlier HiDiffusion patch on ``unet`` is removed first, so applying never stacks.
    Raises UnsupportedModelError (a ValueError) for models HiDiffusion cannot patch, leaving them untouched.
    ``model_name`` (checkpoint name) only feeds "auto": turbo / inpaint / playground hints (design.md §2).
    ``unet_map``: the structure map when the caller has already inspected ``unet`` (one inspection per pass).
    """
    settings = checked_arguments(settings, steps, seed)
    unet_map = inspect_unet(unet) if unet_map is None else unet_map
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


def remove_hidiffusion(unet: nn.Module) -> bool:
    """Remove any HiDiffusion patch from ``unet`` (also ones left by an earlier copy of this module)."""
    handle = _ACTIVE.pop(unet, None)
    if handle is not None:
        handle.remove()
    return sweep(unet) > 0 or handle is not None


def active_handle(unet: nn.Module) -> Optional[HiDiffusionHandle]:
    return _ACTIVE.get(unet)
