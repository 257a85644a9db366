"""Frame-local attention and its KV window.

Each frame's tokens attend bidirectionally within the frame and causally to the previous
`window` frames (the paper's k = 10). The streaming state is a fixed-size cache of the last
`window` frames' keys and values, a validity flag per slot and the frame counter that rotary
time embeddings read, so it never grows. With
window=None (the `causal` baseline) the cache keeps every frame: that is the baseline's cost.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import ops


class FrameLocalAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, window: int | None):
        super().__init__()
        self.n_heads, self.head_dim, self.window = n_heads, d_model // n_heads, window
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)  # QK-norm keeps logits tame in long training
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(d_model, d_model)

    def init_state(self, batch: int, tokens: int, device=None, dtype=torch.float32) -> dict:
        frames = 0 if self.window is None else self.window
        shape = (batch, self.n_heads, frames, tokens, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype),
                "valid": torch.zeros(batch, frames, dtype=torch.bool, device=device),
                "frame": torch.zeros((), dtype=torch.long, device=device)}  # index of the next frame

    def forward(self, x: torch.Tensor, state: dict | None = None):
        """x: (B, T, N, d) tokens of T new frames. Returns the output and the cache after them."""
        B, T, N, d = x.shape
        if state is None:
            state = self.init_state(B, N, x.device, x.dtype)
        q, k, v = self.qkv(x).reshape(B, T, N, 3, self.n_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        frame = state["frame"] + torch.arange(T, device=x.device)
        q, k = ops.rotary_time(self.q_norm(q), frame), ops.rotary_time(self.k_norm(k), frame)
        k_all = torch.cat([state["k"], k], dim=2)
        v_all = torch.cat([state["v"], v], dim=2)
        valid = torch.cat([state["valid"], torch.ones(B, T, dtype=torch.bool, device=x.device)], dim=1)
        out = ops.windowed_attention(q, k_all, v_all, valid, self.window)
        out = self.proj(out.permute(0, 2, 3, 1, 4).reshape(B, T, N, d))
        keep = k_all.shape[2] if self.window is None else self.window  # frames the cache holds next
        new_state = {"k": k_all[:, :, -keep:] if keep else k_all[:, :, :0],
                     "v": v_all[:, :, -keep:] if keep else v_all[:, :, :0],
                     "valid": valid[:, -keep:] if keep else valid[:, :0], "frame": state["frame"] + T}
        return out, new_state
