"""Scripted policies on the maze grid: shortest paths, steering, and the data-collection policies.

Grid convention (memory_maze's): a position is (x, y) in cells, `layout[y, x]` with 1 = free,
cell (x, y) spans [x, x+1) x [y, y+1). Headings are unit vectors (dx, dy); angles are
counter-clockwise (a LEFT turn increases them by ~18.4 degrees). Forward speed is ~0.25 cells
per step once rolling.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ..actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NUM_ACTIONS, RIGHT

_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))

# steer(): straight ahead within FORWARD_ANGLE, forward while turning within ARC_ANGLE (its turning
# circle is ~0.7 cells wide), else turn on the spot.
FORWARD_ANGLE = math.radians(10)
ARC_ANGLE = math.radians(45)


def cell_of(pos, layout: np.ndarray) -> tuple[int, int]:
    """The (x, y) cell holding position `pos`, clipped to the grid."""
    h, w = layout.shape
    return (min(max(int(math.floor(pos[0])), 0), w - 1), min(max(int(math.floor(pos[1])), 0), h - 1))


def _bfs(layout: np.ndarray, start: tuple[int, int], rng: np.random.Generator | None = None):
    h, w = layout.shape
    dist = np.full((h, w), -1, dtype=np.int32)
    parent = {}
    x0, y0 = start
    dist[y0, x0] = 0
    queue = deque([(x0, y0)])
    while queue:
        x, y = queue.popleft()
        for k in (range(4) if rng is None else rng.permutation(4)):
            dx, dy = _NEIGHBOURS[k]
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h and layout[ny, nx] and dist[ny, nx] < 0:
                dist[ny, nx] = dist[y, x] + 1
                parent[(nx, ny)] = (x, y)
                queue.append((nx, ny))
    return dist, parent


def bfs_distances(layout: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Steps (4-neighbour moves through free cells) from cell `start` to every cell, indexed
    [y, x]; -1 for walls and unreachable cells."""
    return _bfs(layout, tuple(start))[0]


