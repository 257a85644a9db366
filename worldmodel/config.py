"""Configs and the registry of named presets.

A preset is a complete ``ModelConfig`` plus the training recipe that goes with it. ``get_preset``
is the one door in: an unknown name is an error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

from .actions import NUM_ACTIONS

# Sampler steps per frame of the app, World, eval, bench and rollout unless told. Measured on the
# shipped model (BENCHMARKS.md, "Sampler steps"): 1 step is as good as 4 in free play and better in
# look-back, at 2 model passes per frame instead of 5.
DEFAULT_STEPS = 1
# ... and without a commit pass: the state of the last denoising pass is kept (`DiffusionSampler`).
# Measured at 1 step ("Sampler steps"): look-back +0.37 dB, free play +0.30 dB, at 1 model pass a frame.
DEFAULT_FOLD_COMMIT = True

VARIANTS = ("ours", "mamba2", "mamba2_local", "causal", "causal_window")


@dataclass
class ModelConfig:
    variant: str = "ours"
    frame_size: int = 64  # H = W of the frames (or latents) the network sees
    in_channels: int = 3
    patch_size: int = 8  # token grid = (frame_size / patch_size)^2
    # Each frame sees the previous clean frame (its patches concatenated, as DIAMOND and GameNGen
    # condition) and the network predicts the change from it, so "nothing moved" is the zero
    # output and what stays still is copied sharp. Measured: without it, 2,100 CPU steps never
    # learned to copy the last frame (teacher-forced PSNR 22.0 dB at s=1, blurry patches).
    prev_frame_input: bool = True
    d_model: int = 256
    n_layers: int = 8
    n_heads: int = 4  # attention heads
    mlp_ratio: float = 4.0
    # Block sizes (b_h, b_w) of the SSM scan, cycled over layers. The paper mixes small and large.
    block_sizes: list = field(default_factory=lambda: [[2, 2], [4, 4], [2, 2], [8, 8]])
    attn_window: int = 10  # frame-local attention: previous k frames (plus the frame itself)
    # Mamba2 / SSD
    d_state: int = 32
    expand: int = 2
    headdim: int = 64
    d_conv: int = 4
    chunk_size: int = 64
    # Conditioning
    num_actions: int = NUM_ACTIONS
    # The agent's pose (x, y in maze cells, heading unit vector) per frame as a further condition,
    # as the paper's Memory Maze models are given: retracing a path replays poses seen before, so
    # the memory has a key to recall by. Optional per frame (NaN = unknown: the app has no pose).
    pose_cond: bool = False
    # Pose-keyed memory (needs pose_cond): a recurrent map from pose to what was seen there, so a
    # view seen long ago can be recalled when the agent stands there again -- what the SSM heads did
    # not learn on this project's CPU budget (their states halve within ~16 frames, BENCHMARKS.md).
    # Keys: tent weights on a lattice of positions (memory_resolution points per cell over
    # memory_cells^2 cells) times memory_headings heading bins. A read is a write's key times the
    # read's key, summed: its reach is twice a lattice step, so the finer the lattice, the more the
    # read is the view seen at that pose rather than a mean of its neighbours' (BENCHMARKS.md,
    # "A finer memory lattice"; Memory Maze turns 18.4 degrees a step).
    pose_memory: bool = False
    memory_cells: int = 10
    memory_headings: int = 20
    memory_resolution: int = 1
    # How much of the memory's read the prediction takes as it is, in proportion to the read's
    # confidence: x0 <- lerp(x0, read, recall_blend * confidence). 0 = the read is only an input.
    # The network does not copy what the memory holds (retrieval: its frames 17.5 dB, the read
    # decoded 24.0); taken directly, revisited views come back (BENCHMARKS.md, "Recall blend").
    recall_blend: float = field(default=0.0, metadata={"range": (0.0, 1.0)})

    def __post_init__(self):
        self._check_types()
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.frame_size % self.patch_size:
            raise ValueError(f"frame_size {self.frame_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        g = self.grid
        for bh, bw in self.block_sizes:
            if g % bh or g % bw:
                raise ValueError(f"block size ({bh},{bw}) does not tile the {g}x{g} token grid")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        if (self.expand * self.d_model) % self.headdim:
            raise ValueError("expand * d_model must be a multiple of headdim")
        if self.pose_memory and not (self.pose_cond and self.prev_frame_input):
            raise ValueError("pose_memory needs pose_cond (its keys) and prev_frame_input (what it stores)")
        if self.recall_blend and not self.pose_memory:
            raise ValueError("recall_blend needs pose_memory (the read it blends in)")

    def _check_types(self) -> None:
        """Each field of the type its default has (ints >= 1, block_sizes pairs of them): a config.json
        with `"frame_size": "8"` is a ValueError naming the field, not an error deep in the model."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            bounds = f.metadata.get("range")  # a float allowed to be 0: its [lo, hi]
            ok = {"str": isinstance(value, str), "bool": isinstance(value, bool),
                  "int": isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1,
                  "float": isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and (bounds[0] <= value <= bounds[1] if bounds else value > 0),
                  "list": isinstance(value, (list, tuple)) and len(value) >= 1 and all(
                      isinstance(b, (list, tuple)) and len(b) == 2 and all(
                          isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in b)
                      for b in value)}[kind]
            if not ok:
                number = f"a number in [{bounds[0]}, {bounds[1]}]" if bounds else "a number > 0"
                want = {"int": "an int >= 1", "float": number, "bool": "true or false",
                        "str": "a string", "list": "a list of [b_h, b_w] pairs of ints >= 1"}[kind]
                raise ValueError(f"model config: {f.name} must be {want}, got {value!r}")

    @property
    def grid(self) -> int:
        return self.frame_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def has_ssm(self) -> bool:
        return self.variant in ("ours", "mamba2", "mamba2_local")

    @property
    def has_attention(self) -> bool:
        return self.variant != "mamba2"

    def layer_block_size(self, layer: int) -> tuple[int, int]:
        """(b_h, b_w) of layer's SSM scan: per-layer sizes for ours, the whole frame otherwise."""
        if self.variant == "ours":
            bh, bw = self.block_sizes[layer % len(self.block_sizes)]
            return int(bh), int(bw)
        return self.grid, self.grid

    @property
    def window(self) -> int | None:
        """Frames of history each attention query sees; None = all (full causal attention)."""
        return None if self.variant == "causal" else self.attn_window

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A config from `to_dict` or a checkpoint's config.json. Keys of removed options are dropped
        when they hold the only value still supported (older checkpoints write them), else refused."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a model config as a dict, got {type(d).__name__}")
        d = dict(d)
        for key, supported in RETIRED.items():
            value = d.pop(key, supported)
            if value != supported:
                raise ValueError(f"{key}={value!r} is no longer supported (only {supported!r})")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"model config: unknown key(s) {unknown}")
        return cls(**d)


