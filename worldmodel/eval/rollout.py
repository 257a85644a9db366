"""Rollouts: a `World` seeded with real context frames, stepped through a list of actions, and
`worldmodel rollout`, which writes them as a video.

Contexts come from an episode file or from the real environment (`env_context`: a look-around
from the maze's start, then the actions played for ground truth). Action scripts are written
with keys ("W*8 A*5 WD .") or ids, inline or in a text or JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NOOP, NUM_ACTIONS, RIGHT
from ..config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS
from ..data.env import MAZE_SIZES
from ..data.episodes import actions_to_index, episode_poses, load_episode
from ..world import DEFAULT_CHECKPOINT, World, load_world
from .media import write_video


# -- rollouts ----------------------------------------------------------------------------------
def rollout(world: World, context_frames: np.ndarray, context_actions: np.ndarray, actions: Sequence[int],
            progress: Callable[[int], object] | None = None, poses: np.ndarray | None = None,
            layout: np.ndarray | None = None) -> np.ndarray:
    """Seed `world` with real context frames (and the actions that led to them), then take
    `actions` one by one. `poses` (optional, (>= len(context_frames), 4)): the agent's pose at each
    frame, for a pose-conditioned model; steps past the last one are dead-reckoned by the world
    (in the maze `layout`, if given). Returns the generated frames (len(actions), H, W, 3) uint8."""
    context = len(context_frames)
    last = world.reset(context_frames, context_actions, None if poses is None else poses[:context], layout)
    out = np.empty((len(actions), *last.shape), dtype=np.uint8)
    for i, action in enumerate(actions):
        known = poses is not None and context + i < len(poses)
        out[i] = world.step(int(action), poses[context + i] if known else None)
        if progress is not None:
            progress(1)
    return out


def rollout_episode(world: World, frames: np.ndarray, actions: np.ndarray, context: int, horizon: int,
                    progress: Callable[[int], object] | None = None, poses: np.ndarray | None = None,
                    window: int | None = None, layout: np.ndarray | None = None) -> np.ndarray:
    """Seed `world` with the first `context` frames (only the last `window` of them, if given: what
    a model that remembers that far could use), then replay the episode's next `horizon` actions
    (and poses, if given: (>= context, 4); frames past them are dead-reckoned in `layout`).
    Returns the generated frames (horizon, H, W, 3) uint8, aligned with
    frames[context:context + horizon]."""
    horizon = min(horizon, len(frames) - context)
    lo = 0 if window is None else max(0, context - window)
    poses = None if poses is None else poses[lo:context + horizon]
    return rollout(world, frames[lo:context], actions[lo:context], actions[context:context + horizon],
                   progress, poses, layout)


# -- action scripts ----------------------------------------------------------------------------
ACTION_KEYS = {".": NOOP, "N": NOOP, "W": FORWARD, "A": LEFT, "D": RIGHT,
               "WA": FORWARD_LEFT, "AW": FORWARD_LEFT, "WD": FORWARD_RIGHT, "DW": FORWARD_RIGHT}


def _action_token(token, where: str) -> int:
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and 0 <= int(token) < NUM_ACTIONS:
        return int(token)
    key = str(token).strip().upper()
    if key in ACTION_KEYS:
        return ACTION_KEYS[key]
    if key.isdigit() and 0 <= int(key) < NUM_ACTIONS:
        return int(key)
    raise ValueError(f"unknown action key {token!r} ({where}); use W=forward, A=left, D=right, "
                     "WA/AW=forward+left, WD/DW=forward+right, . or N=noop (or ids 0..5), optionally "
                     "repeated as KEY*COUNT")


def parse_actions(script: str | Sequence) -> list[int]:
    """An action script -> action ids. A string holds keys separated by spaces or commas, each
    optionally repeated with `*COUNT` ("W*8 A*5 WD ."); a list holds keys or ids 0..5."""
    tokens = script.replace(",", " ").split() if isinstance(script, str) else list(script)
    actions: list[int] = []
    for i, token in enumerate(tokens):
        where = f"token {i + 1}"
        if isinstance(token, str) and "*" in token:
            key, _, count = token.partition("*")
            if not count.isdigit():
                raise ValueError(f"bad repeat count in {token!r} ({where}): expected KEY*COUNT, e.g. W*8")
            actions += [_action_token(key, where)] * int(count)
        else:
            actions.append(_action_token(token, where))
    if not actions:
        raise ValueError("the action script is empty")
    return actions


def read_actions_file(path: str | Path) -> list[int]:
    """Actions from a text file (a script as for parse_actions; `#` starts a comment) or a JSON
    file (a list of keys/ids, or an object with an "actions" list)."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json" or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict):
            if "actions" not in data:
                raise ValueError(f"{path}: a JSON object needs an 'actions' list")
            data = data["actions"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of actions")
        return parse_actions(data)
    return parse_actions(" ".join(line.split("#", 1)[0] for line in text.splitlines()))


# -- contexts from the real environment --------------------------------------------------------
def look_around(env, frames: int) -> tuple[list[dict], np.ndarray]:
    """Reset `env` (anything with `reset()` and `step(action)` returning observation dicts) and
    turn left `frames - 1` times (a full circle is ~20): a view of the surroundings to seed a
    world. Returns the observations and the actions that led to them (action 0 is a placeholder)."""
    obs = [env.reset()]
    for _ in range(frames - 1):
        obs.append(env.step(LEFT))
    return obs, np.array([NOOP] + [LEFT] * (frames - 1), dtype=np.int64)


def observation_poses(obs: Sequence[dict]) -> np.ndarray:
    """(T, 4) poses (x, y, dx, dy) of a list of environment observations."""
    return episode_poses({k: np.stack([o[k] for o in obs]) for k in ("agent_pos", "agent_dir")})


def env_context(maze: str, seed: int, look: int, actions: Sequence[int]):
    """Context from the real environment: the first frame of maze `seed` and `look - 1` left
    turns, then `actions` played in the same env as ground truth.
    Returns (context frames, context actions, ground-truth frames, poses of all these frames, the
    maze's layout)."""
    from ..data.env import MazeEnv

    with MazeEnv(maze, seed=seed) as env:
        obs, context_actions = look_around(env, look)
        obs += [env.step(int(a)) for a in actions]
    frames = np.stack([o["image"] for o in obs])
    return frames[:look], context_actions, frames[look:], observation_poses(obs), obs[-1]["maze_layout"]


# -- worldmodel rollout ------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `worldmodel rollout`."""
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint folder or preset name (default: the shipped "
                             f"{DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--episode", default=None,
                        help="episode .npz: context from its first frames; without an action script its own "
                             "actions are replayed")
    parser.add_argument("--context", type=int, default=None,
                        help="context frames (default: the episode's context_len, else 16; from the real "
                             "environment: 21, the first frame and a full circle of left turns)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="frames to generate (default: the rest of the episode, or the whole action "
                             "script)")
    script = parser.add_mutually_exclusive_group()
    script.add_argument("--actions", default=None,
                        help='action script: W=forward A=left D=right WA/AW WD/DW .|N=noop, '
                             'KEY*COUNT repeats, e.g. "W*8 A*5 WD ."')
    script.add_argument("--actions-file", default=None, help="action script as a text or JSON file")
    parser.add_argument("--maze", default="9x9", choices=MAZE_SIZES,
                        help="maze size for a context from the real environment")
    parser.add_argument("--seed", type=int, default=0, help="maze seed (real environment) and sampler seed")
    parser.add_argument("--side-by-side", action="store_true",
                        help="ground truth beside the model (an episode replay, or the real environment)")
    parser.add_argument("--out", default="rollout.mp4", help="video path (.mp4 or .gif)")
    parser.add_argument("--gif", action="store_true", help="also write a .gif beside the video")
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling factor")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"sampler steps per frame (default {DEFAULT_STEPS})")
    parser.add_argument("--fold-commit", action=argparse.BooleanOptionalAction, default=DEFAULT_FOLD_COMMIT,
                        help="keep the state of the last denoising pass instead of running a commit pass "
                             "(default: on, as in the app)")
    parser.add_argument("--no-pose", action="store_true",
                        help="do not give a pose-conditioned model the agent's poses (known for an episode's "
                             "or the environment's frames)")
    parser.add_argument("--dead-reckon", action="store_true",
                        help="give the model the context's poses only and dead-reckon the rest from the "
                             "actions, as the app does (an action script on an episode always is)")
    parser.add_argument("--device", default="auto")
    return parser


def _script(args: argparse.Namespace) -> list[int] | None:
    """The action script the flags give (cut to --horizon), None to replay an episode."""
    if args.actions is not None:
        script = parse_actions(args.actions)
    elif args.actions_file is not None:
        script = read_actions_file(args.actions_file)
    else:
        script = None
    if script is not None and args.horizon is not None:
        script = script[:args.horizon]
    if script is None and args.episode is None:
        raise ValueError("give --episode (replay its actions) or an action script (--actions / "
                         "--actions-file)")
    if args.scale < 1 or (args.horizon is not None and args.horizon < 1):
        raise ValueError("--scale and --horizon must be >= 1")
    return script


def _episode_context(args: argparse.Namespace, script: list[int] | None):
    """Context of `--episode`, the actions to take (its own when no script) and, when it replays
    its own actions, the ground truth. Returns (frames, actions, script, truth, poses, layout)."""
    ep = load_episode(args.episode)
    frames, actions, poses = ep["image"], actions_to_index(ep["action"]), episode_poses(ep)
    context = args.context
    if context is None:
        context = int(ep.get("context_len", min(16, len(frames) - 1)))
    if not 1 <= context <= len(frames) - (script is None):
        raise ValueError(f"--context {context} does not fit {args.episode} ({len(frames)} frames)")
    truth = None
    if script is None:
        script = actions[context:context + (args.horizon or len(frames))].tolist()
        truth = frames[context:]
    # The episode's poses while it replays its own actions; a script of other actions gets the
    # context's poses, and the world dead-reckons the rest in the episode's maze.
    if poses is not None:
        poses = poses[:context + len(script)] if truth is not None else poses[:context]
    layout = ep["maze_layout"][context - 1] if "maze_layout" in ep else None
    return frames[:context], actions[:context], script, truth, poses, layout


def run(args: argparse.Namespace) -> int:
    """Entry point of `worldmodel rollout`."""
    script = _script(args)
    world = load_world(args.checkpoint, device=args.device, steps=args.steps, seed=args.seed,
                       fold_commit=args.fold_commit)
    if args.episode is not None:
        context_frames, context_actions, script, truth, poses, layout = _episode_context(args, script)
    else:
        look = args.context if args.context is not None else 21
        if look < 1:
            raise ValueError(f"--context must be >= 1, got {look}")
        context_frames, context_actions, truth, poses, layout = env_context(args.maze, args.seed, look,
                                                                            script)
    if args.side_by_side and truth is None:
        raise ValueError("--side-by-side needs ground truth: replay an episode's own actions, or take the "
                         "context from the real environment (no --episode)")
    t0 = time.perf_counter()
    if args.dead_reckon and poses is not None:
        poses = poses[:len(context_frames)]
    generated = rollout(world, context_frames, context_actions, script, poses=None if args.no_pose else poses,
                        layout=layout)
    elapsed = time.perf_counter() - t0
    name = Path(args.checkpoint).name if args.checkpoint else DEFAULT_CHECKPOINT.name
    rows, labels = ([truth[:len(generated)], generated], ["ground truth", name]) if args.side_by_side \
        else ([generated], [name])
    out = Path(args.out)
    paths = [write_video(out, rows, args.fps, args.scale, labels)]
    if args.gif and out.suffix != ".gif":
        paths.append(write_video(out.with_suffix(".gif"), rows, args.fps, args.scale, labels))
    print(f"{len(generated)} frames after {len(context_frames)} context frames, "
          f"{len(generated) / elapsed:.1f} frames/s on {world.device}: {', '.join(map(str, paths))}")
    return 0
