"""Episode files in the layout of the published Memory Maze offline dataset (one `.npz` each).

Every array has a leading time axis of T+1 frames: `image` (T+1, H, W, 3) uint8, with image[0]
observed before the first action; `action` (T+1, 6) one-hot of the *last* action, i.e.
action[t] led to image[t] and row 0 is all zeros; `reward` (T+1,); and the global observables
`agent_pos`, `agent_dir`, `maze_layout`, `targets_pos`, `targets_vec`, `target_pos`, `target_vec`,
`target_color`. Evaluation episodes add a scalar `context_len` (frames the model is given).
Only `image` and `action` are required, so that recordings without poses are episodes too.

`load_episode` reads every member's .npy header (shape, dtype) before any array, so an upload is
checked against `max_frames` / `max_bytes` (e.g. MAX_UPLOAD_FRAMES, MAX_UPLOAD_BYTES) before it
costs memory: a small compressed file can hold gigabytes of frames.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..actions import NUM_ACTIONS

REQUIRED = ("image", "action")
KEYS = ("image", "action", "reward", "agent_pos", "agent_dir", "maze_layout", "targets_pos", "targets_vec",
        "target_pos", "target_vec", "target_color")
SCALARS = ("context_len",)  # per-episode values, no time axis
# Per-frame shape of known keys (None: any size on that axis).
FRAME_SHAPES = {"image": (None, None, 3), "action": (NUM_ACTIONS,), "reward": (), "agent_pos": (2,),
                "agent_dir": (2,), "maze_layout": (None, None), "targets_pos": (None, 2),
                "targets_vec": (None, 2), "target_pos": (2,), "target_vec": (2,), "target_color": (3,)}

# What an app should accept from a user's file: a 15x15 episode is 4,001 frames (49 MB of images)
MAX_UPLOAD_FRAMES = 10_000
MAX_UPLOAD_BYTES = 256 << 20  # of arrays as loaded (and of the file)


def index_to_onehot(actions) -> np.ndarray:
    """Action ids of steps 1..T -> (T+1, 6) uint8 one-hot rows, row 0 (before any action) zeros."""
    actions = np.asarray(actions, dtype=np.int64).reshape(-1)
    if actions.size and (actions.min() < 0 or actions.max() >= NUM_ACTIONS):
        raise ValueError(f"action ids must be in [0, {NUM_ACTIONS}), got {actions.min()}..{actions.max()}")
    onehot = np.zeros((len(actions) + 1, NUM_ACTIONS), dtype=np.uint8)
    onehot[np.arange(1, len(actions) + 1), actions] = 1
    return onehot


def actions_to_index(onehot) -> np.ndarray:
    """(T+1, 6) one-hot rows -> (T+1,) int64 ids; an all-zero row (frame 0) reads as 0 (noop)."""
    return np.asarray(onehot).argmax(axis=-1).astype(np.int64)


def episode_poses(ep: dict) -> np.ndarray | None:
    """An episode's (T, 4) poses (x, y, dx, dy) from its agent_pos and agent_dir, None if it has none:
    what a pose-conditioned model is given. A frame whose heading is the zero vector (an app
    recording's frame without a pose) gets NaN: unknown."""
    if "agent_pos" not in ep or "agent_dir" not in ep:
        return None
    poses = np.concatenate([ep["agent_pos"], ep["agent_dir"]], axis=-1).astype(np.float32)
    poses[np.abs(poses[:, 2:]).sum(-1) == 0] = np.nan
    return poses


def check_shapes(specs: dict, name: str = "episode", partial: bool = False) -> int:
    """The keys, shapes and dtypes of an episode, {key: (shape, dtype)} (arrays or .npy headers):
    ValueError('{name}: ...') unless they are as the module doc says. Returns the frame count."""
    missing = [] if partial else [k for k in REQUIRED if k not in specs]
    if missing:
        raise ValueError(f"{name}: missing key(s) {missing}")
    frames = None
    for key, (shape, dtype) in specs.items():
        if np.dtype(dtype).kind in "OVM":
            raise ValueError(f"{name}: key {key!r} holds {np.dtype(dtype)}, expected numbers")
        if key in SCALARS:
            if shape != ():
                raise ValueError(f"{name}: key {key!r} must be a scalar, got shape {shape}")
            continue
        if len(shape) == 0:
            raise ValueError(f"{name}: key {key!r} has no time axis")
        if frames is None:
            frames = shape[0]
        elif shape[0] != frames:
            raise ValueError(f"{name}: key {key!r} has {shape[0]} frames, other keys {frames}")
        want = FRAME_SHAPES.get(key)
        if want is not None and (len(want) != len(shape) - 1 or
                                 any(w is not None and w != s for w, s in zip(want, shape[1:]))):
            expected = ", ".join("T" if i == 0 else "*" if w is None else str(w)
                                 for i, w in enumerate((None, *want)))
            raise ValueError(f"{name}: key {key!r} has shape {shape}, expected ({expected})")
    if frames == 0:
        raise ValueError(f"{name}: no frames")
    if "image" in specs and np.dtype(specs["image"][1]) != np.uint8:
        raise ValueError(f"{name}: key 'image' must be uint8, got {np.dtype(specs['image'][1])}")
    return frames or 0


def validate_episode(ep: dict, name: str = "episode", partial: bool = False) -> None:
    """Raise ValueError('{name}: ...') unless `ep` is a well-formed episode (see module doc);
    `partial`: some keys were not read, so check only those present."""
    ep = {k: np.asarray(v) for k, v in ep.items()}
    frames = check_shapes({k: (v.shape, v.dtype) for k, v in ep.items()}, name, partial)
    if "action" in ep:
        action = ep["action"]
        ok = (((action == 0) | (action == 1)).all(axis=1)) & (action.sum(axis=1) == 1)
        ok[0] |= not action[0].any()  # nothing led to the first frame
        if not ok.all():
            raise ValueError(f"{name}: key 'action' row {int(np.argmin(ok))} is not one-hot")
    for key, value in ep.items():  # NaN may mean unknown (a pose); an infinity is never a value
        if value.dtype.kind == "f" and np.isinf(value).any():
            raise ValueError(f"{name}: key {key!r} holds infinite values")
    if "context_len" in ep and not 0 < int(ep["context_len"]) <= frames:
        raise ValueError(f"{name}: context_len {int(ep['context_len'])} outside 1..{frames}")


def episode_header(path: str | Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{key: (shape, dtype)} of an .npz episode from each member's .npy header: no array is read.
    Raises what zipfile / numpy raise for a file that is no such archive (load_episode wraps it)."""
    specs = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not an .npy array")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            specs[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    return specs


def save_episode(path: str | Path, ep: dict, compress: bool = True) -> Path:
    """Validate `ep` and write it to `path` (.npz) atomically: a temporary file renamed into
    place, so a crash never leaves a half-written episode (and an invalid one is never written)."""
    path = Path(path)
    ep = {k: np.asarray(v) for k, v in ep.items()}
    validate_episode(ep, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.npz: globs never see it
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            (np.savez_compressed if compress else np.savez)(f, **ep)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_episode(path: str | Path, keys=None, max_frames: int | None = None, max_bytes: int | None = None,
                 name: str | None = None) -> dict:
    """Read an episode (all keys, or only `keys`) fully into memory and check it. Any problem
    (truncated or corrupt file, missing key, wrong shape, more than `max_frames` frames or
    `max_bytes` of file or of arrays) is a ValueError naming the file as `name` (default: its path;
    an app passes the upload's own name, not the server's temporary path). The limits are checked
    on the headers, before any array is read."""
    path = Path(path)
    name = str(path) if name is None else name

    def check_header(data) -> list[str]:
        specs = episode_header(path)
        wanted = list(data.files) if keys is None else list(keys)
        missing = [k for k in (REQUIRED if keys is None else wanted) if k not in specs]
        if missing:
            raise ValueError(f"{name}: missing key(s) {missing}")
        specs = {k: specs[k] for k in wanted}
        frames = check_shapes(specs, name, partial=keys is not None)
        size = sum(int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
                   for shape, dtype in specs.values())
        if max_frames is not None and frames > max_frames:
            raise ValueError(f"{name}: {frames} frames, more than the {max_frames} accepted")
        if max_bytes is not None and max(size, path.stat().st_size) > max_bytes:
            raise ValueError(f"{name}: {max(size, path.stat().st_size) / 2**20:.1f} MiB of arrays or "
                             f"file, more than the {max_bytes / 2**20:.0f} MiB accepted")
        return wanted

    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            ep = {k: data[k] for k in check_header(data)}  # reads every byte: zip CRCs catch corruption
    except ValueError as e:
        if str(e).startswith(name):
            raise
        raise ValueError(f"{name}: unreadable episode file ({e})".replace(str(path), name)) from None
    except Exception as e:  # BadZipFile, zlib.error, EOFError, OSError ...: all "unreadable"
        why = f"{type(e).__name__}: {e}".replace(str(path), name)
        raise ValueError(f"{name}: unreadable episode file ({why})") from None
    validate_episode(ep, name, partial=keys is not None)
    return ep


class EpisodeRecorder:
    """Collects an episode step by step: `EpisodeRecorder(first_obs)`, then `add(action, obs)`
    for every step (the action taken and the observation it led to), then `episode()`."""

    def __init__(self, first_obs: dict):
        self.keys = [k for k in KEYS if k in first_obs and k != "action"] + \
                    [k for k in first_obs if k not in KEYS]
        self.frames = {k: [np.asarray(first_obs[k])] for k in self.keys}
        self.actions: list[int] = []

    def add(self, action: int, obs: dict) -> None:
        self.actions.append(int(action))
        for k in self.keys:
            self.frames[k].append(np.asarray(obs[k]))

    def __len__(self) -> int:
        return len(self.actions) + 1

    def episode(self) -> dict:
        ep = {"image": np.stack(self.frames["image"]).astype(np.uint8),
              "action": index_to_onehot(self.actions)}
        for k in self.keys:
            if k != "image":
                value = np.stack(self.frames[k])
                ep[k] = value.astype(np.float32) if value.dtype.kind == "f" else value
        return ep
