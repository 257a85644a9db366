"""Where the pose of each frame a `World` makes comes from: a pose source beside the world.

A pose is float32 (x, y, dx, dy): the position in maze cells and the heading's unit vector
(NaN = unknown). A pose-conditioned model reads its pose-keyed memory at the pose of the frame
being made; evaluation knows the true poses, a player in the app does not.

- `NoPoses`: the model runs on actions alone (a model without pose input). `PoseSource` is
  the interface all three share.
- `TruePoses`: the poses the caller passes with the context and with each step, nothing more.
- `DeadReckoning`: as `TruePoses`, and a step taken without a pose gets the pose its action leads
  to in Memory Maze (`worldmodel.odometry`), kept out of walls when reset is given the layout.

A source's `state()` is part of the world's snapshot (numpy arrays under the keys `odometry`,
`pose`, `layout`); `load_state` takes them back. `pose_array`, `check_pose` and `check_layout` are
the checks a World runs on what callers give it, before anything changes.
"""

from __future__ import annotations

import numpy as np

from .odometry import Odometry

POSE_LIMIT = 1e6  # |x|, |y|, |dx|, |dy| above this are no maze pose (and would overflow features)
MAX_LAYOUT_SIDE = 64  # Memory Maze's largest maze is 15x15 cells


def pose_array(poses, length: int) -> np.ndarray:
    """Poses as float32 (length, 4): x, y (maze cells) and the heading's unit vector. NaN = unknown
    (a row with any NaN is an unknown pose); an infinite or huge value is a ValueError."""
    expected = f"expected poses of shape ({length}, 4) (x, y, dx, dy) as finite numbers or NaN"
    try:
        p = np.asarray(poses, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{expected}, got {_describe(poses)} ({e})") from None
    if p.shape != (length, 4):
        raise ValueError(f"{expected}, got shape {p.shape}")
    bad = np.abs(np.nan_to_num(p, nan=0.0, posinf=np.inf, neginf=np.inf)) > POSE_LIMIT
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{expected} (|value| <= {POSE_LIMIT:g}), got {p[row].tolist()} at row {row}")
    return p


def check_pose(pose) -> np.ndarray:
    """One pose (4,) as `pose_array` checks it: float32 x, y, dx, dy; NaN = unknown."""
    if np.ndim(pose) != 1:
        raise ValueError(f"expected a pose of shape (4,) (x, y, dx, dy), got {_describe(pose)}")
    return pose_array([pose], 1)[0]


def check_layout(layout) -> np.ndarray:
    """A maze layout as Memory Maze's `maze_layout` gives it: a 2-D grid (rows = y, cols = x) of
    0 (wall) and 1 (free), 2..MAX_LAYOUT_SIDE cells a side; returned as a copy."""
    a = np.array(layout)
    ok = a.dtype.kind in "biuf" and a.ndim == 2 and all(2 <= n <= MAX_LAYOUT_SIDE for n in a.shape)
    if not ok or not np.isin(a, (0, 1)).all():
        raise ValueError(f"expected layout as a 2-D grid of 0 (wall) / 1 (free), rows = y and cols = x, "
                         f"2..{MAX_LAYOUT_SIDE} cells a side, got {_describe(layout)}")
    return a


def _describe(value) -> str:
    """What came, for an error message: type, dtype and shape, without dumping the values."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        return type(value).__name__
    if a.dtype == object or a.dtype.kind in "SU":
        return f"{type(value).__name__} {a.dtype} {a.shape}"
    return f"{a.dtype} of shape {a.shape}" + (f" {a.tolist()}" if a.size <= 4 else "")


class PoseSource:
    """What a World asks of its pose source. This base knows no poses: every frame is made from
    actions alone, and poses passed in are only recorded (`NoPoses`)."""

    def __init__(self):
        self.pose: np.ndarray | None = None  # the newest frame's pose, if known
        self.layout: np.ndarray | None = None  # the maze's free cells, as reset was given them

    def context(self, poses, length: int) -> np.ndarray | None:
        """The context's poses, checked, as the model is to be conditioned on them (None = none).
        Changes nothing: a refused context leaves the source as it was."""
        return None

    def reset(self, poses: np.ndarray | None, layout=None) -> None:
        """Start over after a context whose poses `context` returned."""
        self.pose = None
        if poses is not None and np.isfinite(poses[-1]).all():
            self.pose = poses[-1].copy()
        self.layout = None if layout is None else check_layout(layout)

    def step(self, action: int, pose=None) -> np.ndarray | None:
        """The pose the model is to make the frame `action` leads to at (`pose` if the caller knows
        it); None = unknown. Here always None: a pose given is only recorded."""
        self.pose = None if pose is None else check_pose(pose)
        return None

    def state(self) -> dict[str, np.ndarray]:
        """What a snapshot keeps: the layout reset was given (a later pose re-anchors on it)."""
        return {} if self.layout is None else {"layout": self.layout.astype(np.uint8)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.pose = None
        self.layout = state.get("layout")


class NoPoses(PoseSource):
    """No poses: the model runs on actions alone."""


class TruePoses(PoseSource):
    """The poses the caller gives: with the context and with each step; a step without one is unknown."""

    def context(self, poses, length: int) -> np.ndarray | None:
        return None if poses is None else pose_array(poses, length)

    def step(self, action: int, pose=None) -> np.ndarray | None:
        self.pose = None if pose is None else check_pose(pose)
        return self.pose


class DeadReckoning(TruePoses):
    """Given poses as they come; a step without one is dead-reckoned from the last known pose and the
    actions since (Memory Maze's motion, `Odometry`). A given pose re-anchors it; an unknown one
    (NaN) stops it until the next reset."""

    def __init__(self):
        super().__init__()
        self.odometry: Odometry | None = None

    def reset(self, poses: np.ndarray | None, layout=None) -> None:
        super().reset(poses, layout)
        self.odometry = None
        if self.pose is not None:
            self.odometry = Odometry(poses[-1], poses[-2] if len(poses) > 1 else None, self.layout)

    def step(self, action: int, pose=None) -> np.ndarray | None:
        if pose is not None:
            pose = check_pose(pose)
            self.odometry = Odometry(pose, self.pose, self.layout) if np.isfinite(pose).all() else None
        elif self.odometry is not None:
            pose = self.odometry.step(action)
        self.pose = pose
        return pose

    def state(self) -> dict[str, np.ndarray]:
        if self.odometry is None:
            return super().state()
        return {"odometry": self.odometry.state(), "pose": self.pose.copy(), **super().state()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        super().load_state(state)
        self.odometry = None
        if "odometry" in state and "pose" in state:
            self.odometry = Odometry.from_state(state["odometry"], self.layout)
            self.pose = state["pose"].copy()


def default_pose_source(pose_cond: bool) -> PoseSource:
    """What a `World` uses unless told otherwise: dead reckoning for a pose-conditioned model."""
    return DeadReckoning() if pose_cond else NoPoses()
