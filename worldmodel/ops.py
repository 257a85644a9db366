"""Plain PyTorch references of the hot ops, written to be read.

Every function here is the ground truth its Triton kernel in ``worldmodel/kernels/`` is tested
against. The model calls the public names at the bottom (``ssd_scan``, ``windowed_attention``
...); ``choose_kernel`` is the one policy that sends CUDA tensors to a kernel (when Triton is
importable) and everything else here.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- SSD (Mamba2)
def segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for i >= j, -inf above the diagonal.

    Computed as a masked cumulative sum (not a difference of cumsums) so that long chunks with
    strongly negative log-decays keep their precision.
    """
    n = a.shape[-1]
    a = a[..., :, None].expand(*a.shape, n)  # [..., k, j] = a_k
    below = torch.ones(n, n, dtype=torch.bool, device=a.device).tril(-1)
    a = a.masked_fill(~below, 0).cumsum(dim=-2)  # [..., i, j] = sum_{j<k<=i} a_k
    on_or_below = torch.ones(n, n, dtype=torch.bool, device=a.device).tril(0)
    return a.masked_fill(~on_or_below, float("-inf"))


def ssd_scan_reference(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """Chunked SSD scan (Mamba2, Dao & Gu 2024, the 'minimal' listing), one group.

    x: (b, L, h, p) inputs; dt: (b, L, h) positive step sizes; A: (h,) negative decay rates;
    B, C: (b, L, n); initial_state: (b, h, p, n) or None.
    Recurrence per head: s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t^T,  y_t = s_t C_t.
    Returns y (b, L, h, p) and the final state (b, h, p, n). Ragged L is zero-padded, which is
    exact: a padded step has decay exp(0) = 1 and no input.
    """
    b, L, h, p = x.shape
    n = B.shape[-1]
    chunk = min(chunk_size, L)
    pad = (-L) % chunk
    xdt = x * dt[..., None]
    a = dt * A  # log-decay per step, (b, L, h)
    if pad:
        xdt, a = F.pad(xdt, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = (L + pad) // chunk
    xdt = xdt.reshape(b, c, chunk, h, p)
    B, C = B.reshape(b, c, chunk, n), C.reshape(b, c, chunk, n)
    a = a.reshape(b, c, chunk, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cum = a.cumsum(dim=-1)

    # 1. outputs from inputs inside the same chunk (the quadratic, attention-like form)
    decay_in = torch.exp(segsum(a))  # (b, h, c, l, s)
    y_diag = torch.einsum("bcln,bcsn,bhcls,bcshp->bclhp", C, B, decay_in, xdt)
    # 2. the state each chunk adds by its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, l)
    chunk_states = torch.einsum("bcln,bhcl,bclhp->bchpn", B, decay_to_end, xdt)
    # 3. carry states across chunks (a scan over c + 1 chunk boundaries)
    if initial_state is None:
        initial_state = x.new_zeros(b, h, p, n)
    states = torch.cat([initial_state[:, None].to(chunk_states.dtype), chunk_states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = states[:, :-1], states[:, -1]
    # 4. outputs from the state entering each chunk
    y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", C, states, torch.exp(a_cum))
    y = (y_diag + y_off).reshape(b, c * chunk, h, p)[:, :L]
    return y, final_state


def ssd_recurrent_reference(x, dt, A, B, C, initial_state=None):
    """The same recurrence, one step at a time. Slow; the definition the scan must match."""
    b, L, h, p = x.shape
    s = x.new_zeros(b, h, p, B.shape[-1]) if initial_state is None else initial_state.clone()
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        s = decay * s + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", s, C[:, t]))
    return torch.stack(ys, dim=1), s


def causal_conv1d_reference(x, weight, bias, state=None):
    """Depthwise causal convolution along the sequence. x: (b, L, c); weight: (c, k); bias: (c,);
    state: (b, k-1, c), the last k-1 inputs before x (zeros if None). Returns y and the new state."""
    k = weight.shape[-1]
    if state is None:
        state = x.new_zeros(x.shape[0], k - 1, x.shape[2])
    xs = torch.cat([state, x], dim=1)
    y = F.conv1d(xs.transpose(1, 2), weight[:, None, :], bias, groups=x.shape[2]).transpose(1, 2)
    return y, xs[:, xs.shape[1] - (k - 1):]


# ----------------------------------------------------------------------------- attention
def windowed_attention_reference(q, k, v, key_valid, window: int | None):
    """Frame-local attention.

    q: (b, h, Tq, N, d) -- the newest Tq frames of N tokens each;
    k, v: (b, h, Tk, N, d) -- key frames, oldest first; the last Tq of them are the query frames;
    key_valid: (b, Tk) bool -- False for padding / not-yet-filled cache slots;
    window: each query frame sees itself and the `window` frames before it (needs
    Tk = Tq + window), or all earlier frames when None (full causal attention).
    Tokens attend bidirectionally within their frame. Time enters through q and k (rotary).
    """
    b, h, Tq, N, d = q.shape
    Tk = k.shape[2]
    if window is None:
        q_frame = torch.arange(Tk - Tq, Tk, device=q.device)
        allowed = q_frame[:, None] >= torch.arange(Tk, device=q.device)[None, :]  # (Tq, Tk)
        allowed = allowed[None] & key_valid[:, None, :]  # (b, Tq, Tk)
        mask = allowed[:, None, :, None, :, None].expand(b, 1, Tq, N, Tk, N).reshape(b, 1, Tq * N, Tk * N)
        out = F.scaled_dot_product_attention(q.reshape(b, h, Tq * N, d), k.reshape(b, h, Tk * N, d),
                                             v.reshape(b, h, Tk * N, d), attn_mask=mask)
        return out.reshape(b, h, Tq, N, d)
    if Tk != Tq + window:
        raise ValueError(f"windowed attention needs Tq + window key frames, got Tk={Tk}, Tq={Tq}, "
                         f"window={window}")
    if Tq > 2 * (window + 1):
        return _chunked_window_attention(q, k, v, key_valid, window)
    w = window + 1
    # Key windows of w frames ending at each query frame: a view, then one copy. Frames go to the
    # batch axis so that SDPA gets 4-D inputs (its fused CPU/GPU kernels refuse 5-D ones).
    kw = k.unfold(2, w, 1).permute(0, 2, 1, 5, 3, 4).reshape(b * Tq, h, w * N, d)
    vw = v.unfold(2, w, 1).permute(0, 2, 1, 5, 3, 4).reshape(b * Tq, h, w * N, d)
    valid = key_valid.unfold(1, w, 1)  # (b, Tq, w)
    mask = valid[:, :, None, None, :, None].expand(b, Tq, 1, 1, w, N).reshape(b * Tq, 1, 1, w * N)
    out = F.scaled_dot_product_attention(q.transpose(1, 2).reshape(b * Tq, h, N, d), kw, vw, attn_mask=mask)
    return out.reshape(b, Tq, h, N, d).transpose(1, 2)


def _chunked_window_attention(q, k, v, key_valid, window: int):
    """The same attention for long clips: chunks of c = window + 1 query frames attend to the 2c
    key frames ending with the chunk, masked to each frame's own window. Keys are duplicated
    twice instead of window + 1 times, which is what makes training on a CPU affordable."""
    b, h, Tq, N, d = q.shape
    c = window + 1
    pad = (-Tq) % c
    n = (Tq + pad) // c
    if pad:
        q = F.pad(q, (0, 0, 0, 0, 0, pad))
        k, v = F.pad(k, (0, 0, 0, 0, 0, pad)), F.pad(v, (0, 0, 0, 0, 0, pad))
        key_valid = F.pad(key_valid, (0, pad))
    # Key frames [j*c - 1, j*c + 2c - 1) serve chunk j; prepend one frame so every chunk starts at j*c.
    k, v = F.pad(k, (0, 0, 0, 0, 1, 0)), F.pad(v, (0, 0, 0, 0, 1, 0))
    key_valid = F.pad(key_valid, (1, 0))
    kc = k.unfold(2, 2 * c, c).permute(0, 2, 1, 5, 3, 4).reshape(b * n, h, 2 * c * N, d)
    vc = v.unfold(2, 2 * c, c).permute(0, 2, 1, 5, 3, 4).reshape(b * n, h, 2 * c * N, d)
    valid = key_valid.unfold(1, 2 * c, c)  # (b, n, 2c)
    # query i of a chunk is key slot c + i; it sees slots i+1 .. c+i (itself and `window` before)
    i = torch.arange(c, device=q.device)[:, None]
    j = torch.arange(2 * c, device=q.device)[None, :]
    band = (j > i) & (j <= c + i)  # (c, 2c)
    allowed = band[None, None] & valid[:, :, None, :]  # (b, n, c, 2c)
    mask = allowed[:, :, None, :, None, :, None].expand(b, n, 1, c, N, 2 * c, N)
    mask = mask.reshape(b * n, 1, c * N, 2 * c * N)
    qc = q.reshape(b, h, n, c, N, d).transpose(1, 2).reshape(b * n, h, c * N, d)
    out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask)
    out = out.reshape(b, n, h, c, N, d).transpose(1, 2).reshape(b, h, n * c, N, d)
    return out[:, :, :Tq]


def rotary_time(x: torch.Tensor, frame: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate the first half of the head dims by angles proportional to the frame index.

    x: (b, h, T, N, d); frame: (T,) absolute frame indices. Attention logits then depend only
    on how many frames apart a query and a key are, so cached keys stay valid as time runs on.
    """
    rot = x.shape[-1] // 2
    freqs = base ** (-torch.arange(0, rot, 2, device=x.device, dtype=torch.float32) / rot)
    ang = frame.to(torch.float32)[:, None] * freqs[None]  # (T, rot/2)
    cos, sin = ang.cos()[:, None, :].to(x.dtype), ang.sin()[:, None, :].to(x.dtype)  # (T, 1, rot/2)
    x1, x2, rest = x[..., 0:rot:2], x[..., 1:rot:2], x[..., rot:]
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return torch.cat([rotated, rest], dim=-1)


# ----------------------------------------------------------------------------- dispatch
# Up to this many tokens per sequence (and no gradient) the SSM runs the streaming step kernel
# instead of the chunked scan: one frame's tokens of a block (b_h * b_w) in the World's step. A
# guess made without a GPU (the step walks tokens one by one; the chunked scan pays for >= 16-token
# tiles): revisit with a GPU measurement.
STEP_MAX_L = 64
# Up to this many query frames (and no gradient) attention runs the streaming kernel; training
# stays on torch SDPA (the reference), which has fused GPU kernels with a backward.
STREAM_MAX_TQ = 4


@functools.cache
def _triton_kernels():
    """worldmodel.kernels when Triton can run here, else None."""
    try:
        from . import kernels  # optional and heavy: imported on the first CUDA call
    except Exception:  # triton missing or broken: the references serve
        return None
    return kernels


def choose_kernel(op: str, *args) -> str | None:
    """The function of worldmodel.kernels that `op` runs for these arguments on a GPU, None for
    the reference: the SSM scan steps token by token while streaming (no gradient, at most
    STEP_MAX_L tokens) and runs the chunked scan otherwise; the conv always has its kernel;
    attention has a forward kernel for streaming (at most STREAM_MAX_TQ query frames, no gradient)."""
    needs_grad = torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in args)
    if op == "ssd_scan":
        return "ssm_step" if not needs_grad and args[0].shape[1] <= STEP_MAX_L else "ssd_scan_chunked"
    if op == "causal_conv1d":
        return "causal_conv1d"
    if op == "windowed_attention":
        return "windowed_attention_stream" if not needs_grad and args[0].shape[2] <= STREAM_MAX_TQ else None
    raise ValueError(f"no kernel policy for {op!r}")


def _dispatch(op: str, reference, *args):
    """The chosen kernel for CUDA tensors when Triton is importable, else the reference."""
    name = choose_kernel(op, *args) if args[0].is_cuda else None
    kernels = _triton_kernels() if name is not None else None
    return (getattr(kernels, name) if kernels is not None else reference)(*args)


def ssd_scan(x, dt, A, B, C, chunk_size: int, initial_state=None):
    return _dispatch("ssd_scan", ssd_scan_reference, x, dt, A, B, C, chunk_size, initial_state)


def causal_conv1d(x, weight, bias, state=None):
    return _dispatch("causal_conv1d", causal_conv1d_reference, x, weight, bias, state)


def windowed_attention(q, k, v, key_valid, window):
    return _dispatch("windowed_attention", windowed_attention_reference, q, k, v, key_valid, window)
