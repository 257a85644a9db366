"""Streaming SSM step: advance every block's Mamba2 state by one frame's tokens, in one launch.

While a World streams, each SSM layer sees L = b_h * b_w new tokens per spatial block. The
chunked scan would spend a whole chunk of tensor-core work on so few tokens; here each program
owns the state tile of one (sequence, head, p-tile), keeps it in registers and walks the L
tokens one at a time -- exactly the recurrence of ``ops.ssd_recurrent_reference``:

    s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t^T,     y_t = s_t C_t.

All sequences (batch * blocks) and heads go in a single launch: grid (nb * h, p-tiles).
Forward only (no autograd): ``kernels.ssd_scan`` uses it when no gradient is needed.
Inputs may be fp32 or fp16/bf16; they are upcast to fp32 on load and the state stays fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import pow2


# ----------------------------------------------------------------------------- kernel
@triton.jit
def _ssm_step_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, s0_ptr, y_ptr, s_ptr,
    L, H, P, N,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_n,
    sC_b, sC_l, sC_n,
    sy_b, sy_l, sy_h, sy_p,
    HAS_S0: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)  # int64 offsets: nb * L * h * p can pass 2^31 elements
    h = pid_bh % H
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask_pn = mask_p[:, None] & mask_n[None, :]

    # state (p, n) of this (sequence, head), contiguous fp32, lives in registers for all L steps
    s_off = (b * H + h) * P * N + offs_p[:, None] * N + offs_n[None, :]
    if HAS_S0:
        s = tl.load(s0_ptr + s_off, mask=mask_pn, other=0.0).to(tl.float32)
    else:
        s = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)

    x_base = x_ptr + b * sx_b + h * sx_h + offs_p * sx_p
    y_base = y_ptr + b * sy_b + h * sy_h + offs_p * sy_p
    dt_base = dt_ptr + b * sdt_b + h * sdt_h
    B_base = B_ptr + b * sB_b + offs_n * sB_n
    C_base = C_ptr + b * sC_b + offs_n * sC_n
    for t in range(L):  # sequential on purpose: L is one frame's tokens of a block (small)
        x = tl.load(x_base + t * sx_l, mask=mask_p, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t * sdt_l).to(tl.float32)
        Bt = tl.load(B_base + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t * sC_l, mask=mask_n, other=0.0).to(tl.float32)
        s = tl.exp(dt * A) * s + (dt * x)[:, None] * Bt[None, :]
        y = tl.sum(s * Ct[None, :], axis=1)
        tl.store(y_base + t * sy_l, y.to(y_ptr.dtype.element_ty), mask=mask_p)
    tl.store(s_ptr + s_off, s, mask=mask_pn)


# ----------------------------------------------------------------------------- launcher
def ssm_step(x, dt, A, B, C, chunk_size: int | None = None, initial_state=None):
    """Same signature and result as ``ops.ssd_scan`` (``chunk_size`` is unused: no chunks here).

    x: (nb, L, h, p); dt: (nb, L, h); A: (h,); B, C: (nb, L, n); initial_state: (nb, h, p, n).
    Returns y (nb, L, h, p) in x's dtype and the final state (nb, h, p, n) in fp32.
    """
    nb, L, H, P = x.shape
    N = B.shape[-1]
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    s = torch.empty(nb, H, P, N, device=x.device, dtype=torch.float32)
    s0 = initial_state.contiguous() if initial_state is not None else s  # dummy pointer when absent
    A = A.contiguous()
    BLOCK_P = min(pow2(P), 64)  # more p-tiles = more programs when nb * h is small
    BLOCK_N = pow2(N)  # the whole n row: y_t = s_t C_t reduces over it
    grid = (nb * H, triton.cdiv(P, BLOCK_P))
    _ssm_step_kernel[grid](
        x, dt, A, B, C, s0, y, s,
        L, H, P, N,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(),
        HAS_S0=initial_state is not None, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N,
        num_warps=4 if BLOCK_P * BLOCK_N >= 2048 else 1,
    )
    return y, s
