"""MSW-MSA on Forge's attention-replace contract: q, k and v arrive projected, (B, h*w, heads*dim_head).

to_q, to_k, to_v and to_out each act on one token at a time, so windowing q, k and v alike and un-windowing the
result before to_out equals windowing the hidden states as the reference does (design.md §5). For odd grids this
holds up to rounding: the bicubic resize is linear and its weights sum to one, so it commutes with them.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..core import msw_msa

# (q, k, v, extra_options) -> attention output, Forge's attn1 replace signature.
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]
# (q, k, v, heads, mask) -> attention output, backend.attention.attention_function's signature.
AttentionFunction = Callable[..., torch.Tensor]


def forge_attention(q, k, v, heads, mask=None):
    """Forge's attention kernel as selected now; bound at call time because Forge picks it at start-up."""
    import backend.attention

    return backend.attention.attention_function(q, k, v, heads, mask)


def self_attention(prior: Optional[Attend] = None, attention: Optional[AttentionFunction] = None) -> Attend:
    """Plain self-attention on projected q/k/v: a replace another extension set on the block, else the kernel."""
    if prior is not None:
        return prior
    kernel = attention or forge_attention

    def attend(q, k, v, extra_options):
        return kernel(q, k, v, extra_options["n_heads"], None)  # attn1 never gets a mask in Forge

    return attend


def windowed(attend: Attend, q, k, v, extra_options: dict, grid: msw_msa.WindowGrid) -> torch.Tensor:
    """Attention inside the 4 shifted windows of ``grid`` (design.md §5 steps 3-7), on projected q/k/v."""
    windows = [msw_msa.window_partition(t, grid) for t in (q, k, v)]
    return msw_msa.window_reverse(attend(*windows, extra_options), grid)
