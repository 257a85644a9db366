"""Chunked SSD scan (Mamba2) for training: forward and an exact backward, both in Triton.

Per (sequence b, head h) the recurrence of ``ops.ssd_recurrent_reference`` is

    s_t = exp(a_t) s_{t-1} + xdt_t B_t^T,   y_t = s_t C_t,   a_t = dt_t A,  xdt_t = dt_t x_t.

Design (correct and simple first; no GPU was available to tune it):
one program per (b, h, p-tile) walks the chunks of Q tokens in order and keeps the (p, n) state
tile in registers. Inside a chunk, with lam = cumsum(a) (the chunk-local log-decay),

    y     = ((C B^T) * exp(lam_i - lam_j) [i >= j]) @ xdt  +  exp(lam) * (C @ S^T)    (tl.dot)
    S_new = exp(lam_end) S  +  (xdt * exp(lam_end - lam))^T @ B

which is ``ops.ssd_scan_reference`` with the cross-chunk scan done sequentially instead of by a
second (c+1) x (c+1) segsum. Every exponent is <= 0 (A < 0, dt > 0), so nothing overflows.

Backward: the forward stores the state entering every chunk (nb, h, chunks+1, p, n) fp32; the
backward walks the chunks in reverse carrying G = dLoss/d(state at the chunk's end) -- the
reverse-time recurrence G <- exp(lam_end) G + (gy * exp(lam))^T @ C -- and recomputes each
chunk's quadratic terms to get dx, ddt, dA, dB, dC and d(initial_state) in closed form (derived
in ``_ssd_bwd_kernel``). B, C are shared by all heads and the decay/dt terms sum over p, so
each program writes fp32 partial sums per (head, p-tile) that PyTorch adds up afterwards
(deterministic, no atomics).

The kernel's chunk is ``chunk_size`` rounded to a power of two in [16, 64] (tl.dot needs every
dimension >= 16); the result does not depend on the chunk beyond rounding. Ragged L is masked:
a padded step has a = 0 (decay 1) and no input, which is exact. p and n need not be powers of
two. Inputs are fp32 or fp16/bf16, upcast to fp32 on load; all arithmetic is fp32 (IEEE dots,
see ``_common.DOT_PRECISION``); y comes back in x's dtype, the final state in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import DOT_PRECISION, pow2


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _tile(H, P, N, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's p-tile, batch, head and flat (batch, head) index (int64 for offsets), and the
    offsets and masks of its (chunk, p, n) tile; causal[i, j] = (i >= j) inside a chunk."""
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask_pn = mask_p[:, None] & mask_n[None, :]
    pn = offs_p[:, None] * N + offs_n[None, :]  # offsets inside one contiguous (P, N) state
    causal = offs_q[:, None] >= offs_q[None, :]
    return (pid_p, (pid_bh // H).to(tl.int64), pid_bh % H, pid_bh.to(tl.int64),
            offs_q, offs_p, offs_n, mask_p, mask_n, mask_pn, pn, causal)


@triton.jit
def _ssd_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, s0_ptr, y_ptr, states_ptr, sfin_ptr,
    L, H, P, N, n_chunks,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_n,
    sC_b, sC_l, sC_n,
    sy_b, sy_l, sy_h, sy_p,
    HAS_S0: tl.constexpr, STORE_STATES: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):
    (pid_p, b, h, bh, offs_q, offs_p, offs_n, mask_p, mask_n, mask_pn, pn,
     causal) = _tile(H, P, N, BLOCK_Q, BLOCK_P, BLOCK_N)

    if HAS_S0:
        S = tl.load(s0_ptr + bh * P * N + pn, mask=mask_pn, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)

    for c in range(n_chunks):
        if STORE_STATES:  # the state entering chunk c, for the backward pass
            tl.store(states_ptr + (bh * (n_chunks + 1) + c) * P * N + pn, S, mask=mask_pn)
        t = c * BLOCK_Q + offs_q
        mask_t = t < L
        x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p,
                    mask=mask_t[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=mask_t, other=0.0).to(tl.float32)
        Bc = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + offs_n[None, :] * sB_n,
                     mask=mask_t[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        Cc = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + offs_n[None, :] * sC_n,
                     mask=mask_t[:, None] & mask_n[None, :], other=0.0).to(tl.float32)

        a = dt * A  # padded steps: dt = 0 -> a = 0, decay 1, no input
        lam = tl.cumsum(a, 0)
        lam_end = tl.sum(a, 0)
        xdt = x * dt[:, None]
        # exp(lam_i - lam_j) on and below the diagonal; -inf above so exp gives 0 (no overflow)
        decay = tl.exp(tl.where(causal, lam[:, None] - lam[None, :], float("-inf")))

        # outputs: within the chunk (quadratic form) + from the state entering it
        CB = tl.dot(Cc, tl.trans(Bc), input_precision=PREC)
        y = tl.dot(CB * decay, xdt, input_precision=PREC)
        y += tl.exp(lam)[:, None] * tl.dot(Cc, tl.trans(S), input_precision=PREC)
        tl.store(y_ptr + b * sy_b + t[:, None] * sy_l + h * sy_h + offs_p[None, :] * sy_p,
                 y.to(y_ptr.dtype.element_ty), mask=mask_t[:, None] & mask_p[None, :])

        # state at the chunk's end
        w_end = tl.exp(lam_end - lam)
        S = tl.exp(lam_end) * S + tl.dot(tl.trans(xdt * w_end[:, None]), Bc, input_precision=PREC)

    if STORE_STATES:
        tl.store(states_ptr + (bh * (n_chunks + 1) + n_chunks) * P * N + pn, S, mask=mask_pn)
    tl.store(sfin_ptr + bh * P * N + pn, S, mask=mask_pn)


