"""Every Triton kernel (worldmodel/kernels/) against its reference in worldmodel/ops.py, on fresh
random inputs.

On a GPU the kernels run compiled; on a CPU they run under Triton's interpreter
(TRITON_INTERPRET=1, set by conftest.py before triton is imported), so shapes stay tiny here:
ragged lengths, p and n that are not powers of two, fp32 and fp16 inputs (bf16 arithmetic is
wrong under the interpreter). References run in float64 so only the kernel's error is measured.
"""

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # in case conftest.py was bypassed
pytest.importorskip("triton")

from worldmodel import kernels, ops  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def assert_close(got, want, tol):
    """Max error within tol relative to the reference's scale (outputs mix terms of many sizes)."""
    got, want = got.double(), want.double()
    err = (got - want).abs().max().item() if want.numel() else 0.0
    scale = 1.0 + want.abs().max().item() if want.numel() else 1.0
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} * {scale:.3g}"


def ssd_inputs(b, L, h, p, n, dtype, seed, with_state=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, h, p, generator=g)
    dt = F.softplus(torch.randn(b, L, h, generator=g) - 1)
    A = -torch.rand(h, generator=g) * 4 - 0.1
    B, C = torch.randn(b, L, n, generator=g), torch.randn(b, L, n, generator=g)
    s0 = torch.randn(b, h, p, n, generator=g) if with_state else None
    x, dt, B, C = (t.to(dtype).to(DEV) for t in (x, dt, B, C))  # low-precision activations
    return x, dt, A.to(DEV), B, C, (s0.to(DEV) if s0 is not None else None)  # A, state: fp32


def f64(*ts):
    return [t.double() if t is not None else None for t in ts]


# ----------------------------------------------------------------------------- SSM step
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,L,h,p,n", [(2, 1, 3, 4, 5), (2, 7, 2, 5, 6), (1, 16, 2, 8, 16), (3, 12, 1, 3, 7)])
def test_ssm_step_matches_recurrence(b, L, h, p, n, dtype):
    x, dt, A, B, C, s0 = ssd_inputs(b, L, h, p, n, dtype, seed=L * 31 + p)
    y, s = kernels.ssm_step(x, dt, A, B, C, 8, s0)
    y_ref, s_ref = ops.ssd_recurrent_reference(*f64(x, dt, A, B, C, s0))
    assert y.dtype == dtype and s.dtype == torch.float32
    assert_close(y, y_ref, 1e-5 if dtype == torch.float32 else 2e-3)
    assert_close(s, s_ref, 1e-5)


def test_ssm_step_without_state_and_strided_inputs():
    """No initial state (zeros), and x/B/C as views of one projection (the model's layout)."""
    g = torch.Generator().manual_seed(5)
    b, L, h, p, n = 2, 6, 2, 4, 6
    proj = torch.randn(b, L, h * p + 2 * n, generator=g).to(DEV)
    x, B, C = proj.split([h * p, n, n], dim=-1)
    x = x.reshape(b, L, h, p)
    dt = F.softplus(torch.randn(b, L, h, generator=g)).to(DEV)
    A = -torch.rand(h, generator=g).to(DEV)
    y, s = kernels.ssm_step(x, dt, A, B, C, 8, None)
    y_ref, s_ref = ops.ssd_recurrent_reference(*f64(x, dt, A, B, C))
    assert_close(y, y_ref, 1e-5)
    assert_close(s, s_ref, 1e-5)


