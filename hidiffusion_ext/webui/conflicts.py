"""Other U-Net tools active in a pass, and what HiDiffusion does next to each: compose, yield, or run in a set order.

Checked when a pass is patched, from what the tools left on the model (Forge: the UnetPatcher's patches; A1111:
the U-Net's modules, the enabled scripts, the selected SD U-Net). The rules and why (design.md §11.7):
- Deep Shrink (Forge's Kohya HRFix, wcde's sd-webui-kohya-hiresfix, DeepShrinkHires.fix) shrinks the same deep
  path that RAU-Net shrinks, to the same end: RAU-Net yields for the pass, MSW-MSA stays.
- HyperTile tiles the same top-level self-attention into smaller tiles than MSW-MSA's 4 windows: MSW-MSA yields
  on the blocks HyperTile tiles (A1111: its per-module switch; the forks' ComfyUI node: every call whose tokens it
  re-cut, decided by the Forge adapter per call), RAU-Net stays.
- Token merging (ToMe: A1111's tomesd, Forge's attn1 patch) merges the tokens of the same self-attention before it
  runs, for the same end as MSW-MSA (a cheaper top-level attention): MSW-MSA yields on the blocks it merges
  (A1111: the blocks tomesd patched at a level it merges; Forge: every call whose queries it merged), RAU-Net stays.
  Windows over merged tokens would window a token list that is no longer the image grid.
- A tool that replaces the top-level self-attention (StyleAlign's shared attention, any ``set_model_replace_all`` on
  attn1) runs inside each MSW-MSA window, once per window with the batch as it built it: shared stays shared
  (within the window), windows stay windows.
- MultiDiffusion, Tiled Diffusion, any tiler: composes; a tile at or below the native size runs without RAU-Net
  (core TileGate).
- SAG, PAG (middle block), FreeU (skip scaling): compose.
Every decision is a note for the console and the infotext.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

COMPOSE = "compose"
RAUNET_YIELDS = "RAU-Net yields"
WINDOWS_YIELD = "MSW-MSA yields"
WINDOWS_YIELD_PER_CALL = "MSW-MSA yields per call"
INSIDE_WINDOWS = "inside windows"

DEEP_SHRINK_NOTE = "{tool} shrinks the deep blocks as RAU-Net does: RAU-Net off for this pass, MSW-MSA on"
HYPERTILE_NOTE = "HyperTile tiles the top-level self-attention: MSW-MSA left to it on {count} of {total} blocks"
PER_CALL_NOTE = "{tool} tiles the top-level self-attention: MSW-MSA left to it on every call it tiles"
INSIDE_NOTE = "{tool} replaces the top-level self-attention: it runs inside each MSW-MSA window"
COMPOSE_NOTE = "{tool}: composes"
TILING_NOTE = "{tool}: composes; tiles at or below the native size run without RAU-Net"
TOME = "Token merging"
TOME_NOTE = TOME + " (ratio {ratio:g}) merges the top-level self-attention's tokens: MSW-MSA left to it on {count} of " \
                   "{total} blocks"
TOME_PER_CALL_NOTE = TOME + " merges the top-level self-attention's tokens: MSW-MSA left to it on every call it merges"
TOOL_NOTES = {TOME: TOME_PER_CALL_NOTE}  # a tool whose action's usual wording would misname what it does

# Forge: (fragment of a patch's module or name, tool, what it does to the U-Net). Kohya's node keeps ComfyUI's name.
FORGE_TOOLS = (
    ("patchmodeladddownscale", "Kohya HRFix (Deep Shrink)", RAUNET_YIELDS),
    ("kohya", "Kohya HRFix (Deep Shrink)", RAUNET_YIELDS),
    ("hypertile", "HyperTile", WINDOWS_YIELD_PER_CALL),
    ("tomesd", TOME, WINDOWS_YIELD_PER_CALL),
    ("stylealign", "StyleAlign", INSIDE_WINDOWS),
    ("perturbed_attention", "PAG", COMPOSE),
    ("forge_sag", "SAG", COMPOSE),
    ("freeu", "FreeU", COMPOSE),
    ("multidiffusion", "MultiDiffusion", COMPOSE),
    ("tiled_diffusion", "MultiDiffusion", COMPOSE),
)
# A1111: an always-on script, by class name or title, when its first argument (enabled) is True.
A1111_SCRIPTS = {
    "KohyaHiresFix": ("Kohya Hires.fix (Deep Shrink)", RAUNET_YIELDS),
    "Tiled Diffusion": ("Tiled Diffusion", COMPOSE),
}
TILERS = ("MultiDiffusion", "Tiled Diffusion")
A1111_DEEP_SHRINK_UNETS = {"DeepShrinkHiresFixUNet": "DeepShrinkHires.fix"}
HYPERTILE_PARAMS = "__webui_hypertile_params"  # what A1111's HyperTile sets on each attn1 it wraps


@dataclass(frozen=True)
class Decision:
    tool: str
    action: str
    note: str
    windows: Tuple[int, ...] = ()  # WINDOWS_YIELD: the windowed blocks left to the tool (all when empty)


def apply_decisions(patch, decisions: Sequence[Decision]) -> List[str]:
    """Carry the decisions out on a pass's patch; returns the notes (the patch logs each once)."""
    for decision in decisions:
        if decision.action == RAUNET_YIELDS and patch.settings.raunet:
            patch.skip_raunet(decision.note)
        elif decision.action == WINDOWS_YIELD and patch.settings.mswmsa:
            patch.yield_windows(decision.windows or None, decision.tool)
            patch.add_note(decision.note)
        elif decision.action == WINDOWS_YIELD_PER_CALL and patch.settings.mswmsa:
            patch.add_note(decision.note)  # the Forge adapter leaves each call the tool re-cut to it
        elif decision.action in (INSIDE_WINDOWS, COMPOSE):
            patch.add_note(decision.note)
    return [d.note for d in decisions]


