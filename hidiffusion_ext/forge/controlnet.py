"""ControlNet with RAU-Net on Forge, through patches on the clone only (design.md §12.3).

Forge's ControlNet objects (backend/patcher/controlnet.py) call ``transformer_options["controlnet_model_function_wrapper"]``
instead of their model when one is set, with x, hint, timesteps, context, y, the ControlNet object (``model``) and its
cldm encoder (``inner_model``). The wrapper runs the encoder under the geometry the U-Net forward of this call will
have and hands back residuals of exactly the skips' sizes, so Forge's ``apply_control`` (which drops, with "warning
control could not be applied", anything it cannot add) always adds them. A wrapper set before ours is chained.

ControlNet objects of ComfyUI's newer ControlBase (reForge main's ldm_patched/modules/controlnet.py) get the options as
an argument and call their model directly, never the wrapper: recognised by having no ``transformer_options`` attribute
(Forge's sampler sets it on each linked object per call), their encoder's own forward is overridden on the instance for
the pass instead (``follow_geometry``), before the first U-Net call, and restored when the pass is removed.

T2I-Adapters (features computed once per image size and cached) and ControlNet-LLLite (conditioning cached at the
stock token counts) cannot follow RAU-Net's sizes: the pass keeps RAU-Net off for them, with a note.
"""

from __future__ import annotations

from typing import Optional

from ..core.control_encoder import EncoderMismatch, check_encoder
from ..core.pass_state import HiDiffusionPass

WRAPPER_KEY = "controlnet_model_function_wrapper"
T2I_NOTE = ("RAU-Net skipped: Forge computes a T2I-Adapter's features once per image size, so they cannot follow "
            "RAU-Net's sizes (MSW-MSA still on)")
LLLITE_NOTE = "RAU-Net skipped: ControlNet-LLLite keeps its conditioning at the stock token counts (MSW-MSA still on)"


def controlnet_wrapper(hd_pass: HiDiffusionPass, prior=None):
    """The clone's ControlNet model function wrapper for this pass."""
    labels, matches = {}, {}  # per ControlNet object: its label; per encoder: whether it has the U-Net's layout

    def wrapper(**kwargs):
        call = (lambda: prior(**kwargs)) if prior is not None else (lambda: _run_encoder(kwargs))
        x, encoder = kwargs.get("x"), kwargs.get("inner_model")
        if hd_pass.removed or x is None or not hd_pass.raunet_active:
            return call()  # a T2I-Adapter (no x), or nothing to follow
        label = labels.setdefault(id(kwargs.get("model")), f"{type(encoder).__name__} (unit {len(labels) + 1})")
        hd_pass.stats.control_units = len(labels)
        latent_hw = (int(x.shape[-2]), int(x.shape[-1]))
        if _matches(encoder, hd_pass, matches, label):
            return hd_pass.run_control_encoder(encoder, latent_hw, call, label)
        return hd_pass.fit_control(call(), latent_hw, label)

    wrapper._hidiffusion_prior = prior  # restored when a later pass strips this one's patches
    return wrapper


def _run_encoder(kwargs):
    """What get_control does without a wrapper: a ControlNet gets x and the hint on its device, a T2I-Adapter
    (called without x, once per image size) the hint alone."""
    hint = kwargs["hint"]
    if "x" not in kwargs:
        return kwargs["inner_model"](hint)
    hint = hint.to(getattr(kwargs.get("model"), "device", hint.device))
    return kwargs["inner_model"](x=kwargs["x"], hint=hint, timesteps=kwargs["timesteps"], context=kwargs["context"],
                                 y=kwargs.get("y"))


def _matches(encoder, hd_pass: HiDiffusionPass, cache: dict, label: str) -> bool:
    if id(encoder) not in cache:
        try:
            check_encoder(encoder, hd_pass.unet_map)
            cache[id(encoder)] = True
        except EncoderMismatch as mismatch:
            hd_pass.add_note(f"ControlNet {label}: {mismatch}; its residuals are pooled to RAU-Net's sizes instead")
            cache[id(encoder)] = False
    return cache[id(encoder)]


