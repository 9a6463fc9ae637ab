"""sd-webui-controlnet's units under RAU-Net on A1111 (design.md §12.2).

Its U-Net hook (scripts/hook.py of v1.1.455) calls every unit's ``param.control_model(x=..., hint=..., ...)`` before
the U-Net's own blocks run, sums the residuals per index, and adds them with ``aligned_adding``, which resizes any
mismatch with nearest. The pass overrides each control model's instance forward through its ledger:
- a ControlNet whose encoder matches the U-Net runs under the geometry of the forward it feeds: exact sizes;
- a T2I-Adapter's features are average-pooled to the sizes of the blocks they are added after;
- a ControlNet whose encoder does not match is run as it is, and its residuals are fitted to the skips (the guard),
  with one warning per model and pass.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..core.control_encoder import EncoderMismatch, check_encoder
from ..core.pass_state import HiDiffusionPass

CONTROLNET, T2I_ADAPTER = "controlnet", "t2i_adapter"
MIDDLE = -1  # the middle block's output in core.geometry.feature_sizes
# hook.py adds T2I features to h after these input blocks (and, on SDXL, the last one after the middle block).
T2I_INJECTION = {"sd15": (2, 5, 8, 11), "sdxl": (3, 5, 8, MIDDLE)}


def control_forward(hd_pass: HiDiffusionPass, kind: str, encoder: Optional[nn.Module], label: str) -> Callable:
    """``make_forward(inner)`` for the patch ledger: the control model's forward, following the pass's geometry."""
    if kind == CONTROLNET and encoder is not None:
        try:
            check_encoder(encoder, hd_pass.unet_map)
        except EncoderMismatch as mismatch:
            hd_pass.add_note(f"ControlNet {label}: {mismatch}; its residuals are pooled to RAU-Net's sizes instead")
            encoder = None
    positions = T2I_INJECTION["sd15" if hd_pass.unet_map.layout == "sd15" else "sdxl"] if kind == T2I_ADAPTER else None

    def make(inner):
        def forward(*args, **kwargs):
            x = kwargs.get("x", args[0] if args else None)
            if hd_pass.removed or x is None or not hasattr(x, "shape"):  # a stale override passes through
                return inner(*args, **kwargs)
            latent_hw = (int(x.shape[-2]), int(x.shape[-1]))
            if kind == CONTROLNET and encoder is not None:
                return hd_pass.run_control_encoder(encoder, latent_hw, lambda: inner(*args, **kwargs), label)
            return hd_pass.fit_control(inner(*args, **kwargs), latent_hw, label, positions)
        return forward
    return make
