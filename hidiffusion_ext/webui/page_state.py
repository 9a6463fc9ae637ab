"""What the page knows that no Gradio value carries: which of img2img's resize tabs is selected, and when the server
last changed what the readout reads without an event (a model load, a Settings change).

javascript/hidiffusion.js keeps it in a hidden textbox of ours, as JSON (``{"resize": "by", "version": 3}``), and
sends an input event when it changes, so the readout is computed again with every other current value. The
version comes from ``GET /hidiffusion/v1/readout-version`` (a counter, nothing else).
"""

from __future__ import annotations

import json
import re
from typing import Optional, Tuple

PAGE_STATE = "page_state"  # readout value names
RESIZE_PREVIEW = "resize_preview"
ROUTE = "/hidiffusion/v1/readout-version"
READOUT_OPTIONS = ("token_merging_ratio", "token_merging_ratio_hr", "token_merging_ratio_img2img",
                   "hypertile_enable_unet", "hypertile_enable_unet_secondpass")  # Settings the readout reads

_version = 0
_TARGET = re.compile(r"\bto\s*(?:<[^>]*>\s*)*(\d+)\s*x\s*(\d+)")


def page_state(text) -> dict:
    """The textbox's JSON as a dict; anything unreadable is an empty state (the Resize to tab, version 0)."""
    try:
        state = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def resize_by_size(preview) -> Optional[Tuple[int, int]]:
    """(width, height) from the webui's "resize: from AxB to <span ...>CxD</span>" text; None before an image."""
    match = _TARGET.search(preview) if isinstance(preview, str) else None
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    return (width, height) if width and height else None


def bump(*_args) -> None:
    """A model loaded or a Settings value the readout reads changed: open pages compute their readout again."""
    global _version
    _version += 1


def version() -> dict:
    return {"version": _version}


def register(app) -> None:
    """on_app_started: the route the page polls (a counter: nothing about the model or the settings leaks)."""
    app.add_api_route(ROUTE, version, methods=["GET"])


def watch_settings(opts) -> None:
    """Bump on every change of a Settings value the readout reads. The option's own onchange (the hosts keep one
    per option) still runs first; an option this host lacks (Forge has no HyperTile) is skipped."""
    for key in READOUT_OPTIONS:
        item = getattr(opts, "data_labels", {}).get(key)
        if item is None or getattr(getattr(item, "onchange", None), "hidiffusion_bump", False):
            continue
        item.onchange = _then_bump(getattr(item, "onchange", None))


def _then_bump(previous):
    def onchange():
        if previous is not None:
            previous()
        bump()

    onchange.hidiffusion_bump = True
    return onchange
