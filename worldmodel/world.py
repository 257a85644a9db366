"""`World`: the one sampling loop of the project. The app, rollouts and evaluation all use it.

    world = load_world("checkpoints/<name>")            # or a preset name, or None = shipped model
    frame = world.reset(context_frames, context_actions) # uint8 (T,H,W,3), (T,) -> uint8 (H,W,3)
    frame = world.step(action)                          # one new frame
    # a pose-conditioned model (cfg.pose_cond) also takes the agent's pose (x, y, dx, dy) per
    # frame: reset(..., context_poses=(T, 4)), step(action, pose=(4,)); a step without a pose after
    # a posed context gets the pose dead-reckoned from the actions (worldmodel.odometry; pass the
    # maze's layout to reset to keep it out of walls); with no poses at all it runs on actions
    snap = world.snapshot(); world.restore(snap)

Actions follow the Memory Maze dataset: context_actions[t] led to context_frames[t] (index 0 is
ignored) and step(a) takes action a from the newest frame. The state is the network's recurrent
state -- per layer one SSM state per spatial block and a KV cache of the last k frames, and the
pose-keyed memory's map if the model has one -- so
time and memory per frame do not depend on how long the game has run (except for the `causal`
baseline, whose cache keeps every frame by design).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .actions import action_index, action_indices
from .config import PRESETS, get_preset
from .diffusion import FlowMatching
from .model import WorldModel
from .odometry import Odometry
from .vae import FrameCodec, check_codec, frames_from_model, frames_to_model

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "maze9x9"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """What runs the model, for reports: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pose_array(poses, length: int) -> np.ndarray:
    """Poses as float32 (length, 4): x, y (maze cells) and the heading's unit vector; NaN = unknown."""
    p = np.asarray(poses, dtype=np.float32)
    if p.shape != (length, 4):
        raise ValueError(f"expected poses of shape ({length}, 4) (x, y, dx, dy), got {p.shape}")
    return p


def _flatten(state: dict, prefix: str = "state") -> dict:
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def _unflatten(flat: dict, prefix: str = "state") -> dict:
    out: dict = {}
    for key, v in flat.items():
        if not key.startswith(prefix + "."):
            continue
        node = out
        *path, leaf = key[len(prefix) + 1:].split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


