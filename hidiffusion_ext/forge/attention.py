"""MSW-MSA on Forge's attention-replace contract: q, k and v arrive projected, (B, h*w, heads*dim_head).

to_q, to_k, to_v and to_out each act on one token at a time, so windowing q, k and v alike and un-windowing the
result before to_out equals windowing the hidden states as the reference does (design.md §5). For odd grids this
holds up to rounding: the bicubic resize is linear and its weights sum to one, so it commutes with them.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

import torch

from ..core import msw_msa

# (q, k, v, extra_options) -> attention output, Forge's attn1 replace signature.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]
# (q, k, v, heads, mask, **host keywords) -> attention output, the host kernel's signature.
AttentionFunction = Callable[..., torch.Tensor]
# What a host's block puts into extra_options because its CrossAttention passes the same value to its kernel as a
# keyword (ComfyUI lineage: reForge main passes attn_precision, fp32 for SD2.x, without which SD2.1 in fp16 turns
# black). Forge main, Neo and Classic pass (q, k, v, heads[, mask]) only and put none there; Classic's kernels take no
# more. A keyword a host adds to its own kernel call belongs here, so the kernel inside the windows gets it too.
HOST_KERNEL_KEYWORDS = ("attn_precision",)


def host_keywords(extra_options: dict) -> dict:
    """The keywords the host's own attention call passes its kernel, as the block gave them to the attn1 replace."""
    return {name: extra_options[name] for name in HOST_KERNEL_KEYWORDS if name in extra_options}


def forge_attention(q, k, v, heads, mask=None, **keywords):
    """Forge's attention kernel as selected now; bound at call time because Forge picks it at start-up."""
    import backend.attention

    return backend.attention.attention_function(q, k, v, heads, mask, **keywords)


def host_attention(unet) -> AttentionFunction:
    """The kernel the host's own CrossAttention calls, looked up at call time where it lives.

    ldm_patched's attention module (Forge Classic, reForge main; ComfyUI lineage) keeps its choice in the module
    global ``optimized_attention``; Forge's backend (main, Neo) in backend.attention.attention_function. The module is
    the one the U-Net's attention class is defined in, so the host is recognised by what it has, not by its name.
    """
    attn = next((m.attn1 for m in unet.modules() if hasattr(m, "attn1")), None)
    module = sys.modules.get(type(attn).__module__) if attn is not None else None
    if module is None or not hasattr(module, "optimized_attention"):
        return forge_attention

    def ldm_patched_attention(q, k, v, heads, mask=None, **keywords):
        return module.optimized_attention(q, k, v, heads, mask, **keywords)

    return ldm_patched_attention


def self_attention(prior: Optional[Attend] = None, attention: Optional[AttentionFunction] = None) -> Attend:
    """Plain self-attention on projected q/k/v: a replace another extension set on the block, else the kernel."""
    if prior is not None:
        return prior
    kernel = attention or forge_attention

    def attend(q, k, v, extra_options):
        # attn1 never gets a mask in Forge; the host's keywords (its precision) hold inside the windows too
        return kernel(q, k, v, extra_options["n_heads"], None, **host_keywords(extra_options))

    return attend


def windowed(attend: Attend, q, k, v, extra_options: dict, grid: msw_msa.WindowGrid,
             per_window: bool = False) -> torch.Tensor:
    """Attention inside the 4 shifted windows of ``grid`` (design.md §5 steps 3-7), on projected q/k/v.

    ``per_window``: ``attend`` is another tool's attention that reads the batch (StyleAlign shares attention across
    it, by cond/uncond indices): it gets one call per window with the batch as the host built it.
    """
    windows = [msw_msa.window_partition(t, grid) for t in (q, k, v)]
    if not per_window:
        return msw_msa.window_reverse(attend(*windows, extra_options), grid)
    batch = q.shape[0]
    per = [w.view(batch, 4, *w.shape[1:]) for w in windows]  # windows are batch-major: item b, window i at 4b + i
    out = torch.stack([attend(*(w[:, i].contiguous() for w in per), extra_options) for i in range(4)], dim=1)
    return msw_msa.window_reverse(out.view(batch * 4, *out.shape[2:]), grid)
