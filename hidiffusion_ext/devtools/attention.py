"""Class-level attention swaps for tests and the benchmark, in the style of A1111's SdOptimization.

(modules/sd_hijack_optimizations.py)
A1111 assigns ``CrossAttention.forward`` at class level (sdp, xformers, sub-quadratic, ...). Installing the
same kind of forward here checks that MSW-MSA composes with whatever the host installed, and keeps the
size sweeps affordable on CPU.
"""

import contextlib

import torch.nn.functional as F


def sdp_forward(self, x, context=None, mask=None, **kwargs):
    """Scaled-dot-product attention forward with the CrossAttention signature A1111 uses."""
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, inner = q.shape
    heads = self.heads
    q, k, v = (t.view(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = out.transpose(1, 2).reshape(b, n, inner)
    return self.to_out(out)


@contextlib.contextmanager
def sdp_attention():
    from ldm.modules.attention import CrossAttention

    original = CrossAttention.forward
    CrossAttention.forward = sdp_forward
    try:
        yield
    finally:
        CrossAttention.forward = original

