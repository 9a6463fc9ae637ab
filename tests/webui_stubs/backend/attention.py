"""backend/attention.py (Forge main): ``attention_function(q, k, v, heads, mask=None)`` on (B, N, heads*d)."""

from forge_stub import attention_function  # noqa: F401  (the same einsum kernel as ldm's CrossAttention)
