"""Where MSW-MSA's random window shifts come from.

The reference draws ``torch.rand(1)`` from the global RNG once per windowed block call (design.md §5 step 2,
§9.4), which makes images irreproducible and perturbs ancestral noise. The default here is a draw per
(step, windowed block) from a generator seeded by the image seed: the same seed gives the same shifts,
whether the host batches cond/uncond or not and however many U-Net calls a sampler makes per step.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch

_MASK64 = (1 << 64) - 1


class SeededShifts:
    """One uniform per (step, windowed block), from a generator seeded by (seed, step)."""

    def __init__(self, seed: int, n_blocks: int):
        self.seed = int(seed)
        self.n_blocks = n_blocks
        self._cache: Dict[int, list] = {}

    def draw(self, step: int, block: int) -> float:
        row = self._cache.get(step)
        if row is None:
            # splitmix-style mixing so neighbouring seeds and steps give unrelated streams
            mixed = (self.seed * 0x9E3779B97F4A7C15 + (step + 1) * 0xBF58476D1CE4E5B9) & _MASK64
            generator = torch.Generator(device="cpu").manual_seed(mixed & ((1 << 63) - 1))
            row = torch.rand(self.n_blocks, generator=generator).tolist()
            self._cache = {step: row}  # a pass only ever needs the current step
        return row[block]


class GeneratorShifts:
    """One draw per windowed call from a caller's generator, or from the global RNG as the reference does."""

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def draw(self, step: int, block: int) -> float:
        return torch.rand(1, generator=self.generator).item()


ShiftRng = Union[None, str, torch.Generator]


def make_shift_source(shift_rng: ShiftRng, seed: Optional[int], n_blocks: int):
    if shift_rng is None:
        return SeededShifts(0 if seed is None else seed, n_blocks)
    if isinstance(shift_rng, str) and shift_rng == "global":
        return GeneratorShifts(None)
    if isinstance(shift_rng, torch.Generator):
        return GeneratorShifts(shift_rng)
    raise ValueError(f"shift_rng must be None (seeded), 'global' or a torch.Generator; got {shift_rng!r}")