class World:
    """A running world: the model, its recurrent state and the sampler."""

    def __init__(self, model: WorldModel, steps: int = 4, device: str | torch.device = "cpu", seed: int = 0,
                 prefill_chunk: int = 64, commit_sigma: float = 0.25, codec: FrameCodec | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        # A latent model works on the autoencoder's latents: frames are encoded on the way in and
        # decoded on the way out; without a codec the model works on pixels.
        check_codec(self.cfg, codec)
        self.codec = codec.to(self.device) if codec is not None else None
        # Generated frames are committed to the state at this noise level: the model was trained
        # on noisy context (diffusion forcing), and a little noise hides its own artefacts.
        self.steps, self.prefill_chunk, self.commit_sigma = steps, prefill_chunk, commit_sigma
        self.flow = FlowMatching()
        self.scheduler = self.flow.scheduler(steps, self.device)
        self._sigmas = self.scheduler.sigmas[:-1].tolist()  # set_timesteps needs them again every frame
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._state: dict | None = None
        self._last: np.ndarray | None = None
        self.frames_seen = 0
        self.odometry: Odometry | None = None  # the pose of steps taken without one
        self.pose: np.ndarray | None = None  # the newest frame's pose, if known or dead-reckoned
        self.layout: np.ndarray | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the frames reset() takes and step() returns."""
        if self.codec is not None:
            return self.codec.frame_shape
        return (self.cfg.frame_size, self.cfg.frame_size, self.cfg.in_channels)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames_to_model(frames)
        return x if self.codec is None else self.codec.encode(x)

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        return frames_from_model(x if self.codec is None else self.codec.decode(x))

    def _pose(self, poses, length: int) -> torch.Tensor | None:
        if poses is None or not self.cfg.pose_cond:
            return None  # a model without pose input ignores poses
        return torch.from_numpy(pose_array(poses, length)).to(self.device)[None]

    # -- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, context_frames, context_actions, context_poses=None, layout=None) -> np.ndarray:
        """Start from T real frames and the actions that led to them (and, for a pose-conditioned
        model, the agent's (T, 4) poses, optional, and the maze's `maze_layout` for dead reckoning
        past them); returns the newest frame."""
        frames = np.asarray(context_frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != self.frame_shape or len(frames) == 0:
            raise ValueError(f"expected context_frames as uint8 of shape (T, {', '.join(map(str, self.frame_shape))}) "
                             f"with T >= 1, got {frames.dtype} {frames.shape}")
        actions = torch.from_numpy(action_indices(context_actions, len(frames))).to(self.device)[None]
        poses = self._pose(context_poses, len(frames))
        x = self._encode(torch.from_numpy(frames).to(self.device))[None]
        state = self.model.init_state(1, self.device)
        for t in range(0, len(frames), self.prefill_chunk):  # chunked prefill: bounded memory
            sl = slice(t, t + self.prefill_chunk)
            sigma = torch.zeros(1, x[:, sl].shape[1], device=self.device)
            _, state = self.model(x[:, sl], sigma, actions[:, sl], state, pose=None if poses is None else poses[:, sl])
        # Copies: the state tensors are slices of the last prefill chunk's temporaries, which
        # would otherwise stay alive (tens of MB) until the next step.
        state = _unflatten({k: v.clone() for k, v in _flatten(state).items()})
        self._state, self._last, self.frames_seen = state, frames[-1].copy(), len(frames)
        self.odometry = self.pose = None
        self.layout = None if layout is None else np.asarray(layout)
        if poses is not None and torch.isfinite(poses[0, -1]).all():
            known = poses[0].cpu().numpy()
            self.pose = known[-1].copy()
            self.odometry = Odometry(known[-1], known[-2] if len(known) > 1 else None, self.layout)
        return self._last.copy()

    @torch.no_grad()
    def step(self, action, pose=None) -> np.ndarray:
        """Take `action` from the newest frame (arriving at `pose`, (4,), if the model takes poses
        and it is known); returns the frame it leads to."""
        if self._state is None:
            raise RuntimeError("call reset(context_frames, context_actions) before step()")
        a = torch.tensor([[action_index(action)]], device=self.device)
        if pose is not None and self.cfg.pose_cond:  # a given pose re-anchors the dead reckoning
            pose = pose_array([pose], 1)[0]
            self.odometry = Odometry(pose, self.pose, self.layout) if np.isfinite(pose).all() else None
        elif self.odometry is not None:
            pose = self.odometry.step(action_index(action))
        self.pose = None if pose is None else np.asarray(pose, dtype=np.float32)
        pose = self._pose(None if pose is None else [pose], 1)
        c = self.cfg
        x = torch.randn((1, 1, c.frame_size, c.frame_size, c.in_channels), device=self.device, generator=self.generator)
        self.scheduler.set_timesteps(sigmas=self._sigmas, device=self.device)  # restarts its step index
        for t, s in zip(self.scheduler.timesteps, self.scheduler.sigmas):
            x0, _ = self.model(x, s.reshape(1, 1), a, self._state, pose=pose)
            x = self.scheduler.step(self.flow.velocity(x, x0, s), t, x).prev_sample
        if self.codec is None:
            x = x.clamp(-1, 1)  # a frame: pixel values in range, before it is committed and conditioned on
        commit = torch.full((1, 1), self.commit_sigma, device=self.device)
        if self.commit_sigma > 0:
            x_commit = self.flow.add_noise(x, commit, torch.randn(x.shape, device=self.device, generator=self.generator))
        else:
            x_commit = x
        _, self._state = self.model(x_commit, commit, a, self._state, pose=pose)  # commit the frame
        if "prev" in self._state:  # the next frame is conditioned on this one, clean
            self._state["prev"] = x
        self._last = self._decode(x[0, 0]).cpu().numpy()
        self.frames_seen += 1
        return self._last.copy()

    # -- save / load a game in progress --------------------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue this game, as a flat dict of tensors (safetensors-ready)."""
        if self._state is None:
            raise RuntimeError("nothing to snapshot: call reset() first")
        snap = {k: v.detach().clone().contiguous() for k, v in _flatten(self._state).items()}
        snap["meta.frames_seen"] = torch.tensor(self.frames_seen)
        snap["meta.last_frame"] = torch.from_numpy(self._last.copy())
        snap["meta.rng"] = self.generator.get_state()
        if self.odometry is not None:
            snap["meta.odometry"] = torch.from_numpy(self.odometry.state())
            snap["meta.pose"] = torch.from_numpy(self.pose.copy())
            if self.layout is not None:
                snap["meta.layout"] = torch.from_numpy(self.layout.astype(np.uint8))
        return snap

    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        """Continue from `snapshot()`; a snapshot of another model is a ValueError and changes nothing."""
        expected = _flatten(self.model.init_state(1, self.device))
        for key, ref in expected.items():
            got = snap.get(key)
            if got is None:
                raise ValueError(f"snapshot does not match this model: missing {key}")
            # The full-attention baseline's cache grows along dim 2; everything else must match exactly.
            same = got.dim() == ref.dim() and all(g == r or (self.cfg.window is None and i == 2 and ".attn." in key)
                                                  for i, (g, r) in enumerate(zip(got.shape, ref.shape)))
            if not same or got.dtype != ref.dtype:
                raise ValueError(f"snapshot does not match this model: {key} is {tuple(got.shape)} {got.dtype}, "
                                 f"expected {tuple(ref.shape)} {ref.dtype}")
        extra = set(k for k in snap if k.startswith("state.")) - set(expected)
        if extra:
            raise ValueError(f"snapshot does not match this model: unexpected {sorted(extra)[:3]}")
        last = snap.get("meta.last_frame")
        if last is None or tuple(last.shape) != self.frame_shape or last.dtype != torch.uint8:
            raise ValueError(f"snapshot does not match this model: meta.last_frame must be uint8 {self.frame_shape}")
        self._state = _unflatten({k: v.to(self.device) for k, v in snap.items()})
        self._last = last.cpu().numpy().copy()
        self.frames_seen = int(snap["meta.frames_seen"])
        if "meta.rng" in snap:
            self.generator.set_state(snap["meta.rng"].cpu())
        self.layout = snap["meta.layout"].cpu().numpy() if "meta.layout" in snap else None
        self.odometry, self.pose = None, None
        if "meta.odometry" in snap and "meta.pose" in snap:
            self.odometry = Odometry.from_state(snap["meta.odometry"].cpu().numpy(), self.layout)
            self.pose = snap["meta.pose"].cpu().numpy().copy()

    def save_state(self, path: str | Path) -> None:
        save_file(self.snapshot(), str(path), metadata={"format": "worldmodel-snapshot", "model": json.dumps(self.cfg.to_dict())})

    def load_state(self, path: str | Path) -> None:
        try:
            snap = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable world snapshot (safetensors): {e}") from e
        self.restore(snap)

    def state_bytes(self) -> int:
        """Bytes of recurrent state this world holds (constant in history for the memory variants)."""
        return sum(t.numel() * t.element_size() for t in _flatten(self._state or {}).values())

    @property
    def last_frame(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()


def load_model(path_or_preset: str | Path | None = None) -> WorldModel:
    """A trained WorldModel from a checkpoint folder, or a freshly initialised one from a preset name."""
    if path_or_preset is None:
        path_or_preset = DEFAULT_CHECKPOINT
        if not (Path(path_or_preset) / "config.json").exists():
            raise ValueError(f"the shipped checkpoint {path_or_preset} is missing; pass a checkpoint folder or a preset "
                             f"name ({', '.join(PRESETS)})")
    path = Path(path_or_preset)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"{path} is not a worldmodel checkpoint: expected config.json and "
                             "diffusion_pytorch_model.safetensors in it")
        try:
            return WorldModel.from_pretrained(str(path))
        except (TypeError, ValueError, RuntimeError, OSError, KeyError) as e:
            raise ValueError(f"{path} does not hold a matching worldmodel checkpoint: {e}") from e
    if str(path_or_preset) in PRESETS:
        return WorldModel(get_preset(str(path_or_preset)).model.to_dict())
    raise ValueError(f"{path_or_preset!r} is neither a checkpoint folder nor a preset name ({', '.join(PRESETS)})")


def load_codec(path_or_preset: str | Path | None = None) -> FrameCodec | None:
    """The autoencoder a checkpoint folder ships in its `vae/` subfolder; None for a pixel model."""
    path = Path(DEFAULT_CHECKPOINT if path_or_preset is None else path_or_preset)
    return FrameCodec.from_pretrained(path / "vae") if (path / "vae" / "config.json").exists() else None


def load_world(path_or_preset: str | Path | None = None, device: str = "auto", steps: int = 4, seed: int = 0) -> World:
    """A `World` over a checkpoint folder (default: the shipped one) or an untrained preset."""
    return World(load_model(path_or_preset), steps=steps, device=device, seed=seed, codec=load_codec(path_or_preset))
