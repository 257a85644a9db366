"""Episode builders run in the real environment, and the recall distance of evaluation frames.

- explore: a data-collection policy (policies.POLICIES) for the whole episode.
- revisit (spatial retrieval): look around at the start (a full circle of left turns), travel
  far away, retrace the way out back to the start cell and look around again until the episode
  ends. `context_len` is the index of the first frame of the way back: the model is given the
  opening look-around and the journey out (about half the episode), and renders the way back
  (places seen on the way out, from the other side) and the closing look-around, whose views
  were all seen in the context, the opening ones ~length - 20 frames earlier.
- reasoning (spatial reasoning): exploration; `context_len` = round(0.72 * frames), the paper's
  576 context frames of 800, then new movement.
"""

from __future__ import annotations

import math

import numpy as np

from ..actions import LEFT
from .env import MazeEnv
from .episodes import EpisodeRecorder
from .policies import PathFollower, bfs_distances, cell_of, make_policy, shortest_path

LOOK_STEPS = 20  # left turns of ~18.4 degrees (the first ~14): a bit more than a full circle
REASONING_CONTEXT = 0.72
# A frame shows a view seen before if the agent was in the same cell facing within this angle.
RECALL_ANGLE = math.radians(30)


class _Run:
    """An env episode being recorded; `on_step` is told about every step (progress bars)."""

    def __init__(self, env: MazeEnv, length: int, on_step=None):
        self.env, self.length, self.on_step = env, length, on_step
        self.obs = env.reset()
        self.rec = EpisodeRecorder(self.obs)
        self.layout = self.obs["maze_layout"]
        self.start = self.cell

    @property
    def cell(self) -> tuple[int, int]:
        return cell_of(self.obs["agent_pos"], self.layout)

    @property
    def left(self) -> int:
        return self.length - (len(self.rec) - 1)

    def step(self, action: int) -> None:
        self.obs = self.env.step(action)
        self.rec.add(action, self.obs)
        if self.on_step is not None:
            self.on_step()

    def act(self, policy) -> None:
        self.step(policy.act(self.obs["agent_pos"], self.obs["agent_dir"]))


def explore_episode(env: MazeEnv, length: int, rng: np.random.Generator, policy: str = "explorer",
                    on_step=None) -> dict:
    run = _Run(env, length, on_step)
    agent = make_policy(policy, run.layout, rng)
    while run.left > 0:
        run.act(agent)
    return run.rec.episode()


def reasoning_episode(env: MazeEnv, length: int, rng: np.random.Generator, policy: str = "explorer",
                      on_step=None) -> dict:
    ep = explore_episode(env, length, rng, policy, on_step)
    ep["context_len"] = np.int64(round(REASONING_CONTEXT * (length + 1)))
    return ep


def _route_cost(route: list[tuple[int, int]]) -> int:
    """A generous estimate of the steps to drive along `route`: a half turn first, ~4 steps per
    cell (0.25 cells/step) and ~5 per corner (a quarter turn on the spot)."""
    corners = sum(1 for a, b, c in zip(route, route[1:], route[2:])
                  if (b[0] - a[0], b[1] - a[1]) != (c[0] - b[0], c[1] - b[1]))
    return 12 + 4 * len(route) + 5 * corners


def revisit_episode(env: MazeEnv, length: int, rng: np.random.Generator, policy: str = "explorer",
                    on_step=None) -> dict:
    if length < 3 * LOOK_STEPS:
        raise ValueError(f"revisit episodes need a length of at least {3 * LOOK_STEPS} steps, got {length}")
    run = _Run(env, length, on_step)
    for _ in range(LOOK_STEPS):  # the opening look-around
        run.step(LEFT)
    # Out: first to a far cell (so that even a short episode goes far), then the policy, for as
    # long as retracing the way out and a closing look-around still fit.
    dist = bfs_distances(run.layout, run.start)
    ys, xs = np.nonzero(dist >= max(1, int(0.75 * dist.max())))
    k = int(rng.integers(len(xs)))
    out = PathFollower(run.layout, (int(xs[k]), int(ys[k])), rng, radius=0.3)
    agent = make_policy(policy, run.layout, rng)
    route = [run.start]  # the cells of the way out, in order
    while run.left > _route_cost(route) + LOOK_STEPS or len(run.rec) <= LOOK_STEPS + 1:
        action = out.act(run.obs["agent_pos"], run.obs["agent_dir"]) if out is not None else None
        if action is None:
            out = None
            run.act(agent)
        else:
            run.step(action)
        if run.cell != route[-1]:
            route.append(run.cell)
    context_len = len(run.rec)
    # Back: retrace the way out (the shortest way if time runs short), then look around again.
    home, retracing = PathFollower(run.layout, run.start, rng, radius=0.3, path=route[::-1]), True
    while run.left > 0:
        if retracing and run.left <= _route_cost(shortest_path(run.layout, run.cell, run.start)) + 5:
            home, retracing = PathFollower(run.layout, run.start, rng, radius=0.3), False
        action = home.act(run.obs["agent_pos"], run.obs["agent_dir"])
        if action is None:
            break
        run.step(action)
    while run.left > 0:  # the closing look-around
        run.step(LEFT)
    ep = run.rec.episode()
    ep["context_len"] = np.int64(context_len)
    return ep


BUILDERS = {"explore": explore_episode, "revisit": revisit_episode, "reasoning": reasoning_episode}


def recall_distance(pos, dirs, context_len: int, within: str = "context",
                    max_angle: float = RECALL_ANGLE) -> np.ndarray:
    """For every frame t >= context_len: how many frames ago its view was last seen, i.e.
    t - s for the latest frame s in the same cell with a heading within `max_angle` -- s among
    the context frames (s < context_len, `within="context"`: what a model given the context can
    recall) or among all earlier frames (s < t, `within="past"`). -1 where there is none.
    Returns (len(pos) - context_len,) int64."""
    if within not in ("context", "past"):
        raise ValueError(f"within must be 'context' or 'past', got {within!r}")
    pos, dirs = np.asarray(pos, dtype=np.float64), np.asarray(dirs, dtype=np.float64)
    cells = np.floor(pos).astype(np.int64)
    heading = np.arctan2(dirs[:, 1], dirs[:, 0])
    out = np.full(max(len(pos) - context_len, 0), -1, dtype=np.int64)
    for t in range(context_len, len(pos)):
        end = context_len if within == "context" else t
        turn = np.abs(np.angle(np.exp(1j * (heading[:end] - heading[t]))))
        seen = np.nonzero((cells[:end] == cells[t]).all(axis=1) & (turn <= max_angle))[0]
        if seen.size:
            out[t - context_len] = t - seen[-1]
    return out