# -- Forge and its forks: the patches on the UnetPatcher ----------------------------------------------------
def forge_decisions(unet_patcher, own=lambda fn: False) -> List[Decision]:
    """What the tools that patched ``unet_patcher`` before us get; ``own(fn)`` tells HiDiffusion's patches."""
    options = getattr(unet_patcher, "model_options", {}) or {}
    transformer = options.get("transformer_options", {})
    found = {}
    for kind, fn in _forge_patches(options, transformer):
        if own(fn):
            continue
        tool = _forge_tool(fn)
        if tool is None and kind == "attn1 top":
            tool = (_name(fn), INSIDE_WINDOWS)
        if tool is not None:
            found.setdefault(tool[0], tool[1])
    return [_decision(tool, action) for tool, action in found.items()]


def _forge_patches(options: dict, transformer: dict) -> Iterable[Tuple[str, object]]:
    for name, patches in transformer.get("patches", {}).items():
        for fn in patches if isinstance(patches, (list, tuple)) else ():
            yield name, fn
    for key, fn in transformer.get("patches_replace", {}).get("attn1", {}).items():
        yield ("attn1 top" if key and key[0] in ("input", "output") else "attn1 middle"), fn
    for name in ("model_function_wrapper", "sampler_cfg_function"):
        if options.get(name) is not None:
            yield name, options[name]
    for fn in options.get("sampler_post_cfg_function", ()) or ():
        yield "sampler_post_cfg_function", fn


def _forge_tool(fn) -> Optional[Tuple[str, str]]:
    where = f"{_module(fn)}.{_name(fn)}".lower()
    return next(((tool, action) for fragment, tool, action in FORGE_TOOLS if fragment in where), None)


# -- A1111: modules, scripts and the SD U-Net option -----------------------------------------------------
def a1111_decisions(p, windowed_blocks: Sequence[object], window_downsample: int = 1) -> List[Decision]:
    """What the tools active for ``p`` get; ``windowed_blocks`` are the transformer blocks whose attn1 MSW-MSA
    windows, in order, at a level ``window_downsample`` times smaller than the latent."""
    decisions, total = [], len(windowed_blocks)
    tiled = [i for i, block in enumerate(windowed_blocks)
             if getattr(getattr(block.attn1, HYPERTILE_PARAMS, None), "enabled", False)]
    if tiled:
        decisions.append(Decision("HyperTile", WINDOWS_YIELD, HYPERTILE_NOTE.format(count=len(tiled), total=total),
                                  tuple(tiled)))
    merged = {i: ratio for i, block in enumerate(windowed_blocks)
              if (ratio := tome_ratio(block, window_downsample)) is not None}
    if merged:
        note = TOME_NOTE.format(ratio=max(merged.values()), count=len(merged), total=total)
        decisions.append(Decision(TOME, WINDOWS_YIELD, note, tuple(merged)))
    decisions += [_decision(tool, action) for tool, action in _a1111_scripts(p)]
    unet = getattr(_sd_unet(), "current_unet", None)
    tool = A1111_DEEP_SHRINK_UNETS.get(type(unet).__name__)
    if tool:
        decisions.append(_decision(tool, RAUNET_YIELDS))
    return decisions


def tome_ratio(block, downsample: int) -> Optional[float]:
    """The ratio at which tomesd merges ``block``'s self-attention tokens at a level ``downsample`` times smaller
    than the latent, or None. tomesd.apply_patch makes every transformer block a ``ToMeBlock`` with ``_tome_info``
    and merges where the level's downsample is at most ``max_downsample`` (A1111 applies it with 1: the top level).
    tomesd.remove_patch restores the class but leaves ``_tome_info`` behind, so the class decides."""
    if type(block).__name__ != "ToMeBlock":
        return None
    info = getattr(block, "_tome_info", None)
    args = info.get("args", {}) if isinstance(info, dict) else {}
    ratio = float(args.get("ratio", 0) or 0)
    if ratio > 0 and args.get("merge_attn", True) and downsample <= int(args.get("max_downsample", 1)):
        return ratio
    return None


def _a1111_scripts(p) -> List[Tuple[str, str]]:
    found = []
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", ()) or ():
        entry = A1111_SCRIPTS.get(type(script).__name__) or A1111_SCRIPTS.get(_title(script))
        args = (getattr(p, "script_args", None) or ())[getattr(script, "args_from", 0):getattr(script, "args_to", 0)]
        if entry and args and args[0] is True and not getattr(script, "disable", False):
            found.append(entry)
    return found


def _title(script) -> str:
    try:
        return str(script.title())
    except Exception:  # another extension's title(): never let it break our pass
        return ""


def _sd_unet():
    try:
        from modules import sd_unet
    except ImportError:  # not in a webui (tests, the Python API)
        return None
    return sd_unet


# -- helpers ------------------------------------------------------------------------------------------------
def _decision(tool: str, action: str) -> Decision:
    notes = {RAUNET_YIELDS: DEEP_SHRINK_NOTE, INSIDE_WINDOWS: INSIDE_NOTE, WINDOWS_YIELD_PER_CALL: PER_CALL_NOTE}
    note = TOOL_NOTES.get(tool) or notes.get(action) or (TILING_NOTE if tool in TILERS else COMPOSE_NOTE)
    return Decision(tool, action, note.format(tool=tool))


def _module(fn) -> str:
    return str(getattr(fn, "__module__", None) or getattr(type(fn), "__module__", ""))


def _name(fn) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)