# ----------------------------------------------------------------------------- chunked scan
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,L,h,p,n,chunk", [
    (2, 1, 2, 4, 8, 8),     # one token
    (2, 7, 3, 5, 6, 8),     # L < chunk, p and n not powers of two
    (1, 33, 2, 8, 16, 16),  # ragged: 33 = 2 * 16 + 1
    (2, 40, 1, 6, 10, 16),  # ragged, several chunks
])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_scan_forward(b, L, h, p, n, chunk, with_state, dtype):
    x, dt, A, B, C, s0 = ssd_inputs(b, L, h, p, n, dtype, seed=L + 7 * n, with_state=with_state)
    y, s = kernels.ssd_scan_chunked(x, dt, A, B, C, chunk, s0)
    y_ref, s_ref = ops.ssd_recurrent_reference(*f64(x, dt, A, B, C, s0))
    assert y.shape == y_ref.shape and y.dtype == dtype
    assert_close(y, y_ref, 1e-5 if dtype == torch.float32 else 2e-3)
    assert_close(s, s_ref, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,L,h,p,n,chunk", [(2, 7, 2, 5, 6, 8), (1, 37, 2, 4, 8, 16), (1, 20, 3, 3, 5, 8)])
def test_ssd_scan_backward(b, L, h, p, n, chunk, dtype):
    """Every input's gradient (x, dt, A, B, C, initial state) vs autograd through the reference,
    with the loss reading both y and the final state."""
    inputs = ssd_inputs(b, L, h, p, n, dtype, seed=3 * L + n)
    g = torch.Generator().manual_seed(L)
    # gy is representable in y's dtype: autograd rounds it to that dtype on the way into the kernel
    gy = torch.randn(b, L, h, p, generator=g).to(dtype).float().to(DEV)
    gs = torch.randn(b, h, p, n, generator=g).to(DEV)

    leaves = [t.clone().requires_grad_() for t in inputs]
    y, s = kernels.ssd_scan_chunked(*leaves[:5], chunk, leaves[5])
    grads = torch.autograd.grad((y.float() * gy).sum() + (s * gs).sum(), leaves)

    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    y_ref, s_ref = ops.ssd_scan_reference(*ref_leaves[:5], chunk, ref_leaves[5])
    ref_grads = torch.autograd.grad((y_ref * gy.double()).sum() + (s_ref * gs.double()).sum(), ref_leaves)
    for name, got, want, leaf in zip(["x", "dt", "A", "B", "C", "s0"], grads, ref_grads, leaves):
        assert got.dtype == leaf.dtype and got.shape == leaf.shape, name
        try:  # the same fp16 inputs on both sides: only fp32 arithmetic (and fp16 dx, dB ...) differ
            assert_close(got, want, 1e-4 if dtype == torch.float32 or name in ("A", "s0") else 2e-3)
        except AssertionError as e:
            raise AssertionError(f"d{name}: {e}") from None


def test_ssd_scan_backward_y_only_no_state():
    """The training call: no initial state, only y reaches the loss."""
    x, dt, A, B, C, _ = ssd_inputs(2, 19, 2, 4, 8, torch.float32, seed=11, with_state=False)
    leaves = [t.clone().requires_grad_() for t in (x, dt, A, B, C)]
    y, _ = kernels.ssd_scan_chunked(*leaves, 8, None)
    grads = torch.autograd.grad(y.square().sum(), leaves)
    ref = [t.detach().double().requires_grad_() for t in (x, dt, A, B, C)]
    y_ref, _ = ops.ssd_scan_reference(*ref, 8, None)
    for got, want in zip(grads, torch.autograd.grad(y_ref.square().sum(), ref)):
        assert_close(got, want, 1e-4)


def test_streaming_steps_equal_chunked_scan():
    """Kernel-level 'streaming equals parallel': frames of 6 tokens through the step kernel,
    carrying the state, give the chunked kernel's outputs over the whole sequence."""
    x, dt, A, B, C, s0 = ssd_inputs(2, 30, 2, 4, 8, torch.float32, seed=2)
    y_all, s_all = kernels.ssd_scan_chunked(x, dt, A, B, C, 16, s0)
    state, ys = s0, []
    for t0 in range(0, 30, 6):
        sl = slice(t0, t0 + 6)
        y, state = kernels.ssm_step(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], 16, state)
        ys.append(y)
    assert_close(torch.cat(ys, 1), y_all, 1e-5)
    assert_close(state, s_all, 1e-5)


