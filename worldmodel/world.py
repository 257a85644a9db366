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
(`diffusion.DiffusionSampler`); the next frame is conditioned on the frame returned, encoded again
as a context frame would be (the sampler's own latent, fed back, drifts). The state is the
network's recurrent state -- per layer one SSM state per spatial block and a KV cache of the last
k frames, and the pose-keyed memory's map if the model has one -- so time and memory per frame do
not depend on how long the game has run (except for the `causal` baseline, whose cache keeps every
frame by design).
"""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
import platform
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .actions import action_index, action_indices
from .config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS, PRESETS, get_preset
from .diffusion import DiffusionSampler, check_sampler_args
from .model import WorldModel
from .poses import MAX_LAYOUT_SIDE, PoseSource, check_layout, check_pose, default_pose_source, pose_array
from .vae import FrameCodec, check_codec, frames_from_model, frames_to_model

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "maze9x9"
WEIGHTS = "diffusion_pytorch_model.safetensors"  # a checkpoint's weights (diffusers' name); never pickles


# Snapshot keys World writes beside the model's state, and bounds on what a snapshot may hold.
META_KEYS = ("meta.frames_seen", "meta.last_frame", "meta.rng", "meta.odometry", "meta.pose", "meta.layout")
MAX_EXTRA_KEYS, MAX_EXTRA_BYTES = 64, 1 << 20  # other keys are ignored, but bounded
MAX_CACHE_FRAMES = 1 << 16  # the `causal` baseline's cache keeps every frame: at most this many
MAX_HEADER_BYTES = 1 << 20  # a snapshot file's safetensors header (JSON of names, dtypes, shapes)
# (shape, dtypes) of World's meta keys but meta.last_frame (the frame's shape); None: up to META_MAX_SIDE
_INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
META_SPECS = {"meta.frames_seen": ((), _INTS), "meta.rng": ((None,), (torch.uint8,)),
              "meta.odometry": ((5,), (torch.float64, torch.float32)),
              "meta.pose": ((4,), (torch.float32, torch.float64)),
              "meta.layout": ((None, None), (*_INTS, torch.bool, torch.float32, torch.float64))}
META_MAX_SIDE = {"meta.rng": 1 << 16, "meta.layout": MAX_LAYOUT_SIDE}
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                      "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" (CUDA if there is one, else the CPU), "cpu", "cuda", "cuda:1" ...; a device this
    machine does not have is a ValueError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: expected 'auto', 'cpu' or 'cuda[:N]' ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA device "
                         "(or torch was built without CUDA): use device='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} "
                         "CUDA device(s)")
    return dev


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


def _nbytes(shape: tuple, dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.float64)) * torch.empty((), dtype=dtype).element_size()


def _safetensors_specs(path: str | Path) -> dict[str, tuple[tuple, torch.dtype]]:
    """{name: (shape, dtype)} of a safetensors file, from its header alone (no tensor is read)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"its header claims {n} bytes (at most {MAX_HEADER_BYTES})")
        try:
            header = json.loads(f.read(n))
            return {k: (tuple(int(d) for d in v["shape"]), SAFETENSORS_DTYPES[v["dtype"]])
                    for k, v in header.items() if k != "__metadata__"}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"unreadable safetensors header ({type(e).__name__}: {e})") from None