def shortest_path(layout: np.ndarray, start: tuple[int, int], goal: tuple[int, int],
                  rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """Cells from `start` to `goal`, both included ([] if `goal` cannot be reached). With `rng`,
    ties between equally short paths are broken at random (varied routes), else always alike."""
    start, goal = tuple(start), tuple(goal)
    dist, parent = _bfs(layout, start, rng)
    if dist[goal[1], goal[0]] < 0:
        return []
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


def heading_error(pos, direction, target) -> float:
    """Signed angle (radians) from heading `direction` to the bearing of `target` from `pos`:
    positive when the target is counter-clockwise (to the left)."""
    tx, ty = target[0] - pos[0], target[1] - pos[1]
    dx, dy = direction[0], direction[1]
    return math.atan2(dx * ty - dy * tx, dx * tx + dy * ty)


def steer(pos, direction, target) -> int:
    """The action that brings an agent at `pos` facing `direction` towards `target`."""
    err = heading_error(pos, direction, target)
    if abs(err) <= FORWARD_ANGLE:
        return FORWARD
    near = math.hypot(target[0] - pos[0], target[1] - pos[1]) < 0.6
    if abs(err) <= ARC_ANGLE and not near:  # close by, an arc would circle the target: turn first
        return FORWARD_LEFT if err > 0 else FORWARD_RIGHT
    return LEFT if err > 0 else RIGHT


def _center(cell) -> tuple[float, float]:
    return (cell[0] + 0.5, cell[1] + 0.5)


def _step(path, i) -> tuple[int, int]:
    """The move from path[i] to path[i + 1]."""
    return (path[i + 1][0] - path[i][0], path[i + 1][1] - path[i][1])


class PathFollower:
    """Drives along the shortest path of cells to `goal_cell`, aiming at cell centres (so it never
    cuts a wall corner) and further ahead along straight stretches. `act` returns None once the
    agent is within `radius` of the goal cell's centre. `path` gives a route of cells to follow
    instead (ending at the goal); off the path it replans the shortest one. `rng` (optional)
    picks among equally short paths."""

    def __init__(self, layout: np.ndarray, goal_cell: tuple[int, int], rng: np.random.Generator | None = None,
                 radius: float = 0.15, path: list[tuple[int, int]] | None = None):
        self.layout, self.goal, self.radius, self.rng = layout, tuple(goal_cell), radius, rng
        self.path = [tuple(c) for c in path] if path else []  # a given route (it may cross itself)
        self._i = 0  # how far along the path the agent is

    def act(self, agent_pos, agent_dir) -> int | None:
        cell = cell_of(agent_pos, self.layout)
        if cell in self.path[self._i:]:
            self._i = self.path.index(cell, self._i)
        else:  # off the path: a new shortest one
            self.path, self._i = shortest_path(self.layout, cell, self.goal, self.rng), 0
            if not self.path:
                raise ValueError(f"cell {self.goal} cannot be reached from {cell}")
        i = self._i
        goal = _center(self.goal)
        near = math.hypot(agent_pos[0] - goal[0], agent_pos[1] - goal[1]) < self.radius
        if i == len(self.path) - 1 and near:
            return None  # at the end of the path (a route may pass the goal cell before)
        j = min(i + 1, len(self.path) - 1)
        if j > i:  # along a straight corridor, and near its centre line, aim further: full speed
            d = _step(self.path, i)
            off = agent_pos[1] - _center(cell)[1] if d[0] else agent_pos[0] - _center(cell)[0]
            while j + 1 < len(self.path) and j - i < 3 and abs(off) < 0.2 and _step(self.path, j) == d:
                j += 1
        return steer(agent_pos, agent_dir, _center(self.path[j]))


class Explorer:
    """Walks to random far cells along shortest paths. On arrival it sometimes looks around
    (turns on the spot for a random while), and on the way it sometimes takes a random turn
    burst, so places are seen again from several directions. It never drives into a wall."""

    def __init__(self, layout: np.ndarray, rng: np.random.Generator, look_prob: float = 0.5,
                 turn_prob: float = 0.03):
        self.layout, self.rng = layout, rng
        self.look_prob, self.turn_prob = look_prob, turn_prob
        self.follower: PathFollower | None = None
        self.queued: list[int] = []

    def _pick_goal(self, cell) -> tuple[int, int]:
        dist = bfs_distances(self.layout, cell)
        far = dist.max()
        ys, xs = np.nonzero(dist >= max(1, far // 2))  # the farther half of the maze
        k = self.rng.integers(len(xs))
        return int(xs[k]), int(ys[k])

    def _turns(self, lo: int, hi: int) -> list[int]:
        return [LEFT if self.rng.random() < 0.5 else RIGHT] * int(self.rng.integers(lo, hi + 1))

    def act(self, agent_pos, agent_dir) -> int:
        if self.queued:
            return self.queued.pop()
        cell = cell_of(agent_pos, self.layout)
        if self.follower is None:
            self.follower = PathFollower(self.layout, self._pick_goal(cell), self.rng, radius=0.3)
        action = self.follower.act(agent_pos, agent_dir)
        if action is None:  # arrived: sometimes look around, then on to a new goal (never this cell)
            self.follower = None
            if self.rng.random() < self.look_prob:
                self.queued = self._turns(4, 20)  # up to a full circle
                return self.queued.pop()
            return self.act(agent_pos, agent_dir)
        if self.rng.random() < self.turn_prob:
            self.queued = self._turns(1, 6)
            return self.queued.pop()
        return action


class RandomPolicy:
    """Uniformly random actions, each held for 1-4 steps (it may push into walls)."""

    def __init__(self, layout: np.ndarray | None, rng: np.random.Generator):
        self.rng = rng
        self.queued: list[int] = []

    def act(self, agent_pos=None, agent_dir=None) -> int:
        if not self.queued:
            self.queued = [int(self.rng.integers(NUM_ACTIONS))] * int(self.rng.integers(1, 5))
        return self.queued.pop()


POLICIES = {"explorer": Explorer, "random": RandomPolicy}


def make_policy(name: str, layout: np.ndarray, rng: np.random.Generator):
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: one of {', '.join(POLICIES)}")
    return POLICIES[name](layout, rng)
