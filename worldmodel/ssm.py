"""Block-wise Mamba2 (SSD) layer.

The token grid of every frame is cut into (b_h, b_w) blocks; each block is one independent
sequence -- its b_h*b_w tokens of frame 0, then those of frame 1, ... -- scanned causally by a
Mamba2 mixer. Temporally adjacent tokens are b_h*b_w steps apart instead of H*W, and each block
keeps its own recurrent state. b_h = b_w = grid gives the plain frame-wise Mamba2 baseline.

Training runs the chunked (parallel) SSD form over the whole clip; streaming runs the same
function over one frame's tokens starting from the carried state, so both give the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops


def to_blocks(x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """(B, T, G, G, d) -> (B * nblocks, T * bh * bw, d): one sequence per spatial block."""
    B, T, G, _, d = x.shape
    x = x.reshape(B, T, G // bh, bh, G // bw, bw, d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(B * (G // bh) * (G // bw), T * bh * bw, d)


def from_blocks(x: torch.Tensor, B: int, T: int, G: int, bh: int, bw: int) -> torch.Tensor:
    d = x.shape[-1]
    x = x.reshape(B, G // bh, G // bw, T, bh, bw, d).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(B, T, G, G, d)


class BlockMamba2(nn.Module):
    def __init__(self, d_model: int, block: tuple[int, int], grid: int, d_state: int = 64, expand: int = 2,
                 headdim: int = 64, d_conv: int = 4, chunk_size: int = 64,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        self.block, self.grid = block, grid
        self.n_blocks = (grid // block[0]) * (grid // block[1])
        self.d_inner = expand * d_model
        self.n_heads = self.d_inner // headdim
        self.headdim, self.d_state, self.d_conv, self.chunk_size = headdim, d_state, d_conv, chunk_size
        self.conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.n_heads, bias=False)
        conv_weight = torch.empty(self.conv_dim, d_conv).uniform_(-1, 1) / math.sqrt(d_conv)
        self.conv_weight = nn.Parameter(conv_weight)
        self.conv_bias = nn.Parameter(torch.zeros(self.conv_dim))
        # dt initialised log-uniformly in [dt_min, dt_max] (Mamba's recipe), stored pre-softplus.
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = nn.RMSNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict:
        nb = batch * self.n_blocks
        return {"conv": torch.zeros(nb, self.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
                "ssm": torch.zeros(nb, self.n_heads, self.headdim, self.d_state, device=device,
                                   dtype=torch.float32)}

    def forward(self, x: torch.Tensor, state: dict | None = None):
        """x: (B, T, G, G, d). Returns the output and the state after the last frame."""
        B, T, G = x.shape[:3]
        bh, bw = self.block
        u = to_blocks(x, bh, bw)
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        conv = None if state is None else state["conv"]
        xbc, conv_state = ops.causal_conv1d(xbc, self.conv_weight, self.conv_bias, conv)
        xs, Bm, Cm = F.silu(xbc).split([self.d_inner, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float())
        xs = xs.reshape(*xs.shape[:2], self.n_heads, self.headdim)
        y, ssm_state = ops.ssd_scan(xs.float(), dt.float(), A, Bm.float(), Cm.float(), self.chunk_size,
                                    None if state is None else state["ssm"])
        y = y.to(x.dtype) + xs * self.D[:, None].to(x.dtype)
        y = self.norm(y.reshape(*y.shape[:2], self.d_inner) * F.silu(z))
        out = from_blocks(self.out_proj(y), B, T, G, bh, bw)
        return out, {"conv": conv_state, "ssm": ssm_state}