def test_dispatch_policy():
    """ops.choose_kernel, the one place that picks a kernel: the SSM steps token by token while
    streaming and scans in chunks with a gradient or a long sequence; attention runs its kernel
    for a few query frames without gradient and torch SDPA (the reference) otherwise."""
    x, dt, A, B, C, s0 = ssd_inputs(1, 5, 1, 2, 3, torch.float32, seed=0)
    long = ssd_inputs(1, ops.STEP_MAX_L + 1, 1, 2, 3, torch.float32, seed=0)
    q, k, v, valid = attn_inputs(1, 2, ops.STREAM_MAX_TQ, ops.STREAM_MAX_TQ + 2, 3, 8, torch.float32, seed=4)
    many = attn_inputs(1, 2, ops.STREAM_MAX_TQ + 1, ops.STREAM_MAX_TQ + 3, 3, 8, torch.float32, seed=4)
    with torch.no_grad():
        assert ops.choose_kernel("ssd_scan", x, dt, A, B, C, 8, s0) == "ssm_step"
        assert ops.choose_kernel("ssd_scan", *long[:5], 8, None) == "ssd_scan_chunked"
        assert ops.choose_kernel("windowed_attention", q, k, v, valid, 2) == "windowed_attention_stream"
        assert ops.choose_kernel("windowed_attention", *many, 2) is None
    assert ops.choose_kernel("ssd_scan", x.requires_grad_(), dt, A, B, C, 8, s0) == "ssd_scan_chunked"
    assert ops.choose_kernel("windowed_attention", q.requires_grad_(), k, v, valid, 2) is None
    conv = conv_inputs(1, 5, 6, 4, torch.float32, seed=0)
    assert ops.choose_kernel("causal_conv1d", *conv) == "causal_conv1d"
    for name in ("ssm_step", "ssd_scan_chunked", "causal_conv1d", "windowed_attention_stream"):
        assert callable(getattr(kernels, name))


# ----------------------------------------------------------------------------- causal conv1d
def conv_inputs(b, L, c, k, dtype, seed, with_state=True, with_bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, c, generator=g).to(dtype)
    w = torch.randn(c, k, generator=g).to(dtype) / k
    bias = torch.randn(c, generator=g).to(dtype) if with_bias else None
    state = torch.randn(b, k - 1, c, generator=g).to(dtype) if with_state else None
    return [t.to(DEV) if t is not None else None for t in (x, w, bias, state)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,L,c,k", [(2, 11, 6, 4), (1, 1, 8, 4), (2, 2, 37, 4), (1, 70, 5, 3), (2, 5, 3, 1)])
@pytest.mark.parametrize("with_state,with_bias", [(True, True), (False, True), (True, False)])
def test_causal_conv1d_forward(b, L, c, k, with_state, with_bias, dtype):
    x, w, bias, state = conv_inputs(
        b, L, c, k, dtype, seed=L * c + k, with_state=with_state, with_bias=with_bias
    )
    y, new_state = kernels.causal_conv1d(x, w, bias, state)
    y_ref, state_ref = ops.causal_conv1d_reference(*f64(x, w, bias, state))
    assert y.dtype == dtype and new_state.shape == state_ref.shape
    assert_close(y, y_ref, 1e-6 if dtype == torch.float32 else 2e-3)
    assert_close(new_state, state_ref, 0)  # copied inputs: exact


def test_causal_conv1d_token_by_token():
    x, w, bias, _ = conv_inputs(2, 9, 7, 4, torch.float32, seed=1, with_state=False)
    y_all, s_all = kernels.causal_conv1d(x, w, bias)
    state, ys = None, []
    for t in range(9):
        y, state = kernels.causal_conv1d(x[:, t:t + 1], w, bias, state)
        ys.append(y)
    assert_close(torch.cat(ys, 1), y_all, 1e-6)
    assert_close(state, s_all, 0)


def test_causal_conv1d_backward():
    """PyTorch backward (see worldmodel/kernels/causal_conv1d.py): gradients equal the reference's."""
    inputs = conv_inputs(2, 10, 6, 4, torch.float32, seed=3)
    leaves = [t.clone().requires_grad_() for t in inputs]
    y, s = kernels.causal_conv1d(*leaves)
    g = torch.Generator().manual_seed(0)
    gy, gs = torch.randn(y.shape, generator=g).to(DEV), torch.randn(s.shape, generator=g).to(DEV)
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), leaves)
    ref = [t.detach().double().requires_grad_() for t in inputs]
    y_ref, s_ref = ops.causal_conv1d_reference(*ref)
    ref_grads = torch.autograd.grad((y_ref * gy.double()).sum() + (s_ref * gs.double()).sum(), ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, 1e-6)


