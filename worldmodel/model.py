"""The world model network, top to bottom in one file (DiT / nanoGPT style).

frames (B, T, H, W, C) -> patches -> tokens (B, T, G, G, d), laid out space-major / time-minor
(all tokens of frame t before those of frame t+1), so everything is causal in time.
Each layer is an AdaLN block [block-wise SSM -> frame-local attention -> MLP], modulated by one
conditioning vector per frame: the embedding of that frame's noise level plus its action.
Each frame's patches are concatenated with the previous clean frame's, and the output is that
frame plus the predicted change: the predicted clean frame (see diffusion.py for why not the
velocity; ``ModelConfig.prev_frame_input`` for why the previous frame). With the pose-keyed memory
and ``ModelConfig.recall_blend``, that prediction then moves toward the memory's read by its confidence.

The paper's baselines are switches of this same code (``ModelConfig.variant``):
  ours          block-wise SSM (block size per layer) + frame-local attention over k frames
  mamba2        frame-wise SSM (one block = the whole frame), no attention
  mamba2_local  frame-wise SSM + frame-local attention
  causal        attention over all earlier frames, no SSM (quadratic; the cache grows)
  causal_window attention over the last `attn_window` frames, no SSM

``forward`` takes an optional recurrent ``state`` and returns the state after its frames, so the
same function trains on whole clips (state=None) and streams one frame at a time (T=1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps

from .attention import FrameLocalAttention
from .config import ModelConfig
from .ssm import BlockMamba2


class PoseEmbedding(nn.Module):
    """(x, y, dx, dy) -> d: Fourier features of the position (periods 16 down to 0.5 cells, so
    neighbouring cells differ) and harmonics of the heading, through an MLP. A frame whose pose
    is unknown (NaN) gets zero, i.e. exactly the model without pose; the output layer starts at
    zero, so adding pose to a trained model changes nothing until training moves it."""

    FREQS = 6
    HARMONICS = 4

    def __init__(self, d: int):
        super().__init__()
        n = 2 * 2 * self.FREQS + 2 * self.HARMONICS
        self.mlp = nn.Sequential(nn.Linear(n, d), nn.SiLU(), nn.Linear(d, d))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, pose):
        known = ~pose.isnan().any(dim=-1, keepdim=True)
        pose = pose.nan_to_num(0.0).float()
        freqs = torch.pi / 8 * 2.0 ** torch.arange(self.FREQS, device=pose.device)
        xy = pose[..., :2, None] * freqs  # (..., 2, F)
        harmonics = torch.arange(1, self.HARMONICS + 1, device=pose.device)
        heading = torch.atan2(pose[..., 3], pose[..., 2])[..., None] * harmonics
        feats = torch.cat([xy.sin().flatten(-2), xy.cos().flatten(-2), heading.sin(), heading.cos()], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype)) * known


class PoseMemory(nn.Module):
    """What was seen where: a linear recurrence over frames whose state is a map from pose to the
    clean frames seen at that pose, read at the pose of the frame being made. It is the SSD scan
    with A = 0 (nothing decays), B = key of the frame written and C = key of the frame read, run per
    token (1x1 blocks); its values are latent patches and a count, so a read is the key-weighted
    mean of what was seen at nearby poses plus how much was seen. A key is the product of tent
    weights on a lattice of positions (`resolution` points per cell) and on heading bins; an unknown pose is
    the zero key (nothing written or read). No parameters: the network learns when to trust it.
    Cost per frame is constant: one (keys x values) read and write, whatever the game's length."""

    EPS = 0.1  # a read's confidence is count / (count + EPS): 0.9 after one frame at the exact pose

    def __init__(self, cells: int, headings: int, resolution: int = 1):
        super().__init__()
        self.points, self.headings, self.resolution = cells * resolution, headings, resolution
        self.n_keys = self.points * self.points * headings

    def keys(self, pose):
        """(..., 4) poses (x, y in cells, heading vector) -> (..., n_keys); zeros where unknown."""
        known = ~pose.isnan().any(dim=-1, keepdim=True)
        pose = pose.nan_to_num(0.0).float()
        lattice = torch.arange(self.points, device=pose.device, dtype=torch.float32)
        x, y = ((1 - ((pose[..., i, None] * self.resolution).clamp(0, self.points - 1) - lattice).abs())
                .clamp(min=0) for i in (0, 1))
        turns = torch.atan2(pose[..., 3], pose[..., 2])[..., None] / (2 * torch.pi) * self.headings
        bins = torch.arange(self.headings, device=pose.device, dtype=torch.float32)
        dist = torch.remainder(turns - bins, self.headings)
        h = (1 - torch.minimum(dist, self.headings - dist)).clamp(min=0)
        key = x[..., :, None, None] * y[..., None, :, None] * h[..., None, None, :]
        return key.flatten(-3) * known

    def init_state(self, batch: int, tokens: int, values: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.n_keys, tokens, values + 1, device=device, dtype=torch.float32)

    @torch.autocast("cuda", enabled=False)  # sums over a whole game: float32, also under bf16 training
    @torch.autocast("cpu", enabled=False)
    def forward(self, values, write_pose, read_pose, state=None, state_out: str = "new"):
        """values (B, T, N, V): the clean frame before each frame, as N tokens; write_pose (B, T, 4)
        its pose; read_pose (B, T, 4) the pose of each frame made. Frame t reads everything written
        at frames <= t (i.e. seen before it). Returns the mean (B, T, N, V), the confidence
        (B, T, N, 1) and the state after the T writes (`WorldModel.forward`'s `state_out`: "new" a
        copy, "inplace" `state` itself written, "none" None: the map is tens of MB, and copying it
        for a pass whose state is not kept would be most of a frame's cost)."""
        B, T, N, V = values.shape
        kw, kr = self.keys(write_pose), self.keys(read_pose)
        # A pose lights at most 8 of the keys: work on those the clip touches, not on the whole map.
        active = ((kw != 0) | (kr != 0)).flatten(0, 1).any(0).nonzero().squeeze(1)
        kw, kr = kw[..., active], kr[..., active]
        vals = torch.cat([values.float(), values.new_ones(B, T, N, 1, dtype=torch.float32)], dim=-1)
        causal = torch.ones(T, T, dtype=torch.bool, device=values.device).tril()
        weights = (kr @ kw.transpose(1, 2)).masked_fill(~causal, 0.0)  # (B, T read, T written)
        read = torch.einsum("bts,bsnv->btnv", weights, vals)
        if state is not None:
            read = read + torch.einsum("btk,bknv->btnv", kr, state[:, active])
        written = None
        if state_out != "none":
            if state is None:
                written = self.init_state(B, N, V, values.device)
            else:
                written = state if state_out == "inplace" else state.clone()
            written[:, active] += torch.einsum("bsk,bsnv->bknv", kw, vals)
        count = read[..., -1:]
        mean = read[..., :-1] / count.clamp(min=1e-6)
        return mean.to(values.dtype), (count / (count + self.EPS)).to(values.dtype), written


