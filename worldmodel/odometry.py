"""Dead reckoning in Memory Maze: the pose an action leads to, without the environment.

A pose-conditioned model (and its pose-keyed memory) needs the agent's pose for every frame it
makes. Evaluation has the true poses; a player in the app, or an offline rollout on actions alone,
does not. `Odometry` integrates the actions the way Memory Maze's physics responds to them,
measured on 20 episodes of the real environment (seeds 1000-1019, 19,980 steps): speed and turn
rate follow their commands with a one-step lag,

    v' = 0.558 v + 0.114 [forward]            (cells per step, along the heading; 0.258 at full speed)
    w' = 0.199 w + 0.2586 [left] - 0.2586 [right]   (radians per step; 18.5 degrees when turning)

(residuals 0.015 cells and 0.47 degrees per step), and the agent, a disc, is pushed out of the
layout's wall cells. Tracked this way from frame 1 of 36 held-out episodes (maze9_val, lookback,
revisit_train; 72 starts), its position is off by 0.28 cells (median; 90th percentile 0.42, worst
0.65) after 64 steps and 0.29 (0.49, 0.60) after 200; without the layout, 0.31 (0.49) and 0.44
(0.76). Turning in place, how the app seeds a world and how a player looks back, is exact up to
that lag.
"""

from __future__ import annotations

import numpy as np

from .actions import MOVES_FORWARD, turn_direction

SPEED_KEEP, SPEED_GAIN = 0.558, 0.114
TURN_KEEP, TURN_GAIN = 0.199, 0.2586
RADIUS = 0.2  # the real agent's centre comes within 0.28 cells of a wall cell; less forgives drift


class Odometry:
    """Tracks (x, y, dx, dy) from a start pose and the actions taken since. `layout`: the maze's
    free cells as (rows = y, cols = x) with 1 = free (Memory Maze's `maze_layout`); None = no walls."""

    def __init__(self, pose, prev_pose=None, layout=None):
        pose = np.asarray(pose, dtype=np.float64)
        self.xy = pose[:2].copy()
        self.angle = float(np.arctan2(pose[3], pose[2]))
        self.speed = self.turn_rate = 0.0
        if prev_pose is not None and np.isfinite(prev_pose).all():  # carry the motion the context ended in
            prev = np.asarray(prev_pose, dtype=np.float64)
            self.speed = float(np.dot(self.xy - prev[:2], prev[2:]))
            self.turn_rate = float(np.angle(np.exp(1j * (self.angle - np.arctan2(prev[3], prev[2])))))
        self.layout = None if layout is None else np.asarray(layout).astype(bool)

    def state(self) -> np.ndarray:
        """Everything it tracks, for a world's snapshot: x, y, heading angle, speed, turn rate."""
        return np.array([*self.xy, self.angle, self.speed, self.turn_rate], dtype=np.float64)

    @classmethod
    def from_state(cls, state, layout=None) -> "Odometry":
        x, y, angle, speed, turn_rate = (float(v) for v in state)
        odo = cls([x, y, np.cos(angle), np.sin(angle)], layout=layout)
        odo.angle, odo.speed, odo.turn_rate = angle, speed, turn_rate
        return odo

    @property
    def pose(self) -> np.ndarray:
        return np.array([*self.xy, np.cos(self.angle), np.sin(self.angle)], dtype=np.float32)

    def _push_out(self, x: float, y: float) -> np.ndarray:
        """(x, y) moved out of any wall cell its disc overlaps, to touch it, and inside the outer wall."""
        rows, cols = self.layout.shape
        for _ in range(2):  # a corner can need a second push
            cx, cy = int(np.clip(np.floor(x), 0, cols - 1)), int(np.clip(np.floor(y), 0, rows - 1))
            for j in range(max(cy - 1, 0), min(cy + 2, rows)):
                for i in range(max(cx - 1, 0), min(cx + 2, cols)):
                    if self.layout[j, i]:
                        continue
                    nx, ny = min(max(x, i), i + 1), min(max(y, j), j + 1)  # the cell's nearest point
                    d = np.hypot(x - nx, y - ny)
                    if 1e-9 < d < RADIUS:
                        x, y = nx + (x - nx) / d * RADIUS, ny + (y - ny) / d * RADIUS
            x, y = min(max(x, RADIUS), cols - RADIUS), min(max(y, RADIUS), rows - RADIUS)
        return np.array([x, y])

    def step(self, action: int) -> np.ndarray:
        """Apply one action (0..5); returns the pose it leads to."""
        heading = np.array([np.cos(self.angle), np.sin(self.angle)])
        self.speed = SPEED_KEEP * self.speed + SPEED_GAIN * (action in MOVES_FORWARD)
        self.xy = self.xy + self.speed * heading
        if self.layout is not None:
            self.xy = self._push_out(*self.xy)
        self.turn_rate = TURN_KEEP * self.turn_rate + TURN_GAIN * turn_direction(action)
        self.angle += self.turn_rate
        return self.pose
