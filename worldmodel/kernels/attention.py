"""Frame-local attention of the newest frame(s) over the KV window (streaming), flash style.

Matches ``ops.windowed_attention_reference``: q (b, h, Tq, N, d), k, v (b, h, Tk, N, d), the
last Tq key frames being the query frames; key_valid (b, Tk) bool; query frame i (absolute frame
Tk - Tq + i) sees key frames [i, Tk - Tq + i] when window is set (which needs Tk = Tq + window)
and [0, Tk - Tq + i] when window is None (full causal), skipping invalid ones; tokens attend
bidirectionally within a frame. Scale 1/sqrt(d), as SDPA's default.

Streaming kernel: one program per (b, h, query frame, tile of query tokens) walks the key tokens
of its allowed frames, flattened into one (frame, token) axis, in tiles of BLOCK_K with an
online softmax (running max and sum in fp32), so the window is read once and no score matrix is
written. Invalid cache slots are masked per key. fp32/fp16/bf16 in, fp32 accumulation, output in
q's dtype. Forward only.

Training (many query frames, or any gradient needed) stays on the reference (``worldmodel.ops``
decides, see ``STREAM_MAX_TQ`` there), which is torch SDPA over a (frame-band masked) key
layout: on a GPU SDPA already runs a fused flash/memory-efficient kernel with a backward, so a
hand-written kernel there would have to beat it. That is a decision made without a GPU to
measure on; revisit it with a GPU measurement (e.g. a banded flash kernel that skips the
masked-out key frames SDPA still visits).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import DOT_PRECISION, pow2


# ----------------------------------------------------------------------------- kernel
@triton.jit
def _window_attn_kernel(
    q_ptr, k_ptr, v_ptr, valid_ptr, o_ptr,
    H, Tq, Tk, Ntok, D, window, scale,
    sq_b, sq_h, sq_t, sq_n, sq_d,
    sk_b, sk_h, sk_t, sk_n, sk_d,
    sv_b, sv_h, sv_t, sv_n, sv_d,
    sm_b, sm_t,
    so_b, so_h, so_t, so_n, so_d,
    FULL_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    pid = tl.program_id(0)  # (b, h, query frame)
    pid_m = tl.program_id(1)  # tile of query tokens
    qi = pid % Tq
    bh = pid // Tq
    h = bh % H
    b = (bh // H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < Ntok
    mask_d = offs_d < D

    q = tl.load(q_ptr + b * sq_b + h * sq_h + qi * sq_t + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d,
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)

    q_frame = Tk - Tq + qi
    if FULL_CAUSAL:
        lo = 0
    else:
        lo = q_frame - window  # = qi >= 0, since Tk = Tq + window
    start = lo * Ntok
    end = (q_frame + 1) * Ntok  # keys: frames lo .. q_frame, flattened (frame, token)

    # running max starts finite so a fully masked tile gives exp(-inf - m) = 0, not NaN
    m_i = tl.full((BLOCK_M,), -1.0e30, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for k0 in range(start, end, BLOCK_K):
        kpos = k0 + tl.arange(0, BLOCK_K)
        f = kpos // Ntok
        tok = kpos % Ntok
        in_range = kpos < end
        ok = in_range & (tl.load(valid_ptr + b * sm_b + f * sm_t, mask=in_range, other=0) != 0)
        kt = tl.load(
            k_ptr + b * sk_b + h * sk_h + f[:, None] * sk_t + tok[:, None] * sk_n + offs_d[None, :] * sk_d,
            mask=ok[:, None] & mask_d[None, :],
            other=0.0,
        )
        vt = tl.load(
            v_ptr + b * sv_b + h * sv_h + f[:, None] * sv_t + tok[:, None] * sv_n + offs_d[None, :] * sv_d,
            mask=ok[:, None] & mask_d[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(kt), input_precision=PREC) * scale  # (M, K) fp32
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PREC)
        m_i = m_new

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # no valid key at all: 0 (cannot happen in the model)
    tl.store(o_ptr + b * so_b + h * so_h + qi * so_t + offs_m[:, None] * so_n + offs_d[None, :] * so_d,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


# ----------------------------------------------------------------------------- launcher and public
def windowed_attention_stream(q, k, v, key_valid, window):
    """``ops.windowed_attention`` for any Tq, forward only: same arguments and result as
    ``ops.windowed_attention_reference``."""
    Bsz, H, Tq, N, D = q.shape
    Tk = k.shape[2]
    if window is not None and Tk != Tq + window:
        raise ValueError(f"windowed attention needs Tq + window key frames, got Tk={Tk}, Tq={Tq}, "
                         f"window={window}")
    if Tk < Tq:
        raise ValueError(f"need at least as many key frames as query frames, got Tk={Tk}, Tq={Tq}")
    o = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    valid = key_valid.to(torch.int8)
    BLOCK_D = pow2(D, 16)  # tl.dot needs every dim >= 16; padded lanes are masked to 0
    BLOCK_M = min(pow2(N, 16), 64)
    BLOCK_K = min(pow2(N, 16), 64)
    grid = (Bsz * H * Tq, triton.cdiv(N, BLOCK_M))
    _window_attn_kernel[grid](
        q, k, v, valid, o,
        H, Tq, Tk, N, D, 0 if window is None else window, 1.0 / math.sqrt(D),
        *q.stride(), *k.stride(), *v.stride(), *valid.stride(), *o.stride(),
        FULL_CAUSAL=window is None, BLOCK_M=BLOCK_M, BLOCK_K=BLOCK_K, BLOCK_D=BLOCK_D,
        PREC=DOT_PRECISION, num_warps=4,
    )
    return o