class World:
    """A running world: the model, its recurrent state and the sampler. `compile=True` runs each
    step's passes through torch.compile (`_compiled_step`; the app's default), else eager."""

    def __init__(self, model: WorldModel, steps: int = DEFAULT_STEPS, device: str | torch.device = "cpu",
                 seed: int = 0, prefill_chunk: int = 64, commit_sigma: float = 0.25,
                 codec: FrameCodec | None = None, poses: PoseSource | None = None,
                 fold_commit: bool = DEFAULT_FOLD_COMMIT, compile: bool = False):
        check_sampler_args(steps, commit_sigma, fold_commit)
        if not isinstance(compile, bool):
            raise ValueError(f"expected compile as a bool, got {compile!r}")
        for name, value in (("seed", seed), ("prefill_chunk", prefill_chunk)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (name != "seed"):
                raise ValueError(f"expected {name} as an int >= {int(name != 'seed')}, got {value!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = model.cfg
        # A latent model works on the autoencoder's latents: frames are encoded on the way in and
        # decoded on the way out; without a codec the model works on pixels.
        check_codec(self.cfg, codec)
        self.codec = codec.to(self.device) if codec is not None else None
        self.sampler = DiffusionSampler(steps, commit_sigma, frame_range=1.0 if codec is None else None,
                                        device=self.device, fold_commit=fold_commit)
        self.steps, self.prefill_chunk, self.commit_sigma = steps, prefill_chunk, commit_sigma
        # (model, decode, encode): step() runs them on one frame, compiled if asked; reset() and
        # encode()/decode() stay eager (other shapes would recompile)
        self.compiled = compile
        self._eager_fns = _step_fns(self.model, self.codec)
        self._step_fns = _compiled_step(self.model, self.codec) if compile else self._eager_fns
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
        return self._eager_fns[2](frames_to_model(frames))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return frames_from_model(self._eager_fns[1](x))

    def _pose_tensor(self, poses: np.ndarray | None) -> torch.Tensor | None:
        return None if poses is None else torch.from_numpy(poses).to(self.device)[None]

    # -- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, context_frames, context_actions, context_poses=None, layout=None) -> np.ndarray:
        """Start from T real frames and the actions that led to them (and, for a pose-conditioned
        model, the agent's (T, 4) poses, optional, and the maze's `maze_layout` for dead reckoning
        past them); returns the newest frame."""
        frames = self._check_frames(context_frames)
        actions = torch.from_numpy(action_indices(context_actions, len(frames))).to(self.device)[None]
        if context_poses is not None:  # checked whatever the pose source does with them
            context_poses = pose_array(context_poses, len(frames))
        layout = None if layout is None else check_layout(layout)
        known = self.poses.context(context_poses, len(frames))
        poses = self._pose_tensor(known)
        x = self.encode(torch.from_numpy(frames).to(self.device))[None]
        state = self.model.init_state(1, self.device)
        for t in range(0, len(frames), self.prefill_chunk):  # chunked prefill: bounded memory
            sl = slice(t, t + self.prefill_chunk)
            sigma = torch.zeros(1, x[:, sl].shape[1], device=self.device)
            pose = None if poses is None else poses[:, sl]
            _, state = self.model(x[:, sl], sigma, actions[:, sl], state, pose=pose, state_out="inplace")
        # Copies: the state tensors are slices of the last prefill chunk's temporaries, which
        # would otherwise stay alive (tens of MB) until the next step.
        state = _unflatten({k: v.clone() for k, v in _flatten(state).items()})
        self._state, self._last, self.frames_seen = state, frames[-1].copy(), len(frames)
        self.poses.reset(known, layout)
        return self._last.copy()

    def _check_frames(self, context_frames) -> np.ndarray:
        """The context as a C-contiguous uint8 (T, H, W, 3) array, T >= 1 (a view with negative
        strides, e.g. a flipped array, is copied); anything else is a ValueError."""
        shape = ", ".join(map(str, self.frame_shape))
        expected = f"expected context_frames as uint8 of shape (T, {shape}) with T >= 1"
        try:
            frames = np.asarray(context_frames)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{expected}, got {type(context_frames).__name__} ({e})") from None
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != self.frame_shape \
                or not len(frames):
            raise ValueError(f"{expected}, got {frames.dtype} {frames.shape}")
        return np.ascontiguousarray(frames)

    @torch.no_grad()
    def step(self, action, pose=None) -> np.ndarray:
        """Take `action` from the newest frame (arriving at `pose`, (4,), if the model takes poses
        and it is known); returns the frame it leads to."""
        if self._state is None:
            raise RuntimeError("call reset(context_frames, context_actions) before step()")
        a = action_index(action)
        pose = self.poses.step(a, None if pose is None else check_pose(pose))
        if pose is None and self.cfg.pose_cond:  # unknown is NaN, as the model reads None: one graph
            pose = np.full(4, np.nan, np.float32)
        pose = self._pose_tensor(None if pose is None else pose[None])
        model, decode, encode = self._step_fns
        x, self._state = self.sampler(model, self._state, torch.tensor([[a]], device=self.device), pose,
                                      self.generator)
        frame = frames_from_model(decode(x[0, 0]))
        if "prev" in self._state:
            # The next frame is conditioned on the frame shown, encoded as the real frames of training
            # were, not on the sampler's latent: that lies off the autoencoder's latents, and fed back
            # it drifts (free play +1.3 dB, BENCHMARKS.md "Re-encoding").
            self._state["prev"] = encode(frames_to_model(frame))[None, None]
        self._last = frame.cpu().numpy()
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
        """Continue from `snapshot()`. The whole snapshot is checked first -- the model's state
        keys, shapes, dtypes and finite values, meta.frames_seen, meta.last_frame, meta.rng,
        meta.odometry/meta.pose, meta.layout, and at most MAX_EXTRA_BYTES of other keys -- so a
        snapshot of another model, or a damaged one, is a ValueError and changes nothing."""
        if not isinstance(snap, Mapping) or not all(isinstance(v, torch.Tensor) for v in snap.values()):
            raise ValueError("expected a snapshot as a dict of tensors (from World.snapshot()), got "
                             f"{type(snap).__name__}")
        cached = self._check_snapshot_specs({k: (tuple(v.shape), v.dtype) for k, v in snap.items()})
        self._check_snapshot_values(snap, cached)
        frames_seen = int(snap["meta.frames_seen"])
        # a copy: the stream updates its state in place, and the snapshot may be restored again
        self._state = _unflatten({k: v.to(self.device, copy=True) for k, v in snap.items()})
        self._last = snap["meta.last_frame"].cpu().numpy().copy()
        self.frames_seen = frames_seen
        if "meta.rng" in snap:
            self.generator.set_state(snap["meta.rng"].cpu())
        kept = {"meta.odometry": np.float64, "meta.pose": np.float32, "meta.layout": None}
        self.poses.load_state({k[len("meta."):]: v.cpu().numpy().astype(kept[k] or v.cpu().numpy().dtype)
                               for k, v in snap.items() if k in kept})

    def _check_snapshot_specs(self, specs: dict[str, tuple[tuple, torch.dtype]]) -> int:
        """Keys, shapes and dtypes of a snapshot (from its tensors or a file's header): ValueError
        unless they are this model's state and World's meta keys, and the rest is small. Returns
        the frames in the `causal` baseline's cache (0 for the others)."""
        def refuse(why: str):
            raise ValueError(f"snapshot does not match this model: {why}")

        expected, cached = _flatten(self.model.init_state(1, self.device)), 0
        for key, ref in expected.items():
            if key not in specs:
                refuse(f"missing {key}")
            shape, dtype = specs[key]
            # The full-attention baseline's cache grows (its empty axes); all else must match exactly.
            grows = self.cfg.window is None and ".attn." in key
            same = len(shape) == ref.dim() and all(
                g == r or (grows and r == 0 and g <= MAX_CACHE_FRAMES) for g, r in zip(shape, ref.shape))
            if not same or dtype != ref.dtype:
                refuse(f"{key} is {shape} {dtype}, expected {tuple(ref.shape)} {ref.dtype}")
            cached = max([cached] + [g for g, r in zip(shape, ref.shape) if grows and r == 0])
        extra = sorted(k for k in specs if k.startswith("state.") and k not in expected)
        if extra:
            refuse(f"unexpected {extra[:3]}")
        want = dict(META_SPECS, **{"meta.last_frame": (self.frame_shape, (torch.uint8,))})
        for key in ("meta.frames_seen", "meta.last_frame"):
            if key not in specs:
                refuse(f"missing {key}: not a World.snapshot()")
        for key, (shape, dtypes) in want.items():
            if key not in specs:
                continue
            got, dtype = specs[key]
            fits = len(got) == len(shape) and all(n == w or w is None and n <= META_MAX_SIDE[key]
                                                  for n, w in zip(got, shape))
            if not fits or dtype not in dtypes:
                sides = ", ".join(f"<= {META_MAX_SIDE[key]}" if w is None else str(w) for w in shape)
                refuse(f"{key} is {got} {dtype}, expected ({sides}) of {', '.join(map(str, dtypes))}")
        if ("meta.odometry" in specs) != ("meta.pose" in specs):
            refuse("meta.odometry and meta.pose come together (dead reckoning's state), got one of them")
        others = [k for k in specs if k not in expected and k not in META_KEYS]
        size = sum(_nbytes(*specs[k]) for k in others)
        if len(others) > MAX_EXTRA_KEYS or size > MAX_EXTRA_BYTES:
            refuse(f"{len(others)} keys beyond the state ({size} bytes; at most {MAX_EXTRA_KEYS} keys and "
                   f"{MAX_EXTRA_BYTES} bytes), e.g. {sorted(others)[:3]}")
        return cached

    def _check_snapshot_values(self, snap: dict[str, torch.Tensor], cached: int) -> None:
        """The values of a snapshot whose keys and shapes passed `_check_snapshot_specs`."""
        def refuse(why: str):
            raise ValueError(f"snapshot is damaged: {why}")

        frames_seen = int(snap["meta.frames_seen"])
        if not max(1, cached) <= frames_seen <= 2**53:
            refuse(f"meta.frames_seen is {frames_seen}, expected >= 1 and >= the {cached} frames cached")
        for key, t in snap.items():
            if not key.startswith("state."):
                continue
            if t.is_floating_point():  # NaN is an unknown pose; nothing else may be non-finite
                bad = t.isinf() if key.endswith("prev_pose") else ~t.isfinite()
                if bool(bad.any()):
                    refuse(f"{key} holds {int(bad.sum())} non-finite value(s)")
            elif t.dtype == torch.int64 and t.dim() == 0 and not 0 <= int(t) <= 2**53:
                refuse(f"{key} is {int(t)}, expected a frame count >= 0")
        if "meta.rng" in snap:
            try:
                torch.Generator(self.device).set_state(snap["meta.rng"].cpu())
            except (RuntimeError, TypeError, ValueError) as e:
                refuse(f"meta.rng is not a random generator state of {self.device.type}: {e}")
        for key in ("meta.odometry", "meta.pose"):
            if key in snap and not bool(snap[key].isfinite().all()):
                refuse(f"{key} holds non-finite values")
        if "meta.pose" in snap:
            check_pose(snap["meta.pose"].numpy())
        if "meta.layout" in snap:
            check_layout(snap["meta.layout"].numpy())

    def save_state(self, path: str | Path) -> None:
        meta = {"format": "worldmodel-snapshot", "model": json.dumps(self.cfg.to_dict())}
        save_file(self.snapshot(), str(path), metadata=meta)

    def load_state(self, path: str | Path) -> None:
        """`restore` a `save_state` file. Its header (names, dtypes, shapes) is checked before any
        tensor is read, so an oversized or foreign file costs nothing; errors name the file, not
        its folder (an upload's temporary path)."""
        name = Path(path).name
        try:
            self._check_snapshot_specs(_safetensors_specs(path))
            snap = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            why = str(e).replace(str(path), name)
            raise ValueError(f"{name} is not a readable world snapshot of this model: {why}") from None
        try:
            self.restore(snap)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

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
        weights = path / WEIGHTS
        if not (path / "config.json").exists() or not weights.exists():
            raise ValueError(f"{path} is not a worldmodel checkpoint: expected config.json and "
                             f"{WEIGHTS} in it")
        try:
            model = WorldModel.from_pretrained(str(path))
            check_weights(model, weights)
        except (TypeError, ValueError, RuntimeError, OSError, KeyError, SafetensorError) as e:
            raise ValueError(f"{path} does not hold a matching worldmodel checkpoint: {e}") from e
        return model
    if str(path_or_preset) in PRESETS:
        return WorldModel(get_preset(str(path_or_preset)).model.to_dict())
    raise ValueError(f"{path_or_preset!r} is neither a checkpoint folder nor a preset name "
                     f"({', '.join(PRESETS)})")


def check_weights(model: torch.nn.Module, weights: str | Path) -> None:
    """ValueError unless the safetensors file `weights` holds exactly `model`'s tensors, by name and
    shape (diffusers' from_pretrained only warns about unused weights, and initialises missing ones)."""
    with safe_open(str(weights), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unused = sorted(set(own) - set(found)), sorted(set(found) - set(own))
    shapes = [f"{k} {found[k]} (config: {own[k]})" for k in sorted(set(own) & set(found))
              if own[k] != found[k]]
    if missing or unused or shapes:
        parts = [f"{what} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for what, keys in (("missing from the weights", missing),
                                    ("in the weights but not in the config's model", unused),
                                    ("of another shape", shapes)) if keys]
        raise ValueError(f"the weights do not match config.json: {'; '.join(parts)}")


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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _step_fns(model: WorldModel, codec: FrameCodec | None) -> tuple:
    """What `World.step` runs: the model, and the codec's decode and encode (pixels: identities)."""
    return (model, _identity, _identity) if codec is None else (model, codec.decode, codec.encode)


@functools.cache
def _compiled_step(model: WorldModel, codec: FrameCodec | None) -> tuple:
    """`World.step`'s model pass, decode and encode of one frame compiled by inductor, the weights
    frozen in as constants (so only for a model no longer trained); one compile per model and
    codec, shared by every World over them. ~20% less time a frame on this 2-core CPU; the first
    frame pays the compile (~100 s on 2 cores, ~50 s when inductor's disk cache holds parts of it).
    BENCHMARKS.md, "The demo at the model's speed"."""
    opts = dict(dynamic=False, options={"freezing": True})
    return tuple(f if f is _identity else torch.compile(f, **opts) for f in _step_fns(model, codec))


def load_codec(path_or_preset: str | Path | None = None) -> FrameCodec | None:
    """The autoencoder of a checkpoint folder (`codec_folder`); None for a pixel model or a preset."""
    folder = codec_folder(DEFAULT_CHECKPOINT if path_or_preset is None else path_or_preset)
    if folder is None:
        return None
    try:
        return FrameCodec.from_pretrained(folder)
    except (OSError, RuntimeError, TypeError, KeyError, SafetensorError) as e:  # e.g. a truncated file
        raise ValueError(f"the autoencoder in {folder} is unreadable: {type(e).__name__}: {e}") from e


def load_world(path_or_preset: str | Path | None = None, device: str = "auto", steps: int = DEFAULT_STEPS,
               seed: int = 0, fold_commit: bool = DEFAULT_FOLD_COMMIT, compile: bool = False) -> World:
    """A `World` over a checkpoint folder (default: the shipped one) or an untrained preset."""
    return World(load_model(path_or_preset), steps=steps, device=device, seed=seed,
                 codec=load_codec(path_or_preset), fold_commit=fold_commit, compile=compile)