@triton.jit
def _ssd_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, states_ptr, gfin_ptr,
    dx_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, ds0_ptr,
    L, H, P, N, n_chunks, n_ptiles,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_n,
    sC_b, sC_l, sC_n,
    sgy_b, sgy_l, sgy_h, sgy_p,
    sdx_b, sdx_l, sdx_h, sdx_p,
    HAS_GFIN: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):
    # Inside one chunk, with S0 / S_end the states entering / leaving it and G = dLoss/dS_end:
    #   y_i   = exp(lam_i) S0 C_i + sum_{j<=i} exp(lam_i - lam_j) (C_i.B_j) xdt_j
    #   S_end = exp(lam_end) S0 + sum_j exp(lam_end - lam_j) xdt_j B_j^T
    # Writing M_ij = exp(lam_i - lam_j)(C_i.B_j), W_ij = exp(lam_i - lam_j)(gy_i.xdt_j) (i >= j):
    #   dxdt_j = (M^T gy)_j + exp(lam_end - lam_j) G B_j
    #   dC_i   = exp(lam_i) gy_i^T S0 + (W B)_i
    #   dB_j   = (W^T C)_j + exp(lam_end - lam_j) G^T xdt_j
    #   dS0    = exp(lam_end) G + sum_i exp(lam_i) gy_i C_i^T          (-> G of the previous chunk)
    #   dlam_k = exp(lam_k) gy_k.(S0 C_k) + sum_j T_kj - sum_i T_ik - exp(lam_end - lam_k) xdt_k.(G B_k),
    #            T = M * (gy xdt^T), plus <G, S_end> on lam_end;  da_k = sum_{i >= k} dlam_i
    #   dx = dt dxdt,  ddt = x.dxdt + A da,  dA = sum dt da.
    # Every sum over p is partial here (this program holds one p-tile): the partials are written
    # per (head, p-tile) and summed by the launcher.
    (pid_p, b, h, bh, offs_q, offs_p, offs_n, mask_p, mask_n, mask_pn, pn,
     causal) = _tile(H, P, N, BLOCK_Q, BLOCK_P, BLOCK_N)
    part = bh * n_ptiles + pid_p  # index of this program's partial sums

    if HAS_GFIN:
        G = tl.load(gfin_ptr + bh * P * N + pn, mask=mask_pn, other=0.0).to(tl.float32)
    else:
        G = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    dA_acc = tl.sum(tl.zeros((BLOCK_Q,), dtype=tl.float32), 0)  # a 0-d fp32 accumulator

    for cc in range(n_chunks):
        c = n_chunks - 1 - cc  # reverse time
        t = c * BLOCK_Q + offs_q
        mask_t = t < L
        mask_tp = mask_t[:, None] & mask_p[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p,
                    mask=mask_tp, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + b * sgy_b + t[:, None] * sgy_l + h * sgy_h + offs_p[None, :] * sgy_p,
                     mask=mask_tp, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=mask_t, other=0.0).to(tl.float32)
        Bc = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + offs_n[None, :] * sB_n,
                     mask=mask_tn, other=0.0).to(tl.float32)
        Cc = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + offs_n[None, :] * sC_n,
                     mask=mask_tn, other=0.0).to(tl.float32)
        S0 = tl.load(states_ptr + (bh * (n_chunks + 1) + c) * P * N + pn, mask=mask_pn, other=0.0)
        S_end = tl.load(states_ptr + (bh * (n_chunks + 1) + c + 1) * P * N + pn, mask=mask_pn, other=0.0)

        a = dt * A
        lam = tl.cumsum(a, 0)
        lam_end = tl.sum(a, 0)
        xdt = x * dt[:, None]
        decay = tl.exp(tl.where(causal, lam[:, None] - lam[None, :], float("-inf")))
        e_lam = tl.exp(lam)
        e_end = tl.exp(lam_end - lam)

        CB = tl.dot(Cc, tl.trans(Bc), input_precision=PREC)  # (Q, Q)
        GX = tl.dot(gy, tl.trans(xdt), input_precision=PREC)  # (Q, Q): gy_i . xdt_j
        M = CB * decay
        W = GX * decay
        BG = tl.dot(Bc, tl.trans(G), input_precision=PREC)  # (Q, P): G B_j
        CS = tl.dot(Cc, tl.trans(S0), input_precision=PREC)  # (Q, P): S0 C_i

        dxdt = tl.dot(tl.trans(M), gy, input_precision=PREC) + e_end[:, None] * BG
        dC = e_lam[:, None] * tl.dot(gy, S0, input_precision=PREC) + tl.dot(W, Bc, input_precision=PREC)
        dB = (tl.dot(tl.trans(W), Cc, input_precision=PREC)
              + e_end[:, None] * tl.dot(xdt, G, input_precision=PREC))

        T = M * GX
        dlam = e_lam * tl.sum(gy * CS, 1) + tl.sum(T, 1) - tl.sum(T, 0) - e_end * tl.sum(xdt * BG, 1)
        # reverse cumsum; <G, S_end> reaches every step of the chunk (lam_end contains all a_k)
        da = tl.sum(dlam, 0) - tl.cumsum(dlam, 0) + dlam + tl.sum(tl.sum(G * S_end, 1), 0)

        tl.store(dx_ptr + b * sdx_b + t[:, None] * sdx_l + h * sdx_h + offs_p[None, :] * sdx_p,
                 (dxdt * dt[:, None]).to(dx_ptr.dtype.element_ty), mask=mask_tp)
        tl.store(ddt_ptr + part * L + t, tl.sum(x * dxdt, 1) + A * da, mask=mask_t)
        tl.store(dB_ptr + (part * L + t[:, None]) * N + offs_n[None, :], dB, mask=mask_tn)
        tl.store(dC_ptr + (part * L + t[:, None]) * N + offs_n[None, :], dC, mask=mask_tn)
        dA_acc += tl.sum(dt * da, 0)  # padded steps have dt = 0

        # gradient w.r.t. the state entering this chunk = G of the chunk before
        G = tl.exp(lam_end) * G + tl.dot(tl.trans(gy * e_lam[:, None]), Cc, input_precision=PREC)

    tl.store(ds0_ptr + bh * P * N + pn, G, mask=mask_pn)
    tl.store(dA_ptr + part, dA_acc)


