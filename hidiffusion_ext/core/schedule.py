"""When each RAU-Net part is on, as step ranges of the current sampling pass (design.md §3, §4.2).

Thresholds are ``int(N * ratio)`` exactly as in the reference, but ``i`` is the explicit step index
of the pass (given by the host), never a count of forward calls (design.md §9.1).
"""

from __future__ import annotations

from dataclasses import dataclass


def switch_step(steps: int, ratio: float) -> int:
    """First step at which a phase of length ``ratio`` is over (the reference floors N*ratio)."""
    return int(steps * ratio)


@dataclass(frozen=True)
class RauSchedule:
    """Half-open step ranges [start, end) of the dilated downsample (RAD) and of block pooling."""

    steps: int
    rad: range
    pool: range

    def rad_active(self, step: int) -> bool:
        return step in self.rad

    def pool_active(self, step: int) -> bool:
        return step in self.pool

    def describe(self) -> str:
        return f"RAD steps {_span(self.rad)}, pooling steps {_span(self.pool)} of {self.steps}"


def _span(r: range) -> str:
    return "none" if len(r) == 0 else f"{r.start}-{r.stop - 1}"


def build_schedule(family: str, steps: int, t1: float, t2: float, aggressive: bool, aggressive_ratio: float) -> RauSchedule:
    """The reference's role assignment per family (design.md §4.2; note the T1/T2 role swap)."""
    if family == "sd15":
        rad, pool = range(switch_step(steps, t1)), range(switch_step(steps, t2))
    elif family == "sdxl_turbo":
        rad, pool = range(0), range(switch_step(steps, t1))
    elif aggressive:
        start = switch_step(steps, aggressive_ratio)
        rad, pool = range(start), range(start, switch_step(steps, t1))
    else:
        rad, pool = range(switch_step(steps, t2)), range(switch_step(steps, t1))
    return RauSchedule(steps=steps, rad=rad, pool=pool)
