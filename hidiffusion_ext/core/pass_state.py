"""One sampling pass of HiDiffusion, independent of how a host lets us hook its U-Net.

Both adapters (ldm/sgm module patches, Forge UnetPatcher patches) subclass HiDiffusionPass, and the webui
session talks to either through the same contract: ``set_step``, ``remove``, ``stats``, ``resolved_for`` and
``notes``. The pass owns the step, the schedule per latent size, the per-forward geometry, the window shifts
and the statistics.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from . import msw_msa, raunet
from .control_encoder import fit_residuals, under_geometry
from .cost_model import schedule_ratio
from .geometry import STOCK, ForwardGeometry, TileGate, feature_sizes, forward_geometry
from .presets import BlockRoles, ResolvedSchedule, resolve
from .settings import HiDiffusionSettings
from .unet_map import UNetMap

log = logging.getLogger("hidiffusion")


@dataclass
class PassStats:
    """What HiDiffusion actually changed during the pass (for honest infotext and logs)."""

    forwards: int = 0
    rad_forwards: int = 0
    pool_forwards: int = 0
    windowed_calls: int = 0
    modified_steps: Set[int] = field(default_factory=set)
    control_units: int = 0  # ControlNet encoders patched to run under the same RAU-Net geometry
    control_forwards: int = 0  # their forwards that ran under a changed geometry
    native_tile_forwards: int = 0  # forwards on a tile or crop at native size: RAU-Net off for them (TileGate)
    yielded_window_calls: int = 0  # windowed-block calls left to another tool that splits the same attention

    @property
    def modified(self) -> bool:
        return bool(self.modified_steps)


@dataclass
class ForwardState:
    """Decisions for the U-Net forward in progress; reset when input block 0 starts."""

    latent_hw: Optional[Tuple[int, int]] = None
    geometry: ForwardGeometry = STOCK
    pre_pool_size: Optional[Tuple[int, int]] = None
    skip_sizes: Dict[int, Tuple[int, int]] = field(default_factory=dict)

    @property
    def rad(self) -> bool:
        return self.geometry.rad

    @property
    def pool(self) -> bool:
        return self.geometry.pool


def check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def checked_arguments(settings, steps, seed) -> HiDiffusionSettings:
    """Validate what every adapter's apply takes, before anything is touched."""
    settings = HiDiffusionSettings() if settings is None else settings
    if not isinstance(settings, HiDiffusionSettings):
        raise ValueError(f"settings must be a HiDiffusionSettings, got {type(settings).__name__}")
    check_count("steps", steps, minimum=1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return settings


class HiDiffusionPass(ABC):
    """A live patch for one sampling pass: ``set_step(i)`` before each sampler step, ``remove()`` at the end."""

    def __init__(self, unet_map: UNetMap, family: str, roles: BlockRoles, settings: HiDiffusionSettings,
                 steps: int, shifts, non_aggressive_model: bool):
        self.unet_map = unet_map
        self.family = family
        self.roles = roles
        self.settings = settings
        self.steps = steps
        self.step = 0
        self.stats = PassStats()
        self.notes: List[str] = []  # what the infotext's "HiDiffusion note" must say about this pass
        self.raunet_skipped = False  # a part of the pipeline (e.g. a control type) cannot follow RAU-Net's sizes
        self.removed = False
        self.last_forward_end: Optional[float] = None  # perf_counter() when the latest U-Net forward returned
        self._shifts = shifts
        self._non_aggressive_model = non_aggressive_model
        self._resolved: Dict[Tuple[int, int], ResolvedSchedule] = {}
        self._state = ForwardState()
        self._warned = False
        self._control_warned: Set[str] = set()
        self.tile_gate: Optional[TileGate] = None  # None (the Python API): every forward follows the schedule
        self._yielded_windows: Dict[int, str] = {}  # windowed block index -> the tool it is left to
        self._all_windows_yielded_to: Optional[str] = None

    @abstractmethod
    def remove(self) -> None:
        """Undo the patch; harmless when called again."""

    def set_step(self, step: int, steps: Optional[int] = None) -> None:
        """0-based step of the current sampling pass; drives the RAU-Net schedule and the window shifts.

        ``steps`` updates the pass length when the host only learns it once sampling has started.
        """
        check_count("step", step, minimum=0)
        if steps is not None and steps != self.steps:
            check_count("steps", steps, minimum=1)
            self.steps = steps
            self._resolved.clear()
        self.step = step

    def resolved_for(self, latent_hw: Tuple[int, int]) -> ResolvedSchedule:
        """The schedule used for a latent of ``latent_hw`` (auto values filled in)."""
        key = (int(latent_hw[0]), int(latent_hw[1]))
        if key not in self._resolved:
            self._resolved[key] = resolve(self.family, key, self.steps, self.settings, self._non_aggressive_model)
        return self._resolved[key]

    @property
    def raunet_active(self) -> bool:
        """RAU-Net is on for this pass and nothing has turned it off (a yield, a control type it cannot follow)."""
        return self.settings.raunet and not self.raunet_skipped

    def skip_raunet(self, reason: str) -> None:
        """Keep RAU-Net off for the rest of the pass, and say why in the infotext and the console."""
        self.raunet_skipped = True
        self.add_note(reason)

    def set_tile_gate(self, pass_latent: Tuple[int, int], native_latent: int) -> None:
        """Forwards smaller than ``pass_latent`` and at most ``native_latent``² run without RAU-Net (tiles, crops)."""
        self.tile_gate = TileGate((int(pass_latent[0]), int(pass_latent[1])), int(native_latent))

    def yield_windows(self, indices: Optional[Iterable[int]], tool: str) -> None:
        """Leave windowed blocks ``indices`` (None: all) to ``tool``, which splits the same self-attention
        (design.md §11.7). The shift is still drawn for them, so the other blocks keep their shifts."""
        if indices is None:
            self._all_windows_yielded_to = tool
        for index in indices or ():
            self._yielded_windows[int(index)] = tool

    def add_note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)
            log.info("HiDiffusion: %s", note)

    # -- per forward ------------------------------------------------------------------------------------
    def geometry_for(self, latent_hw: Tuple[int, int]) -> ForwardGeometry:
        """RAD and pooling for a forward on ``latent_hw`` at the current step: the U-Net and ControlNets ask here."""
        raunet_on = self.raunet_active and not self._native_tile(latent_hw)
        return forward_geometry(self.resolved_for(latent_hw).schedule, self.step, self.family, raunet_on)

    def _native_tile(self, latent_hw: Tuple[int, int]) -> bool:
        return self.tile_gate is not None and self.tile_gate.native_tile(latent_hw)

    def begin_forward(self, latent_hw: Tuple[int, int]) -> None:
        self._state = ForwardState(latent_hw=latent_hw, geometry=self.geometry_for(latent_hw))
        self.stats.forwards += 1
        if self.raunet_active and self._native_tile(latent_hw):
            self.stats.native_tile_forwards += 1
        self.stats.rad_forwards += self._state.rad
        self.stats.pool_forwards += self._state.pool
        if self._state.geometry.changes_sizes:
            self.stats.modified_steps.add(self.step)

    def end_forward(self) -> None:
        """The U-Net forward returned (its last block ran): the end of the pass's sampling time so far."""
        self.last_forward_end = time.perf_counter()

    def predicted_ratio(self, latent_hw: Tuple[int, int]) -> float:
        """The cost model's U-Net compute of this pass over the stock one (core/cost_model.py). Windows another tool
        took on every call (Token merging, HyperTile) save nothing of ours: MSW-MSA counts as off then."""
        windows_ran = self.settings.mswmsa and not (self.stats.yielded_window_calls and not self.stats.windowed_calls)
        return schedule_ratio(self.unet_map, self.roles, self.family, latent_hw, self.resolved_for(latent_hw).schedule,
                              self.raunet_active, windows_ran)

    def pool(self, h):
        self._state.pre_pool_size = tuple(h.shape[-2:])
        return raunet.block_pool(h)

    def restore(self, h):
        size, self._state.pre_pool_size = self._state.pre_pool_size, None
        return h if size is None else raunet.block_restore(h, size)

    def window_grid(self, index: int, n_tokens: int, latent_hw: Tuple[int, int]) -> Optional[msw_msa.WindowGrid]:
        """The windows for windowed block ``index`` in this call, or None for plain attention."""
        u = self._shifts.draw(self.step, index)  # drawn first, as the reference does
        if index in self._yielded_windows or self._all_windows_yielded_to:
            self.stats.yielded_window_calls += 1
            return None
        hw = msw_msa.token_grid(latent_hw, n_tokens)
        if hw is None:
            self._warn_once(f"MSW-MSA skipped: {n_tokens} tokens do not form a grid for latent {latent_hw}")
            return None
        grid = msw_msa.window_grid(hw, msw_msa.shift_index(u))
        if grid.resized and self.settings.odd_windows == "global":
            return None
        self.stats.windowed_calls += 1
        self.stats.modified_steps.add(self.step)
        return grid

    # -- ControlNet (design.md §12) ---------------------------------------------------------------------
    def run_control_encoder(self, encoder, latent_hw: Tuple[int, int], call, label: str) -> list:
        """One call of a ControlNet ``encoder`` (``call()``), under the geometry the U-Net forward on ``latent_hw``
        will have at this step; its residuals come back with exactly the skips' sizes."""
        geometry = self.geometry_for(latent_hw)
        with under_geometry(encoder, self.roles, geometry):
            residuals = call()
        self.stats.control_forwards += geometry.changes_sizes
        return self.fit_control(residuals, latent_hw, label, geometry=geometry)

    def fit_control(self, residuals, latent_hw: Tuple[int, int], label: str, positions=None, geometry=None) -> list:
        """The guard: residuals average-pooled to the sizes they are added at, with one warning per model and pass.

        ``positions`` index ``feature_sizes`` (skips, then the middle); by default residual i goes to skip i and the
        last one to the middle block, as a ControlNet's outputs do.
        """
        sizes = feature_sizes(self.unet_map, self.roles, latent_hw, geometry or self.geometry_for(latent_hw))
        if positions is None:
            positions = [*range(len(residuals) - 1), len(sizes) - 1]
        fitted, changed = fit_residuals(list(residuals), [sizes[min(i, len(sizes) - 1)] for i in positions])
        if changed and label not in self._control_warned:
            self._control_warned.add(label)
            log.warning("HiDiffusion: control model %s gave residuals that do not follow RAU-Net's sizes; "
                        "average-pooled them to the skip sizes", label)
        return fitted

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("HiDiffusion: %s", message)