# ----------------------------------------------------------------------------- launchers
def _blocks(chunk_size: int, P: int, N: int, p_cap: int):
    BLOCK_Q = min(max(pow2(chunk_size), 16), 64)
    return BLOCK_Q, min(pow2(P, 16), p_cap), pow2(N, 16)


def _ssd_fwd(x, dt, A, B, C, initial_state, chunk_size: int, store_states: bool):
    nb, L, H, P = x.shape
    N = B.shape[-1]
    BLOCK_Q, BLOCK_P, BLOCK_N = _blocks(chunk_size, P, N, p_cap=64)
    n_chunks = triton.cdiv(L, BLOCK_Q)
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    sfin = torch.empty(nb, H, P, N, device=x.device, dtype=torch.float32)
    states = (torch.empty(nb, H, n_chunks + 1, P, N, device=x.device, dtype=torch.float32)
              if store_states else sfin)  # dummy pointer when not stored
    s0 = initial_state.contiguous() if initial_state is not None else sfin
    grid = (nb * H, triton.cdiv(P, BLOCK_P))
    _ssd_fwd_kernel[grid](
        x, dt, A.contiguous(), B, C, s0, y, states, sfin,
        L, H, P, N, n_chunks,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(),
        HAS_S0=initial_state is not None, STORE_STATES=store_states,
        BLOCK_Q=BLOCK_Q, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, PREC=DOT_PRECISION, num_warps=4,
    )
    return y, sfin, (states if store_states else None)