def blocker(controlnets, model_options: dict) -> Optional[str]:
    """The note for a control type RAU-Net cannot run with, or None."""
    if any(type(c).__name__ == "T2IAdapter" for c in controlnets):
        return T2I_NOTE
    patches = model_options.get("transformer_options", {}).get("patches", {})
    if any(type(p).__name__ == "control_net_lllite_patch" for p in patches.get("attn1_patch", ())):
        return LLLITE_NOTE
    return None


def linked_controlnets(first) -> list:
    """The ControlNet objects chained from ``first`` (Forge links them through ``previous_controlnet``)."""
    found = []
    while first is not None and len(found) < 64:
        found.append(first)
        first = getattr(first, "previous_controlnet", None)
    return found


def control_watch(hd_pass: HiDiffusionPass, encoders: EncoderOverrides):
    """A conditioning modifier, before every denoiser call: control added to the clone after ours that RAU-Net cannot
    follow turns it off before the first U-Net call it would reach; ControlNets that never call the wrapper get their
    encoder overridden for the pass."""
    def watch(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        if hd_pass.raunet_active and not hd_pass.removed:
            controlnets = [c for entry in [*cond, *(uncond or [])] for c in linked_controlnets(entry.get("control"))]
            note = blocker(controlnets, model_options)
            if note:
                hd_pass.skip_raunet(note)
            for control in controlnets:
                if not reads_wrapper(control):
                    encoders.follow(control)
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    return watch


def reads_wrapper(control) -> bool:
    """Forge's ControlBase (Forge main, Neo, Classic, reForge newmain_newforge) reads the wrapper from the
    ``transformer_options`` the sampler sets on it per call; ComfyUI's newer one (reForge main) has no such attribute."""
    return hasattr(control, "transformer_options")


class EncoderOverrides:
    """The pass's instance-forward overrides of ControlNet encoders that are called directly (no wrapper)."""

    def __init__(self, hd_pass: HiDiffusionPass):
        self.hd_pass = hd_pass
        self._undo = {}  # id(encoder) -> restore function
        self._labels = {}

    def follow(self, control) -> None:
        encoder = getattr(control, "control_model", None)
        if encoder is None or id(encoder) in self._undo or not hasattr(encoder, "forward"):
            return
        label = f"{type(encoder).__name__} (unit {len(self._labels) + 1})"
        self._labels[id(encoder)] = label
        self.hd_pass.stats.control_units = len(self._labels)
        matches = _matches(encoder, self.hd_pass, {}, label)
        self._undo[id(encoder)] = _override_forward(encoder, self.hd_pass, label, matches)

    def undo(self) -> None:
        for restore in self._undo.values():
            restore()
        self._undo.clear()


_NO_INSTANCE_FORWARD = object()


def _override_forward(encoder, hd_pass: HiDiffusionPass, label: str, matches: bool):
    """``encoder.forward`` runs under the geometry of the U-Net forward it feeds; returns the restore function."""
    prior = encoder.__dict__.get("forward", _NO_INSTANCE_FORWARD)

    def forward(*args, **kwargs):
        def call():
            if prior is _NO_INSTANCE_FORWARD:
                return type(encoder).forward(encoder, *args, **kwargs)
            return prior(*args, **kwargs)

        x = kwargs.get("x", args[0] if args else None)
        if hd_pass.removed or not hd_pass.raunet_active or not hasattr(x, "shape"):
            return call()  # a stale override passes through
        latent_hw = (int(x.shape[-2]), int(x.shape[-1]))
        keyed = {}

        def listed():  # ComfyUI's newer cldm returns {"output": [per skip], "middle": [one]}, the pass takes a list
            out = call()
            if not isinstance(out, dict):
                return out
            keyed.update(out)
            return [*out.get("output", []), *out.get("middle", [])]

        fitted = (hd_pass.run_control_encoder(encoder, latent_hw, listed, label) if matches
                  else hd_pass.fit_control(listed(), latent_hw, label))
        if not keyed:
            return fitted
        n = len(keyed.get("output", []))
        return {**keyed, "output": fitted[:n], "middle": fitted[n:]}

    encoder.forward = forward

    def restore():
        if encoder.__dict__.get("forward") is not forward:
            return  # replaced since by someone else, whose override now owns the chain
        if prior is _NO_INSTANCE_FORWARD:
            del encoder.forward
        else:
            encoder.forward = prior

    return restore
