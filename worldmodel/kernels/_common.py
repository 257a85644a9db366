"""Small helpers shared by the kernel files."""

from __future__ import annotations

import triton

# fp32 x fp32 tl.dot defaults to TF32 on tensor cores (~1e-3 relative error). The references are
# exact fp32, and the streaming-equals-parallel invariant compares two kernels with each other,
# so products stay IEEE fp32 until a GPU measurement says TF32 (or "tf32x3") is worth the error.
# For fp16/bf16 operands Triton ignores this setting.
DOT_PRECISION = "ieee"


def pow2(n: int, lo: int = 1) -> int:
    """The smallest power of two >= max(n, lo): Triton block shapes must be powers of two."""
    return max(triton.next_power_of_2(max(int(n), 1)), lo)
