"""Triton kernels for the hot ops of ``worldmodel/ops.py``.

``worldmodel.ops`` imports this package and calls ``ssd_scan``, ``causal_conv1d`` and
``windowed_attention`` -- same signatures as the ops functions -- for CUDA tensors. Each kernel
file reads kernel -> launcher -> autograd wrapper -> public function, and
``tests/test_kernels.py`` compares every one with its reference in ``worldmodel/ops.py``.

Without a GPU the kernels still run under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set
before triton is imported), which is how the tests exercise them on a CPU machine.
"""

from __future__ import annotations

import torch

from .attention import windowed_attention, windowed_attention_stream
from .causal_conv1d import causal_conv1d
from .ssd_scan import ssd_scan_chunked
from .ssm_step import ssm_step

# Up to this many tokens per sequence (and no gradient) the streaming step kernel runs instead of
# the chunked scan: one frame's tokens of a block (b_h * b_w) in the World's step. A guess made
# without a GPU (the step walks tokens one by one; the chunked scan pays for >= 16-token tiles):
# revisit with a GPU measurement.
STEP_MAX_L = 64

__all__ = ["ssd_scan", "causal_conv1d", "windowed_attention",
           "ssm_step", "ssd_scan_chunked", "windowed_attention_stream", "STEP_MAX_L"]


def ssd_scan(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """``ops.ssd_scan``: y (nb, L, h, p) in x's dtype and the final state (nb, h, p, n) in fp32.

    Streaming (no gradient, L <= STEP_MAX_L): one-launch recurrent step over all blocks and
    heads. Otherwise the chunked scan, differentiable with a Triton backward."""
    tensors = (x, dt, A, B, C) + ((initial_state,) if initial_state is not None else ())
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if not needs_grad and x.shape[1] <= STEP_MAX_L:
        return ssm_step(x, dt, A, B, C, chunk_size, initial_state)
    return ssd_scan_chunked(x, dt, A, B, C, chunk_size, initial_state)
