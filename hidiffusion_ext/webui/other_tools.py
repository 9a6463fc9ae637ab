"""Other U-Net tools the readout can see before Generate, named as the console will name them (conflicts.py).

Two sources: Settings, read when the readout is computed (Token merging's ratios, HyperTile's switches), and the
enable checkboxes of other scripts' accordions on the page (Deep Shrink and tilers), which are readout inputs like
the size sliders. What each tool then takes of a pass follows conflicts.py's rules: Deep Shrink takes RAU-Net,
HyperTile and Token merging take MSW-MSA's windows where they act, a tiler composes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .conflicts import TOME

# The title of a script's accordion (or of its InputAccordion, whose checkbox carries it) -> the tool's name in
# the console, and whether it is a Deep Shrink (takes RAU-Net) or a tiler (composes).
DEEP_SHRINK, TILER = "deep shrink", "tiler"
ACCORDION_TOOLS = {
    "Kohya HRFix Integrated": ("Kohya HRFix (Deep Shrink)", DEEP_SHRINK),  # Forge and its forks
    "Kohya Hires.fix": ("Kohya Hires.fix (Deep Shrink)", DEEP_SHRINK),  # wcde/sd-webui-kohya-hiresfix
    "MultiDiffusion Integrated": ("MultiDiffusion", TILER),  # Forge
    "Tiled Diffusion": ("Tiled Diffusion", TILER),  # pkuliyi2015/multidiffusion-upscaler-for-automatic1111
}
KIND_OF_TOOL = dict(ACCORDION_TOOLS.values())  # console name -> DEEP_SHRINK or TILER
TOOL_PREFIX = "tool:"  # readout value names of captured accordions: "tool:<console name>"
HYPERTILE = "HyperTile"


def accordion_tool(component) -> Optional[str]:
    """The readout value name for a script's enable checkbox, or None for any other component.

    The checkbox is the accordion's own (an InputAccordion's hidden checkbox has the title as its label) or the
    first checkbox inside an accordion with a known title (found through Gradio's ``parent`` links, which Gradio 3
    and 4 both set when a block is added to its context).
    """
    if not any(cls.__name__ == "Checkbox" for cls in type(component).__mro__):  # InputAccordion is one too
        return None
    block = component
    for _ in range(4):  # the checkbox, its row or column, the accordion
        known = ACCORDION_TOOLS.get(getattr(block, "label", None))
        if known is not None:
            return TOOL_PREFIX + known[0]
        block = getattr(block, "parent", None)
        if block is None:
            return None
    return None


@dataclass(frozen=True)
class OtherTools:
    """What the other tools will do on one pass, as far as the page and Settings tell before Generate."""

    token_merging: float = 0.0  # ratio from Settings (0: off)
    hypertile: bool = False  # HyperTile on for this pass (Settings)
    deep_shrink: str = ""  # the ticked Deep Shrink's console name
    tiler: str = ""  # the ticked tiler's console name

    def windows_left_to(self, windows_at_top: bool) -> Optional[str]:
        """The tool MSW-MSA yields to: HyperTile tiles wherever it is on; Token merging merges the top level only."""
        if self.hypertile:
            return f"{HYPERTILE} (Settings)"
        if self.token_merging > 0 and windows_at_top:
            return f"{TOME} (ratio {self.token_merging:g}, Settings)"
        return None


def page_tools(values: Mapping[str, Any]) -> dict:
    """The ticked accordions among the readout's values, as OtherTools fields."""
    found = {}
    for name, value in values.items():
        if not name.startswith(TOOL_PREFIX) or not value:
            continue
        tool = name[len(TOOL_PREFIX):]
        found.setdefault("deep_shrink" if KIND_OF_TOOL.get(tool) == DEEP_SHRINK else "tiler", tool)
    return found


def settings_tools(tab: str, hires: bool, opts=None) -> OtherTools:
    """Token merging and HyperTile as Settings give them to a pass (A1111's processing.py get_token_merging_ratio
    and the HyperTile script's process/before_hr); nothing outside a webui."""
    if opts is None:
        try:
            from modules import shared
        except ImportError:
            return OtherTools()
        opts = shared.opts

    def number(name: str) -> float:
        try:
            return float(getattr(opts, name, 0) or 0)
        except (TypeError, ValueError):
            return 0.0

    if tab == "img2img":
        ratio = number("token_merging_ratio_img2img") or number("token_merging_ratio")
    else:
        ratio = (hires and number("token_merging_ratio_hr")) or number("token_merging_ratio")
    hypertile = bool(number("hypertile_enable_unet")) or hires and bool(number("hypertile_enable_unet_secondpass"))
    return OtherTools(token_merging=ratio, hypertile=hypertile)