STATE_OUT = ("new", "inplace", "none")  # what WorldModel.forward returns as the state after its frames


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Mlp(nn.Sequential):
    def __init__(self, d: int, ratio: float):
        hidden = int(d * ratio)
        super().__init__(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))


class Block(nn.Module):
    """One layer: each present sub-layer is x + gate * f(modulate(norm(x), shift, scale))."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        d = cfg.d_model
        self.ssm = BlockMamba2(d, cfg.layer_block_size(layer), cfg.grid, cfg.d_state, cfg.expand, cfg.headdim,
                               cfg.d_conv, cfg.chunk_size) if cfg.has_ssm else None
        self.attn = FrameLocalAttention(d, cfg.n_heads, cfg.window) if cfg.has_attention else None
        self.mlp = Mlp(d, cfg.mlp_ratio)
        self.n_sub = 1 + (self.ssm is not None) + (self.attn is not None)
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * self.n_sub * d))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def init_state(self, batch: int, tokens: int, device, dtype) -> dict:
        state = {}
        if self.ssm is not None:
            state["ssm"] = self.ssm.init_state(batch, device, dtype)
        if self.attn is not None:
            state["attn"] = self.attn.init_state(batch, tokens, device, dtype)
        return state

    def forward(self, x, c, state):
        B, T, G, _, d = x.shape
        mods = self.ada(c)[:, :, None, None, :].chunk(3 * self.n_sub, dim=-1)
        new_state, i = {}, 0
        if self.ssm is not None:
            shift, scale, gate = mods[i:i + 3]
            i += 3
            h, new_state["ssm"] = self.ssm(modulate(self.norm(x), shift, scale), state.get("ssm"))
            x = x + gate * h
        if self.attn is not None:
            shift, scale, gate = mods[i:i + 3]
            i += 3
            h = modulate(self.norm(x), shift, scale).reshape(B, T, G * G, d)
            h, new_state["attn"] = self.attn(h, state.get("attn"))
            x = x + gate * h.reshape(B, T, G, G, d)
        shift, scale, gate = mods[i:i + 3]
        x = x + gate * self.mlp(modulate(self.norm(x), shift, scale))
        return x, new_state


class WorldModel(ModelMixin, ConfigMixin):
    """Action-conditioned video diffusion network with block-wise SSM memory.

    Saved with diffusers' ``save_pretrained`` as config.json + safetensors.
    """

    @register_to_config
    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = self.cfg = ModelConfig.from_dict(config or {})
        self.register_to_config(config=cfg.to_dict())  # what save_pretrained writes: without retired keys
        d, p = cfg.d_model, cfg.patch_size
        patch = p * p * cfg.in_channels
        # inputs per token: the noisy patch, the previous clean frame's, and the memory's mean + confidence
        self.memory = (PoseMemory(cfg.memory_cells, cfg.memory_headings, cfg.memory_resolution)
                       if cfg.pose_memory else None)
        inputs = patch * (1 + cfg.prev_frame_input + cfg.pose_memory) + cfg.pose_memory
        self.patch_embed = nn.Linear(inputs, d)
        self.pos_embed = nn.Parameter(torch.randn(cfg.tokens_per_frame, d) * 0.02)
        self.sigma_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.sigma_embed = TimestepEmbedding(256, d)
        self.action_embed = nn.Embedding(cfg.num_actions, d)
        self.pose_embed = PoseEmbedding(d) if cfg.pose_cond else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, p * p * cfg.in_channels)
        for m in (self.final_ada[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # -- state -------------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict:
        """The recurrent state before any frame: per layer, SSM state per block and an empty KV window."""
        c = self.cfg
        state = {str(i): blk.init_state(batch, c.tokens_per_frame, device, dtype)
                 for i, blk in enumerate(self.blocks)}
        if c.prev_frame_input:  # the newest clean frame (zeros before the first)
            state["prev"] = torch.zeros(batch, 1, c.frame_size, c.frame_size, c.in_channels, device=device,
                                        dtype=dtype)
        # the map of what was seen where, and the newest frame's pose (to write it)
        if self.memory is not None:
            values = c.patch_size ** 2 * c.in_channels
            state["memory"] = self.memory.init_state(batch, c.tokens_per_frame, values, device)
            state["prev_pose"] = torch.full((batch, 1, 4), float("nan"), device=device)
        return state

    # -- patches -----------------------------------------------------------------------------
    def patchify(self, x):
        B, T, H, W, C = x.shape
        p, G = self.cfg.patch_size, self.cfg.grid
        return x.reshape(B, T, G, p, G, p, C).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, T, G, G, p * p * C)

    def unpatchify(self, x):
        B, T = x.shape[:2]
        p, G, C = self.cfg.patch_size, self.cfg.grid, self.cfg.in_channels
        return x.reshape(B, T, G, G, p, p, C).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, T, G * p, G * p, C)

    def _recall(self, prev, pose, state, new_state, state_out):
        """The memory's read for each frame (mean and confidence per token) after writing the frame
        before it, `prev`, at its pose; fills new_state's memory and prev_pose."""
        B, T = prev.shape[:2]
        G = self.cfg.grid
        if pose is None:
            pose = torch.full((B, T, 4), float("nan"), device=prev.device)
        before = state.get("prev_pose")
        before = torch.full((B, 1, 4), float("nan"), device=prev.device) if before is None else before
        prev_pose = torch.cat([before.to(pose.dtype), pose[:, :-1]], dim=1)
        values = self.patchify(prev).reshape(B, T, G * G, -1)
        mean, conf, new_state["memory"] = self.memory(values, prev_pose, pose, state.get("memory"), state_out)
        new_state["prev_pose"] = pose[:, -1:]
        return mean.reshape(B, T, G, G, -1), conf.reshape(B, T, G, G, 1)

    def condition(self, sigma, action, pose=None):
        """One vector per frame from its noise level in [0, 1], its action and (if the model takes
        it) the agent's pose."""
        B, T = sigma.shape
        levels = self.sigma_proj(sigma.reshape(-1) * 1000).to(self.pos_embed.dtype)
        c = self.sigma_embed(levels).reshape(B, T, -1)
        c = c + self.action_embed(action)
        if self.pose_embed is not None and pose is not None:
            c = c + self.pose_embed(pose)
        return c

    def forward(self, x, sigma, action, state: dict | None = None, prev=None, pose=None,
                state_out: str = "new"):
        """x: (B, T, H, W, C) noisy frames; sigma: (B, T) their noise levels; action: (B, T) ints;
        state: from ``init_state`` or a previous call, None = fresh.
        prev: (B, T, H, W, C) the clean frame before each frame; None = the state's newest frame,
        then x's own frames (right when x is clean, as in a prefill; a sampler overwrites
        ``state["prev"]`` with the clean frame it committed).
        pose: (B, T, 4) the agent's (x, y, dx, dy) per frame for a ``pose_cond`` model; None or
        NaN rows = unknown (ignored by other models).
        state_out: "new" (a new state; `state` untouched), "inplace" (the new state reuses `state`'s
        pose-memory map, written in place: `state` is spent) or "none" (no state returned): a stream
        keeps one state a frame, and the pose map is tens of MB.
        Returns the predicted clean frames (B, T, H, W, C) and the state after these T frames."""
        if state_out not in STATE_OUT:
            raise ValueError(f"expected state_out as one of {STATE_OUT}, got {state_out!r}")
        B, T = x.shape[:2]
        state = state or {}
        new_state = {}
        patches = self.patchify(x)
        if self.cfg.prev_frame_input:
            if prev is None:
                first = state.get("prev")
                first = torch.zeros_like(x[:, :1]) if first is None else first.to(x.dtype)
                prev = torch.cat([first, x[:, :-1]], dim=1)
            prev_patches = self.patchify(prev)
            patches = torch.cat([patches, prev_patches], dim=-1)
            new_state["prev"] = x[:, -1:]
        if self.memory is not None:
            recalled, confidence = self._recall(prev, pose, state, new_state, state_out)
            patches = torch.cat([patches, recalled, confidence], dim=-1)
        h = self.patch_embed(patches) + self.pos_embed.reshape(1, 1, self.cfg.grid, self.cfg.grid, -1)
        c = self.condition(sigma, action, pose)
        for i, blk in enumerate(self.blocks):
            h, new_state[str(i)] = blk(h, c, state.get(str(i), {}))
        shift, scale = self.final_ada(c)[:, :, None, None, :].chunk(2, dim=-1)
        out = self.out(modulate(self.final_norm(h), shift, scale))  # per token, as patches
        if self.cfg.prev_frame_input:
            out = out + prev_patches
        if self.cfg.recall_blend:  # where the memory has seen this pose, take its read as it is
            out = torch.lerp(out, recalled, self.cfg.recall_blend * confidence)
        return self.unpatchify(out), None if state_out == "none" else new_state
