"""`worldmodel generate-data`: Memory Maze episodes from the real environment, one `.npz` each.

Episode i of a run is `ep_{seed+i:08d}.npz`, made with seed+i for the maze and for the policy,
so it is the same file whichever worker makes it and whether or not the run was interrupted.
Workers are spawned processes (dm_control's GL state does not survive a fork); each builds one
env and reseeds it for every episode (`MazeEnv.reseed`: the same episode as in a fresh env, and
no ~3 s env build per episode). Files are written atomically and existing complete ones are
skipped, so a rerun resumes. Workers end with the parent, however it ends (killed too): the
episode a worker was writing is then removed, and a rerun clears what a killed run left.
`manifest.json` records the settings (maze, length, policy, kind), the seeds and files in the
folder, and the speed of the last run (frames_per_second: frames made per wall-clock second, env
builds included); a folder is never mixed with episodes of other settings.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import queue as queue_lib
import signal
import sys
import threading
import time
import warnings
from multiprocessing import util as mp_util
from pathlib import Path

import numpy as np

from .env import EPISODE_LENGTH, MAZE_SIZES
from .episodes import load_episode, save_episode

MANIFEST = "manifest.json"
KINDS = ("explore", "revisit", "reasoning")
POLICY_NAMES = ("explorer", "random")
SETTINGS = ("maze", "length", "policy", "kind")


def episode_path(out: str | Path, seed: int) -> Path:
    return Path(out) / f"ep_{seed:08d}.npz"


def make_episode(maze: str, seed: int, length: int, policy: str = "explorer", kind: str = "explore",
                 on_step=None, env=None) -> dict:
    """One episode of `kind`: everything follows from `seed`. Made in `env` (a MazeEnv of this
    maze, reseeded: the same episode, without the cost of building an env) or in a fresh env."""
    from .env import MazeEnv
    from .trajectories import BUILDERS

    if env is None:
        with MazeEnv(maze, seed=seed) as env:
            return make_episode(maze, seed, length, policy, kind, on_step, env)
    if env.maze != maze:
        raise ValueError(f"a {maze} episode asked of a {env.maze} env")
    env.reseed(seed)
    return BUILDERS[kind](env, length, np.random.default_rng(seed), policy, on_step)


# -- workers -----------------------------------------------------------------------------------
_progress = None  # a worker's queue of finished-step counts for the parent's progress bar
_env = None  # a worker's MazeEnv, kept for all its episodes


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _init_worker(progress, parent: int | None = None) -> None:
    global _progress
    _progress = progress
    if parent is not None:
        _die_with_parent(parent)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: save_episode removes its temporary file


def _die_with_parent(parent: int) -> None:
    """This worker gets SIGTERM when process `parent` dies, even by SIGKILL: Linux's
    PR_SET_PDEATHSIG, elsewhere a thread that watches the parent's pid."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if not sys.platform.startswith("linux"):
            raise OSError("no prctl")
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _remove_stale(out: Path) -> None:
    """Temporary episode files (save_episode's `.NAME.PID.tmp`) of processes no longer running."""
    for tmp in out.glob(".ep_*.npz.*.tmp"):
        try:
            os.kill(int(tmp.suffixes[-2].lstrip(".")), 0)
        except (ValueError, IndexError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:  # a live process of another user
            pass


def _worker_env(maze: str, seed: int):
    global _env
    if _env is None or _env.maze != maze:
        from .env import MazeEnv

        if _env is not None:
            _env.close()
        _env = MazeEnv(maze, seed=seed)
        mp_util.Finalize(_env, _env.close, exitpriority=10)  # closed when the worker exits
    return _env


def _job(out: str, maze: str, seed: int, length: int, policy: str, kind: str) -> str:
    pending = 0

    def tick():
        nonlocal pending
        pending += 1
        if pending == 20:  # batched: a message per step would cost more than it tells
            _progress.put(pending)
            pending = 0

    episode = make_episode(maze, seed, length, policy, kind, tick, _worker_env(maze, seed))
    path = save_episode(episode_path(out, seed), episode)
    _progress.put(pending)
    return str(path)


def _complete(path: Path, length: int) -> bool:
    if not path.exists():
        return False
    try:
        ok = len(load_episode(path)["image"]) == length + 1
    except ValueError as e:
        ok, why = False, str(e)
    else:
        why = f"{path}: not {length + 1} frames"
    if not ok:
        warnings.warn(f"{why}; making it again")
    return ok


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


def generate_episodes(out: str | Path, maze: str = "9x9", episodes: int = 1, length: int | None = None,
                      workers: int = 1, seed: int = 0, policy: str = "explorer", kind: str = "explore",
                      progress: bool = True) -> list[Path]:
    """Make episodes seed..seed+episodes-1 of `length` steps (default: the maze's own episode
    length, 1000 for 9x9) in folder `out`, on `workers` processes (1: in this process).
    Returns their paths, in seed order. ValueError if `out` was made with other settings."""
    from tqdm.auto import tqdm

    if maze not in MAZE_SIZES:
        raise ValueError(f"unknown maze {maze!r}: one of {', '.join(MAZE_SIZES)}")
    if kind not in KINDS or policy not in POLICY_NAMES:
        raise ValueError(f"kind must be one of {KINDS} and policy one of {POLICY_NAMES}, "
                         f"got {kind!r}, {policy!r}")
    length = EPISODE_LENGTH[maze] if length is None else int(length)
    if length < 1 or episodes < 1 or workers < 1:
        raise ValueError("length, episodes and workers must be >= 1")
    out = Path(out)
    settings = dict(maze=maze, length=length, policy=policy, kind=kind)
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {}
    other = {k: old[k] for k in SETTINGS if k in old and old[k] != settings[k]}
    if other:
        was = ", ".join(f"{k}={v!r}" for k, v in other.items())
        now = ", ".join(f"{k}={settings[k]!r}" for k in other)
        raise ValueError(f"{out} holds episodes made with other settings ({was}; asked for {now}): "
                         "use another folder")
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)

    seeds = list(range(seed, seed + episodes))
    paths = [episode_path(out, s) for s in seeds]
    todo = [s for s, p in zip(seeds, paths) if not _complete(p, length)]
    earlier = [s for s in old.get("seeds", []) if s not in seeds and episode_path(out, s).exists()]
    all_seeds = sorted(earlier + seeds)
    manifest = dict(settings, seeds=all_seeds, files=[episode_path(out, s).name for s in all_seeds],
                    generated_this_run=0, frames_per_second=None, seconds=None, workers=workers)
    _write_manifest(out, manifest)  # settings first: an interrupted run still guards its folder

    t0 = time.perf_counter()
    bar = tqdm(total=len(todo) * length, unit="frame", desc=f"{kind} {maze}",
               disable=not progress or not todo, dynamic_ncols=True, smoothing=0.05)
    try:
        if todo and workers == 1:
            from .env import MazeEnv

            with MazeEnv(maze, seed=todo[0]) as env:
                for s in todo:
                    episode = make_episode(maze, s, length, policy, kind, lambda: bar.update(1), env)
                    save_episode(episode_path(out, s), episode)
        elif todo:
            ctx = mp.get_context("spawn")
            steps = ctx.Queue()
            with ctx.Pool(min(workers, len(todo)), initializer=_init_worker,
                          initargs=(steps, os.getpid())) as pool:
                jobs = [pool.apply_async(_job, (str(out), maze, s, length, policy, kind)) for s in todo]
                while not all(j.ready() for j in jobs):
                    try:
                        bar.update(steps.get(timeout=0.5))
                    except queue_lib.Empty:
                        pass
                    for j in jobs:
                        if j.ready() and not j.successful():
                            j.get()  # re-raises the worker's error (the pool is then terminated)
                for j in jobs:
                    j.get()
                pool.close()  # let the workers exit normally (closing their envs), not terminate
                pool.join()
            while not steps.empty():
                bar.update(steps.get())
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if todo:
        manifest.update(generated_this_run=len(todo), seconds=round(seconds, 2),
                        frames_per_second=round(len(todo) * length / seconds, 2))
        _write_manifest(out, manifest)
    return paths


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `worldmodel generate-data`."""
    parser.add_argument("--out", required=True,
                        help="output folder (one ep_SEED.npz per episode + manifest.json)")
    parser.add_argument("--maze", default="9x9", choices=MAZE_SIZES, help="maze size")
    parser.add_argument("--episodes", type=int, default=1, help="number of episodes")
    parser.add_argument("--length", type=int, default=None,
                        help="steps per episode (frames: length + 1); default: the maze's episode length "
                             f"({', '.join(f'{m}: {n}' for m, n in EPISODE_LENGTH.items())})")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses seed SEED+i (maze and policy)")
    parser.add_argument("--kind", default="explore", choices=KINDS,
                        help="explore: training data; revisit: look around, go away, come back "
                             "(retrieval evaluation); reasoning: exploration with a context split "
                             "(reasoning evaluation)")
    parser.add_argument("--policy", default="explorer", choices=POLICY_NAMES,
                        help="explorer: shortest paths to random far cells with look-arounds; "
                             "random: random actions")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel processes (~1.6 GB of memory each)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of `worldmodel generate-data`."""
    paths = generate_episodes(args.out, maze=args.maze, episodes=args.episodes, length=args.length,
                              workers=args.workers, seed=args.seed, policy=args.policy, kind=args.kind,
                              progress=not args.no_progress)
    manifest = json.loads((Path(args.out) / MANIFEST).read_text())
    made, fps = manifest["generated_this_run"], manifest["frames_per_second"]
    speed = f" at {fps:.1f} frames/s" if fps else ""
    print(f"{len(paths)} episodes in {args.out}: {made} made{speed}, {len(paths) - made} already there")
    return 0
