"""Per-frame latency and memory against history, as a long game plays: one `World` is stepped for
--frames frames (10,000 by default) from a context, with the process RSS read at each checkpoint
(10, 100, 1,000, 10,000 frames); then its per-frame latency at the app's settings is timed against
a fresh world with 10 frames of history, interleaved frame by frame (A, B, A, B, ...) so that both
see the same load on a shared machine.

    python scripts/bench_history.py --frames 10000 --json runs/history.json

--fill-steps N makes the history with N denoising steps per frame (1 is the fastest to fill); the
timed frames always use --steps (the app's default): the long world's state is carried over through
snapshot()/restore(), the public API. Targets (issue 18): latency after 10,000 frames within 5% of
that after 10; RSS growth under 2% over the game. Torch runs on --threads threads (the app's 1).
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from worldmodel.bench import loadavg, memory_in_use
from worldmodel.config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS
from worldmodel.world import World, load_world


def new_world(template: World, steps: int, seed: int = 0) -> World:
    return World(template.model, steps=steps, device=template.device, seed=seed, codec=template.codec,
                 fold_commit=template.sampler.fold_commit, compile=template.compiled)


def play(world: World, frames: int, rng) -> None:
    for _ in range(frames):
        world.step(int(rng.integers(6)))


def interleaved_ms(a: World, b: World, reps: int, rng) -> tuple[float, float]:
    """Median ms per step of `a` and of `b`, timed alternately."""
    times: dict = {"a": [], "b": []}
    for _ in range(reps):
        for key, world in (("a", a), ("b", b)):
            t0 = time.perf_counter()
            world.step(int(rng.integers(6)))
            times[key].append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times["a"]), statistics.median(times["b"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="checkpoint folder or preset (default: the shipped one)")
    p.add_argument("--frames", type=int, default=10_000, help="frames of history to play")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[10, 100, 1000, 10_000],
                   help="history lengths at which RSS is read")
    p.add_argument("--context", type=int, default=21, help="context frames (random) the game starts from")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"denoising steps of the timed frames (default {DEFAULT_STEPS}, the app's)")
    p.add_argument("--fold-commit", action=argparse.BooleanOptionalAction, default=DEFAULT_FOLD_COMMIT,
                   help="fold the commit into the last denoising pass (default: the app's)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile each frame's passes, as the app does (default: on)")
    p.add_argument("--fill-steps", type=int,
                   help="denoising steps while making the history (default --steps)")
    p.add_argument("--reps", type=int, default=40, help="timed frames per world")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    template = load_world(args.checkpoint, device="cpu", steps=args.steps, fold_commit=args.fold_commit,
                          compile=args.compile)
    context = (rng.integers(0, 256, (args.context, *template.frame_shape), dtype=np.uint8),
               rng.integers(0, 6, args.context))
    load = [loadavg()]
    long = new_world(template, args.fill_steps or args.steps)
    long.reset(*context)
    rss, played, t0 = {}, 0, time.time()
    for mark in sorted(set(args.checkpoints) | {args.frames}):
        if mark > args.frames:
            continue
        play(long, mark - played, rng)
        played = mark
        rss[mark] = memory_in_use(long.device) / 2**20
        print(f"history {mark:>6}: RSS {rss[mark]:.1f} MB, state {long.state_bytes():,} bytes "
              f"({time.time() - t0:.0f} s)", flush=True)
    timed_long = new_world(template, args.steps)
    timed_long.restore(long.snapshot())
    short = new_world(template, args.steps, seed=1)
    short.reset(*context)
    play(short, 10, rng)
    ms_long, ms_short = interleaved_ms(timed_long, short, args.reps, rng)
    load.append(loadavg())
    first = min(rss)
    result = {
        "device": f"CPU, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)",
        "checkpoint": args.checkpoint or "shipped", "steps": args.steps, "fold_commit": args.fold_commit,
        "compile": args.compile, "fill_steps": args.fill_steps or args.steps, "frames": args.frames,
        "reps": args.reps,
        "ms_after_10": ms_short, f"ms_after_{args.frames}": ms_long,
        "latency_change_pct": 100 * (ms_long / ms_short - 1),
        "rss_mb": rss, "rss_growth_pct": 100 * (rss[max(rss)] / rss[first] - 1),
        "state_bytes": long.state_bytes(), "loadavg_before_after": load,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
