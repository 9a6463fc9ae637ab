"""What the Script's hooks do, kept out of scripts/ so that the script file is glue only."""

from __future__ import annotations

import logging

from . import fields, session, xyz_axes
from .arguments import HiDiffusionArgumentError, ScriptArgs, parse, parse_named

log = logging.getLogger("hidiffusion")


def arguments(p, args) -> ScriptArgs:
    """UI/API arguments with this X/Y/Z cell's values on top."""
    parsed = parse(args)
    cell = xyz_axes.overrides(p)
    if not cell:
        return parsed
    return parse_named({**parsed.as_dict(), **cell})


def start(p, args) -> None:
    """process(): clear our infotext (X/Y/Z shares the dict between cells), validate, begin."""
    for key in fields.infotext_keys():
        p.extra_generation_params.pop(key, None)
    try:
        parsed = arguments(p, args)
    except HiDiffusionArgumentError as error:
        log.error("%s", error)
        session.fail_generation(p, error)
        return
    if parsed.enabled:
        session.begin(p, parsed)


def patch_pass(p, latent_hw, fallback_hook: str = "") -> None:
    """fallback_hook names the A1111 1.7-1.9 hook that stands in for process_before_every_sampling (console)."""
    generation = session.active()
    if generation is not None and generation.p is p:
        generation.patch_pass(p, latent_hw, fallback_hook)


def first_pass_latent(p):
    return p.height // 8, p.width // 8


def hires_latent(p):
    return p.hr_upscale_to_y // 8, p.hr_upscale_to_x // 8
