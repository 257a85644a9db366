"""`World`: the one streaming engine of the project. The app, rollouts and evaluation all use it.

    world = load_world("checkpoints/<name>")            # or a preset name, or None = shipped model
    frame = world.reset(context_frames, context_actions) # uint8 (T,H,W,3), (T,) -> uint8 (H,W,3)
    frame = world.step(action)                          # one new frame
    # a pose-conditioned model (cfg.pose_cond) also takes the agent's pose (x, y, dx, dy) per
    # frame: reset(..., context_poses=(T, 4)), step(action, pose=(4,)); where each frame's pose
    # comes from is the world's pose source (worldmodel.poses): by default a step without a pose
    # after a posed context is dead-reckoned from the actions (pass the maze's layout to reset to
    # keep it out of walls); with no poses at all it runs on actions
    snap = world.snapshot(); world.restore(snap)

Actions follow the Memory Maze dataset: context_actions[t] led to context_frames[t] and step(a)
takes action a from the newest frame. The denoising loop of each frame is the sampler's
(`diffusion.DiffusionSampler`). The state is the network's recurrent state -- per layer one SSM
state per spatial block and a KV cache of the last k frames, and the pose-keyed memory's map if
the model has one -- so time and memory per frame do not depend on how long the game has run
(except for the `causal` baseline, whose cache keeps every frame by design).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .actions import action_index, action_indices
from .config import PRESETS, get_preset
from .diffusion import DiffusionSampler
from .model import WorldModel
from .poses import PoseSource, default_pose_source
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
                 prefill_chunk: int = 64, commit_sigma: float = 0.25, codec: FrameCodec | None = None,
                 poses: PoseSource | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        # A latent model works on the autoencoder's latents: frames are encoded on the way in and
        # decoded on the way out; without a codec the model works on pixels.
        check_codec(self.cfg, codec)
        self.codec = codec.to(self.device) if codec is not None else None
        self.sampler = DiffusionSampler(steps, commit_sigma, frame_range=1.0 if codec is None else None,
                                        device=self.device)
        self.steps, self.prefill_chunk, self.commit_sigma = steps, prefill_chunk, commit_sigma
        # The pose of each frame: by default dead reckoning for a pose-conditioned model, else none.
        self.poses = default_pose_source(self.cfg.pose_cond) if poses is None else poses
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._state: dict | None = None
        self._last: np.ndarray | None = None
        self.frames_seen = 0

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the frames reset() takes and step() returns."""
        if self.codec is not None:
            return self.codec.frame_shape
        return (self.cfg.frame_size, self.cfg.frame_size, self.cfg.in_channels)

    @property
    def pose(self) -> np.ndarray | None:
        """The newest frame's pose (x, y, dx, dy), if known or dead-reckoned."""
        return self.poses.pose

    @property
    def layout(self) -> np.ndarray | None:
        """The maze layout reset() was given (dead reckoning keeps the pose out of its walls)."""
        return self.poses.layout

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (..., H, W, 3) -> what the model works on (latents or pixels in [-1, 1])."""
        x = frames_to_model(frames)
        return x if self.codec is None else self.codec.encode(x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return frames_from_model(x if self.codec is None else self.codec.decode(x))

    def _pose_tensor(self, poses: np.ndarray | None) -> torch.Tensor | None:
        return None if poses is None else torch.from_numpy(poses).to(self.device)[None]

    # -- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, context_frames, context_actions, context_poses=None, layout=None) -> np.ndarray:
        """Start from T real frames and the actions that led to them (and, for a pose-conditioned
        model, the agent's (T, 4) poses, optional, and the maze's `maze_layout` for dead reckoning
        past them); returns the newest frame."""
        frames = np.asarray(context_frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != self.frame_shape \
                or not len(frames):
            shape = ", ".join(map(str, self.frame_shape))
            raise ValueError(f"expected context_frames as uint8 of shape (T, {shape}) with T >= 1, "
                             f"got {frames.dtype} {frames.shape}")
        actions = torch.from_numpy(action_indices(context_actions, len(frames))).to(self.device)[None]
        known = self.poses.context(context_poses, len(frames))
        poses = self._pose_tensor(known)
        x = self.encode(torch.from_numpy(frames).to(self.device))[None]
        state = self.model.init_state(1, self.device)
        for t in range(0, len(frames), self.prefill_chunk):  # chunked prefill: bounded memory
            sl = slice(t, t + self.prefill_chunk)
            sigma = torch.zeros(1, x[:, sl].shape[1], device=self.device)
            pose = None if poses is None else poses[:, sl]
            _, state = self.model(x[:, sl], sigma, actions[:, sl], state, pose=pose)
        # Copies: the state tensors are slices of the last prefill chunk's temporaries, which
        # would otherwise stay alive (tens of MB) until the next step.
        state = _unflatten({k: v.clone() for k, v in _flatten(state).items()})
        self._state, self._last, self.frames_seen = state, frames[-1].copy(), len(frames)
        self.poses.reset(known, layout)
        return self._last.copy()

    @torch.no_grad()
    def step(self, action, pose=None) -> np.ndarray:
        """Take `action` from the newest frame (arriving at `pose`, (4,), if the model takes poses
        and it is known); returns the frame it leads to."""
        if self._state is None:
            raise RuntimeError("call reset(context_frames, context_actions) before step()")
        a = action_index(action)
        pose = self.poses.step(a, pose)
        pose = self._pose_tensor(None if pose is None else pose[None])
        x, self._state = self.sampler(self.model, self._state, torch.tensor([[a]], device=self.device), pose,
                                      self.generator)
        self._last = self.decode(x[0, 0]).cpu().numpy()
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
        snap.update({f"meta.{k}": torch.from_numpy(v) for k, v in self.poses.state().items()})
        return snap

    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        """Continue from `snapshot()`; a snapshot of another model is a ValueError and changes nothing."""
        expected = _flatten(self.model.init_state(1, self.device))
        for key, ref in expected.items():
            got = snap.get(key)
            if got is None:
                raise ValueError(f"snapshot does not match this model: missing {key}")
            # The full-attention baseline's cache grows along dim 2; everything else must match exactly.
            grows = self.cfg.window is None and ".attn." in key
            same = got.dim() == ref.dim() and all(g == r or (grows and i == 2)
                                                  for i, (g, r) in enumerate(zip(got.shape, ref.shape)))
            if not same or got.dtype != ref.dtype:
                raise ValueError(f"snapshot does not match this model: {key} is {tuple(got.shape)} "
                                 f"{got.dtype}, expected {tuple(ref.shape)} {ref.dtype}")
        extra = set(k for k in snap if k.startswith("state.")) - set(expected)
        if extra:
            raise ValueError(f"snapshot does not match this model: unexpected {sorted(extra)[:3]}")
        last = snap.get("meta.last_frame")
        if last is None or tuple(last.shape) != self.frame_shape or last.dtype != torch.uint8:
            raise ValueError("snapshot does not match this model: meta.last_frame must be uint8 "
                             f"{self.frame_shape}")
        self._state = _unflatten({k: v.to(self.device) for k, v in snap.items()})
        self._last = last.cpu().numpy().copy()
        self.frames_seen = int(snap["meta.frames_seen"])
        if "meta.rng" in snap:
            self.generator.set_state(snap["meta.rng"].cpu())
        self.poses.load_state({k[len("meta."):]: v.cpu().numpy() for k, v in snap.items()
                               if k in ("meta.odometry", "meta.pose", "meta.layout")})

    def save_state(self, path: str | Path) -> None:
        meta = {"format": "worldmodel-snapshot", "model": json.dumps(self.cfg.to_dict())}
        save_file(self.snapshot(), str(path), metadata=meta)

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
            raise ValueError(f"the shipped checkpoint {path_or_preset} is missing; pass a checkpoint folder "
                             f"or a preset name ({', '.join(PRESETS)})")
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
    raise ValueError(f"{path_or_preset!r} is neither a checkpoint folder nor a preset name "
                     f"({', '.join(PRESETS)})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def codec_folder(checkpoint: str | Path) -> Path | None:
    """The autoencoder folder of a checkpoint: its own `vae/` subfolder (self-contained, as `export`
    writes it), or the folder its `vae.json` names -- {"path": relative to the checkpoint, "sha256":
    of that folder's weights}, so that several checkpoints share one copy; None for a pixel model."""
    path = Path(checkpoint)
    if (path / "vae" / "config.json").exists():
        return path / "vae"
    ref = path / "vae.json"
    if not ref.exists():
        return None
    try:
        spec = json.loads(ref.read_text())
        folder, expected = (path / spec["path"]).resolve(), str(spec["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{ref} must be JSON {{\"path\": ..., \"sha256\": ...}}: {e}") from e
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not (weights.exists() and (folder / "config.json").exists()):
        raise ValueError(f"{ref} names the autoencoder folder {folder}, which has no config.json and "
                         f"{weights.name}")
    found = _sha256(weights)
    if found != expected:
        raise ValueError(f"{ref} expects the autoencoder {weights} with sha256 {expected}, "
                         f"but that file has {found}")
    return folder


def load_codec(path_or_preset: str | Path | None = None) -> FrameCodec | None:
    """The autoencoder of a checkpoint folder (`codec_folder`); None for a pixel model or a preset."""
    folder = codec_folder(DEFAULT_CHECKPOINT if path_or_preset is None else path_or_preset)
    return None if folder is None else FrameCodec.from_pretrained(folder)


def load_world(path_or_preset: str | Path | None = None, device: str = "auto", steps: int = 4,
               seed: int = 0) -> World:
    """A `World` over a checkpoint folder (default: the shipped one) or an untrained preset."""
    return World(load_model(path_or_preset), steps=steps, device=device, seed=seed,
                 codec=load_codec(path_or_preset))
