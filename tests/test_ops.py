"""The hot ops' references against their definitions (the kernels are tested against these)."""

import pytest
import torch
import torch.nn.functional as F

from worldmodel import ops


@pytest.mark.parametrize("L,chunk", [(1, 4), (7, 4), (16, 4), (33, 8), (64, 64), (50, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_scan_matches_recurrence(L, chunk, with_state):
    g = torch.Generator().manual_seed(L * 100 + chunk)
    b, h, p, n = 2, 3, 4, 5
    x = torch.randn(b, L, h, p, generator=g, dtype=torch.float64)
    dt = F.softplus(torch.randn(b, L, h, generator=g, dtype=torch.float64))
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 4
    B = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, L, n, generator=g, dtype=torch.float64)
    s0 = torch.randn(b, h, p, n, generator=g, dtype=torch.float64) if with_state else None
    y, s = ops.ssd_scan_reference(x, dt, A, B, C, chunk, s0)
    y_ref, s_ref = ops.ssd_recurrent_reference(x, dt, A, B, C, s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s, s_ref, rtol=1e-9, atol=1e-9)


def test_ssd_scan_in_pieces_equals_whole():
    """Carrying the state across calls (streaming) gives the whole-sequence scan."""
    g = torch.Generator().manual_seed(0)
    b, L, h, p, n = 1, 24, 2, 3, 4
    x, B, C = (
        torch.randn(b, L, h, p, generator=g),
        torch.randn(b, L, n, generator=g),
        torch.randn(b, L, n, generator=g),
    )
    dt, A = F.softplus(torch.randn(b, L, h, generator=g)), -torch.rand(h, generator=g)
    y, s = ops.ssd_scan_reference(x, dt, A, B, C, 8)
    state, ys = None, []
    for sl in (slice(0, 5), slice(5, 9), slice(9, 24)):
        yy, state = ops.ssd_scan_reference(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], 8, state)
        ys.append(yy)
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)


def test_causal_conv1d_streaming():
    g = torch.Generator().manual_seed(0)
    x, w, bias = (
        torch.randn(2, 11, 6, generator=g),
        torch.randn(6, 4, generator=g),
        torch.randn(6, generator=g),
    )
    y, _ = ops.causal_conv1d_reference(x, w, bias)
    # definition: y[t] = bias + sum_j w[:, j] * x[t - 3 + j] with zeros before the start
    xp = F.pad(x, (0, 0, 3, 0))
    y_def = bias + sum(w[:, j] * xp[:, j:j + 11] for j in range(4))
    torch.testing.assert_close(y, y_def, rtol=1e-5, atol=1e-5)
    state, ys = None, []
    for t in range(11):
        yy, state = ops.causal_conv1d_reference(x[:, t:t + 1], w, bias, state)
        ys.append(yy)
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=1e-5, atol=1e-5)


def dense_reference(q, k, v, key_valid, window):
    """Brute force: one softmax over all key tokens with an explicit frame mask."""
    b, h, Tq, N, d = q.shape
    Tk = k.shape[2]
    qf = torch.arange(Tk - Tq, Tk)[:, None]
    kf = torch.arange(Tk)[None, :]
    allowed = (kf <= qf) & ((kf >= qf - window) if window is not None else True)
    allowed = allowed[None] & key_valid[:, None, :]  # (b, Tq, Tk)
    scores = torch.einsum("bhqnd,bhkmd->bhqnkm", q, k) / d ** 0.5
    scores = scores.masked_fill(~allowed[:, None, :, None, :, None], float("-inf"))
    p = scores.reshape(b, h, Tq, N, Tk * N).softmax(-1).reshape(scores.shape)
    return torch.einsum("bhqnkm,bhkmd->bhqnd", p, v)


@pytest.mark.parametrize("Tq,window,N", [(1, 3, 4), (5, 3, 4), (9, 2, 3), (13, 3, 5), (30, 10, 2), (7, 0, 3)])
def test_windowed_attention(Tq, window, N):
    g = torch.Generator().manual_seed(Tq * 10 + window)
    b, h, d = 2, 2, 8
    Tk = Tq + window
    q, k, v = (torch.randn(b, h, T, N, d, generator=g) for T in (Tq, Tk, Tk))
    valid = torch.ones(b, Tk, dtype=torch.bool)
    valid[0, : window + 1] = False  # not-yet-filled cache slots; the query frames stay valid
    valid[:, window:] = True
    out = ops.windowed_attention_reference(q, k, v, valid, window)
    torch.testing.assert_close(out, dense_reference(q, k, v, valid, window), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("Tq,Tk", [(1, 1), (1, 6), (4, 4), (3, 9)])
def test_full_causal_attention(Tq, Tk):
    g = torch.Generator().manual_seed(Tq + Tk)
    q, k, v = (
        torch.randn(1, 2, Tq, 3, 4, generator=g),
        torch.randn(1, 2, Tk, 3, 4, generator=g),
        torch.randn(1, 2, Tk, 3, 4, generator=g),
    )
    valid = torch.ones(1, Tk, dtype=torch.bool)
    out = ops.windowed_attention_reference(q, k, v, valid, None)
    torch.testing.assert_close(out, dense_reference(q, k, v, valid, None), rtol=1e-5, atol=1e-5)


def test_rotary_time_is_relative():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 1, 16, generator=g)
    dots = [
        (ops.rotary_time(q, torch.tensor([t + 3])) * ops.rotary_time(k, torch.tensor([t]))).sum()
        for t in (0, 17, 4000)
    ]
    torch.testing.assert_close(dots[0], dots[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dots[0], dots[2], rtol=1e-3, atol=1e-3)