# Options removed from ModelConfig: {key: the value older configs may hold}. action_dim > 0 was a
# continuous action input that World never accepted.
RETIRED = {"action_dim": 0}


@dataclass
class TrainConfig:
    clip_len: int = 32
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int = 5000
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    prefix_prob: float = 0.5  # long-context training: clean prefix half of the time
    prefix_min: float = 0.5  # ... covering more than this fraction of the clip
    self_prev_prob: float = 0.5  # clips whose previous-frame input is the model's own prediction
    pose_drop: float = 0.3  # pose-conditioned models: clips trained without their poses (play without pose)
    gap_prob: float = 0.0  # clips with a memory gap after the clean prefix (see FlowMatching)
    gap_max: int = 32  # ... of up to this many frames
    # Curriculum: [[step, clip_len], ...] -- clip length switches at those steps.
    curriculum: list = field(default_factory=list)
    val_every: int = 250
    ckpt_every: int = 250
    sample_every: int = 1000

    def clip_len_at(self, step: int) -> int:
        length = self.clip_len
        for at, clip in self.curriculum:
            if step >= at:
                length = clip
        return length


@dataclass
class Preset:
    model: ModelConfig
    train: TrainConfig
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        ModelConfig(patch_size=8, d_model=32, n_layers=2, n_heads=2, block_sizes=[[2, 2], [4, 4]],
                    attn_window=2, d_state=8, headdim=16, chunk_size=16),
        TrainConfig(clip_len=8, batch_size=2, warmup_steps=5, max_steps=50, ema_decay=0.9),
        "tests only: 64 tokens/frame, ~85K params, seconds on a CPU",
    ),
    "tiny-latent": Preset(
        ModelConfig(frame_size=8, in_channels=4, patch_size=2, d_model=32, n_layers=2, n_heads=2,
                    block_sizes=[[1, 1], [4, 4]], attn_window=2, d_state=8, headdim=16, chunk_size=16),
        TrainConfig(clip_len=8, batch_size=2, warmup_steps=5, max_steps=50, ema_decay=0.9),
        "tests only: the latent path on the tiny autoencoder (`train-vae --size tiny`)",
    ),
    "cpu": Preset(
        ModelConfig(frame_size=8, in_channels=16, patch_size=2, d_model=128, n_layers=6, n_heads=4,
                    block_sizes=[[1, 1], [2, 2], [4, 4], [1, 1], [2, 2], [4, 4]], attn_window=10, d_state=32,
                    headdim=32, chunk_size=64),
        TrainConfig(clip_len=32, batch_size=8, lr=1e-3, warmup_steps=100, max_steps=3000,
                    ema_decay=0.995, val_every=200, ckpt_every=100, sample_every=0),
        "Memory Maze on 8x8x16 latents of the maze autoencoder (`--vae`): 16 tokens/frame, "
        "trains on a 2-core CPU",
    ),
    "cpu-pixel": Preset(
        ModelConfig(d_model=128, n_layers=6, n_heads=4,
                    block_sizes=[[2, 2], [4, 4], [2, 2], [8, 8], [4, 4], [8, 8]], attn_window=10, d_state=32,
                    headdim=32, chunk_size=64),
        TrainConfig(clip_len=32, batch_size=4, lr=1e-3, warmup_steps=100, max_steps=2000,
                    ema_decay=0.995, val_every=200, ckpt_every=100, sample_every=500),
        "Memory Maze 64x64 in pixels (2.9M params, 64 tokens/frame); ~5x the training time per frame of cpu",
    ),
    "gpu": Preset(
        ModelConfig(frame_size=8, in_channels=16, patch_size=1, d_model=384, n_layers=12, n_heads=6,
                    attn_window=10, d_state=64, headdim=64, chunk_size=64,
                    block_sizes=[[2, 2], [4, 4], [2, 2], [8, 8]]),
        TrainConfig(clip_len=64, batch_size=32, lr=4e-4, warmup_steps=500, max_steps=8000,
                    curriculum=[[5000, 128]], ema_decay=0.999),
        "Memory Maze on the autoencoder's 8x8x16 latents (`--vae`), 1x1 patches: 64 tokens/frame; "
        "for one H100/H200",
    ),
    "paper": Preset(
        ModelConfig(d_model=1024, n_layers=16, n_heads=16, patch_size=4, attn_window=10, d_state=128,
                    headdim=64, chunk_size=256, block_sizes=[[2, 2], [4, 4], [8, 8], [16, 16]]),
        TrainConfig(clip_len=400, batch_size=32, lr=1e-4, warmup_steps=2000, max_steps=400_000,
                    curriculum=[[150_000, 800]]),
        "~200M parameters as in the paper; 400- then 800-frame clips; needs many GPUs",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return Preset(dataclasses.replace(p.model), dataclasses.replace(p.train), p.description)