# ----------------------------------------------------------------------------- attention
def attn_inputs(b, h, Tq, Tk, N, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, Tq, N, d, generator=g)
    k, v = torch.randn(b, h, Tk, N, d, generator=g), torch.randn(b, h, Tk, N, d, generator=g)
    valid = torch.ones(b, Tk, dtype=torch.bool)
    valid[0, : max(Tk - Tq - 1, 0)] = False  # a cache not filled yet (the query frames stay valid)
    if Tk - Tq >= 2:
        valid[-1, 1] = False  # a hole in the middle of the window
    return [t.to(dtype).to(DEV) for t in (q, k, v)] + [valid.to(DEV)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Tq,window,N,d", [
    (1, 3, 4, 8),      # the streaming step: one new frame over a 3-frame window
    (1, 10, 5, 16),    # the paper's window, N and d off the 16-tile
    (2, 2, 3, 20),     # two query frames, d not a power of two
    (3, 0, 6, 8),      # window 0: each frame sees only itself
    (1, None, 7, 8),   # full causal (the 'causal' baseline)
    (2, None, 4, 8),
])
def test_windowed_attention_stream(Tq, window, N, d, dtype):
    Tk = Tq + (window if window is not None else 4)
    q, k, v, valid = attn_inputs(2, 2, Tq, Tk, N, d, dtype, seed=Tq * 13 + N)
    out = kernels.windowed_attention_stream(q, k, v, valid, window)
    ref = ops.windowed_attention_reference(*f64(q, k, v), valid, window)
    assert out.dtype == dtype and out.shape == q.shape
    assert_close(out, ref, 1e-5 if dtype == torch.float32 else 2e-3)


def test_windowed_attention_rejects_wrong_window():
    q, k, v, valid = attn_inputs(1, 1, 1, 3, 2, 4, torch.float32, seed=0)
    with pytest.raises(ValueError, match="Tq \\+ window"):
        kernels.windowed_attention_stream(q, k, v, valid, 5)


# ----------------------------------------------------------------------------- dispatch (GPU)
@needs_cuda
@pytest.mark.gpu
def test_ops_dispatch_to_kernels_on_cuda(monkeypatch):
    calls = []
    for name in ("ssm_step", "causal_conv1d", "windowed_attention_stream"):
        fn = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=fn, _n=name: calls.append(_n) or _f(*a))
    x, dt, A, B, C, s0 = ssd_inputs(1, 5, 2, 4, 8, torch.float32, seed=0)
    ops.ssd_scan(x, dt, A, B, C, 8, s0)
    ops.causal_conv1d(*conv_inputs(1, 5, 6, 4, torch.float32, seed=0))
    ops.windowed_attention(*attn_inputs(1, 1, 1, 3, 4, 8, torch.float32, seed=0), 2)
    assert calls == ["ssm_step", "causal_conv1d", "windowed_attention_stream"]
    ops.ssd_scan(x.cpu(), dt.cpu(), A.cpu(), B.cpu(), C.cpu(), 8, s0.cpu())  # CPU stays on the reference
    assert len(calls) == 3


@needs_cuda
@pytest.mark.gpu
def test_model_streaming_matches_reference_on_cuda():
    """The tiny model's SSM layer on CUDA (kernels) gives the CPU (reference) numbers."""
    from worldmodel.ssm import BlockMamba2

    torch.manual_seed(0)
    layer = BlockMamba2(d_model=32, block=(2, 2), grid=4, d_state=16, headdim=16, chunk_size=16)
    x = torch.randn(2, 3, 4, 4, 32)
    with torch.no_grad():
        out_cpu, st_cpu = layer(x)
        out_gpu, st_gpu = layer.cuda()(x.cuda())
    assert_close(out_gpu.cpu(), out_cpu, 1e-4)
    assert_close(st_gpu["ssm"].cpu(), st_cpu["ssm"], 1e-4)
