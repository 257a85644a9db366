"""Depthwise causal conv1d along the sequence, with the streaming state in and out.

Matches ``ops.causal_conv1d_reference``: x (b, L, c), weight (c, k), bias (c,) or None,
state (b, k-1, c) = the last k-1 inputs before x (zeros if None);

    y[t, ch] = bias[ch] + sum_j weight[ch, j] * xs[t + j, ch],   xs = cat(state, x)

and the new state is the last k-1 rows of xs. One program per (batch, L-tile, channel-tile)
reads its k shifted input rows straight from `state` or `x` (no concatenated copy); the
programs of the first L-tile also write the new state. Channels are the contiguous axis, so
loads are coalesced along them. fp32 accumulation; inputs fp32 or fp16/bf16; y in x's dtype.

Backward: PyTorch, not Triton (`_conv_bwd`: dx, dweight, dbias, dstate are each k shifted
products or a reduction, and the conv is a negligible share of a layer's time next to the
projections); a Triton backward is worth writing only if a GPU profile says so.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import pow2


# ----------------------------------------------------------------------------- kernel
@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr, new_state_ptr,
    L, Cn,
    sx_b, sx_l, sx_c,
    sw_c, sw_k,
    ss_b, ss_l, ss_c,
    sy_b, sy_l, sy_c,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    pid_c = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < Cn
    mask_l = offs_l < L

    acc = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    for j in tl.static_range(K):
        w = tl.load(w_ptr + offs_c * sw_c + j * sw_k, mask=mask_c, other=0.0).to(tl.float32)
        # xs row t + j is x row t + j - (K-1), or state row t + j when that is negative
        src = offs_l + j - (K - 1)
        from_x = (src >= 0) & mask_l
        v = tl.load(x_ptr + b * sx_b + src[:, None] * sx_l + offs_c[None, :] * sx_c,
                    mask=from_x[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
        if HAS_STATE:
            from_s = (src < 0) & mask_l
            v += tl.load(state_ptr + b * ss_b + (offs_l + j)[:, None] * ss_l + offs_c[None, :] * ss_c,
                         mask=from_s[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
        acc += w[None, :] * v
    tl.store(y_ptr + b * sy_b + offs_l[:, None] * sy_l + offs_c[None, :] * sy_c,
             acc.to(y_ptr.dtype.element_ty), mask=mask_l[:, None] & mask_c[None, :])

    if K > 1:
        if pid_l == 0:  # new state: xs rows L .. L+K-2, i.e. x row r + L - (K-1) or state row r + L
            offs_r = tl.arange(0, BLOCK_L)  # BLOCK_L >= K - 1 (launcher)
            mask_r = offs_r < K - 1
            src = offs_r + L - (K - 1)
            from_x = (src >= 0) & mask_r
            v = tl.load(x_ptr + b * sx_b + src[:, None] * sx_l + offs_c[None, :] * sx_c,
                        mask=from_x[:, None] & mask_c[None, :], other=0.0)
            if HAS_STATE:
                from_s = (src < 0) & mask_r
                v += tl.load(state_ptr + b * ss_b + (offs_r + L)[:, None] * ss_l + offs_c[None, :] * ss_c,
                             mask=from_s[:, None] & mask_c[None, :], other=0.0)
            tl.store(new_state_ptr + (b * (K - 1) + offs_r[:, None]) * Cn + offs_c[None, :],
                     v.to(new_state_ptr.dtype.element_ty), mask=mask_r[:, None] & mask_c[None, :])


# ----------------------------------------------------------------------------- launcher
def _conv_fwd(x, weight, bias, state):
    Bsz, L, Cn = x.shape
    K = weight.shape[-1]
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    new_state = torch.empty(Bsz, K - 1, Cn, device=x.device, dtype=x.dtype)
    if state is not None:
        state = state.to(x.dtype)  # the state holds past inputs: same dtype as x
    BLOCK_L = max(min(pow2(L), 64), pow2(K - 1))
    BLOCK_C = min(pow2(Cn), 128)
    grid = (Bsz, triton.cdiv(L, BLOCK_L), triton.cdiv(Cn, BLOCK_C))
    s = state if state is not None else x  # dummy pointer when absent
    _causal_conv1d_kernel[grid](
        x, weight, bias if bias is not None else weight, s, y, new_state,
        L, Cn,
        *x.stride(), *weight.stride(), *s.stride(), *y.stride(),
        K=K, HAS_BIAS=bias is not None, HAS_STATE=state is not None,
        BLOCK_L=BLOCK_L, BLOCK_C=BLOCK_C, num_warps=4,
    )
    return y, new_state


def _conv_bwd(x, weight, bias, state, gy, gstate):
    """Gradients of (y, new state) in PyTorch, fp32: y[t] = bias + sum_j weight[:, j] xs[t + j]
    gives xs[s] the sum of weight[:, j] gy[s - j]; the new state is xs[L:] and passes its gradient
    straight back. Returns dx, dweight, dbias, dstate in fp32."""
    b, L, c = x.shape
    k = weight.shape[-1]
    xs = torch.cat([state.to(x.dtype) if state is not None else x.new_zeros(b, k - 1, c), x], dim=1).float()
    gy = gy.float() if gy is not None else xs.new_zeros(b, L, c)
    w = weight.float()
    dxs = xs.new_zeros(xs.shape)
    for j in range(k):
        dxs[:, j:j + L] += w[:, j] * gy
    if gstate is not None:
        dxs[:, L:] += gstate.float()
    dweight = torch.stack([(gy * xs[:, j:j + L]).sum((0, 1)) for j in range(k)], dim=1)
    return dxs[:, k - 1:], dweight, gy.sum((0, 1)), dxs[:, :k - 1]


# ----------------------------------------------------------------------------- autograd
class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state):
        ctx.save_for_backward(x, weight, bias, state)
        return _conv_fwd(x, weight, bias, state)

    @staticmethod
    def backward(ctx, gy, gstate):
        inputs = ctx.saved_tensors
        grads = _conv_bwd(*inputs, gy, gstate)
        return tuple(g.to(t.dtype) if t is not None and need else None
                     for t, g, need in zip(inputs, grads, ctx.needs_input_grad))


# ----------------------------------------------------------------------------- public
def causal_conv1d(x, weight, bias, state=None):
    """``ops.causal_conv1d`` on the GPU: returns y (b, L, c) and the new state (b, k-1, c)."""
    tensors = [t for t in (x, weight, bias, state) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _CausalConv1d.apply(x, weight, bias, state)
    return _conv_fwd(x, weight, bias, state)
