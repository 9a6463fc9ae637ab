"""The schedule strip under the readout: one cell per step of each pass, marked RAD, pooled, both or stock.

Plain HTML whose look lives in the extension's style.css (classes ``hidiffusion-strip*``), drawn with the theme's
own colour variables so it reads in the light and dark themes of A1111 and Forge. The readout line above it says
the same in words (screen readers, the API); the strip carries it as its aria-label too.
"""

from __future__ import annotations

from html import escape
from typing import List, Optional, Sequence

from .pass_plan import PassPlan

CELL_KINDS = {  # (RAD, pooled) -> CSS modifier and the word for the cell's title
    (True, True): ("both", "RAD + pooled"),
    (True, False): ("rad", "RAD"),
    (False, True): ("pool", "pooled"),
    (False, False): ("stock", "stock"),
}
CELL_WORDS = dict(CELL_KINDS.values())  # CSS modifier -> word


def step_kinds(plan: PassPlan, raunet_left: bool = False) -> List[str]:
    """Per step of the pass: "rad", "pool", "both" or "stock" (RAU-Net off, or left to another tool: all stock)."""
    schedule = plan.resolved.schedule
    runs = plan.raunet and not raunet_left
    return [CELL_KINDS[(runs and schedule.rad_active(i), runs and schedule.pool_active(i))][0]
            for i in range(plan.spec.steps)]


def pass_strip(plan: PassPlan, windows: str, raunet_left_to: Optional[str] = None) -> str:
    """One pass: its label, the MSW-MSA state in words (``windows``) and a row of cells."""
    kinds = step_kinds(plan, raunet_left_to is not None)
    w, h = plan.pixel_size
    cells = "".join(f'<span class="hidiffusion-strip-cell hidiffusion-strip-{kind}" title="step {i}: {CELL_WORDS[kind]}">'
                    "</span>" for i, kind in enumerate(kinds))
    summary = _summary(kinds)
    label = f"{plan.spec.name} {w}x{h}, {plan.spec.steps} steps"
    return (f'<div class="hidiffusion-strip-pass">'
            f'<div class="hidiffusion-strip-label">{escape(label)}'
            f'<span class="hidiffusion-strip-windows">{escape(windows)}</span></div>'
            f'<div class="hidiffusion-strip-cells" role="img" aria-label="{escape(label)}: {escape(summary)}">{cells}</div>'
            "</div>")


def strip_html(rows: Sequence[str], enabled: bool) -> str:
    """The whole strip: each pass's row and a legend; dimmed while HiDiffusion is off."""
    if not rows:
        return ""
    legend = "".join(f'<span class="hidiffusion-strip-key"><span class="hidiffusion-strip-cell hidiffusion-strip-{kind}">'
                     f"</span>{word}</span>" for kind, word in CELL_KINDS.values())
    state = "" if enabled else " hidiffusion-strip-off"
    return (f'<div class="hidiffusion-strip{state}">{"".join(rows)}'
            f'<div class="hidiffusion-strip-legend">{legend}</div></div>')


def _summary(kinds: List[str]) -> str:
    """"RAD steps 0-7, stock 8-19": runs of equal cells, for the aria-label."""
    runs, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            span = f"{start}" if i - 1 == start else f"{start}-{i - 1}"
            runs.append(f"{CELL_WORDS[kinds[start]]} steps {span}")
            start = i
    return ", ".join(runs)