def _ssd_bwd(x, dt, A, B, C, states, gy, gfin, chunk_size: int):
    nb, L, H, P = x.shape
    N = B.shape[-1]
    # same chunk as the forward (the stored states sit on its boundaries); smaller p-tiles
    # because the backward holds several (Q, Q) and (Q, P) tiles at once
    BLOCK_Q, BLOCK_P, BLOCK_N = _blocks(chunk_size, P, N, p_cap=32)
    n_chunks = triton.cdiv(L, BLOCK_Q)
    n_ptiles = triton.cdiv(P, BLOCK_P)
    dev, f32 = x.device, torch.float32
    dx = torch.empty(x.shape, device=dev, dtype=x.dtype)
    ddt_part = torch.empty(nb, H, n_ptiles, L, device=dev, dtype=f32)
    dA_part = torch.empty(nb, H, n_ptiles, device=dev, dtype=f32)
    dB_part = torch.empty(nb, H, n_ptiles, L, N, device=dev, dtype=f32)
    dC_part = torch.empty(nb, H, n_ptiles, L, N, device=dev, dtype=f32)
    ds0 = torch.empty(nb, H, P, N, device=dev, dtype=f32)
    gfin_c = gfin.contiguous() if gfin is not None else ds0  # dummy pointer when absent
    grid = (nb * H, n_ptiles)
    _ssd_bwd_kernel[grid](
        x, dt, A.contiguous(), B, C, gy, states, gfin_c,
        dx, ddt_part, dA_part, dB_part, dC_part, ds0,
        L, H, P, N, n_chunks, n_ptiles,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *gy.stride(), *dx.stride(),
        HAS_GFIN=gfin is not None,
        BLOCK_Q=BLOCK_Q, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, PREC=DOT_PRECISION, num_warps=4,
    )
    ddt = ddt_part.sum(2).transpose(1, 2).to(dt.dtype)  # (nb, L, H)
    dA = dA_part.sum((0, 2)).to(A.dtype)
    dB = dB_part.sum((1, 2)).to(B.dtype)  # B and C are shared by all heads
    dC = dC_part.sum((1, 2)).to(C.dtype)
    return dx, ddt, dA, dB, dC, ds0


# ----------------------------------------------------------------------------- autograd
class _SSDScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, initial_state, chunk_size):
        y, sfin, states = _ssd_fwd(x, dt, A, B, C, initial_state, chunk_size, store_states=True)
        ctx.save_for_backward(x, dt, A, B, C, states)
        ctx.chunk_size = chunk_size
        ctx.s0_dtype = None if initial_state is None else initial_state.dtype
        return y, sfin

    @staticmethod
    def backward(ctx, gy, gfin):
        x, dt, A, B, C, states = ctx.saved_tensors
        if gy is None:  # only the final state was used
            gy = torch.zeros_like(x)
        dx, ddt, dA, dB, dC, ds0 = _ssd_bwd(x, dt, A, B, C, states, gy, gfin, ctx.chunk_size)
        ds0 = None if ctx.s0_dtype is None else ds0.to(ctx.s0_dtype)
        return dx, ddt, dA, dB, dC, ds0, None


# ----------------------------------------------------------------------------- public
def ssd_scan_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """``ops.ssd_scan`` on the GPU: x (nb, L, h, p), dt (nb, L, h), A (h,), B, C (nb, L, n),
    initial_state (nb, h, p, n) or None -> y (nb, L, h, p) in x's dtype, final state fp32.
    Differentiable in every tensor input; stores chunk states only when a gradient is needed."""
    tensors = (x, dt, A, B, C) + ((initial_state,) if initial_state is not None else ())
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _SSDScan.apply(x, dt, A, B, C, initial_state, chunk_size)
    y, sfin, _ = _ssd_fwd(x, dt, A, B, C, initial_state, chunk_size, store_states=False)
    return y, sfin
