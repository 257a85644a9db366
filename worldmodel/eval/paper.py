"""The paper's two Memory Maze protocols (PAPER.md, Evaluation) and its tables beside ours.

Both run on held-out exploration episodes of 2,000 steps (`scripts/paper_tables.sh` makes them
with `worldmodel generate-data --kind explore`) through `worldmodel eval --protocol ...`:

- paper-retrieval: CONTEXT frames of exploration with their poses, then HORIZON generated frames
  that replay the context's poses in reverse, so every generated frame shows a view seen before,
  from the same place and heading: the ground truth of generated frame i is context frame
  CONTEXT-1-i. The model gets those poses. There is no backward key, so the actions for reversed
  motion are a choice (`--reverse-actions`, REVERSE_ACTIONS): generated frame 0 repeats the last
  context frame's pose (noop), and frame i undoes the context's action CONTEXT-i.
- paper-reasoning: CONTEXT frames, then HORIZON frames of new movement with the true poses;
  `--dead-reckon` gives the context's poses only and dead-reckons the rest from the actions (as a
  player gets them), to be reported beside it.

`python -m worldmodel.eval.paper` sets the results.json of these runs beside the paper's rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NOOP, RIGHT

# protocol -> (context frames, generated frames), as in the paper
SPLITS = {"paper-retrieval": (400, 400), "paper-reasoning": (576, 224)}
# reversed motion -> the action that undoes each action of the forward pass
REVERSE_ACTIONS = {
    "mirror": {NOOP: NOOP, FORWARD: FORWARD, LEFT: RIGHT, RIGHT: LEFT, FORWARD_LEFT: FORWARD_RIGHT,
               FORWARD_RIGHT: FORWARD_LEFT},
    "turns": {NOOP: NOOP, FORWARD: NOOP, LEFT: RIGHT, RIGHT: LEFT, FORWARD_LEFT: RIGHT, FORWARD_RIGHT: LEFT},
    "noop": dict.fromkeys(range(6), NOOP),
}
REVERSE_ACTIONS_TEXT = {
    "mirror": "turns mirrored (left <-> right), forward kept",
    "turns": "turns mirrored, forward dropped (noop)",
    "noop": "noop throughout: the poses alone say where the camera is",
}
# Measured on 2 held-out episodes (830000-830001, shipped maze9x9, 1 sampler step, 800 frames):
# turns 17.16 dB / 0.510 SSIM, mirror 16.02 / 0.483, noop 15.37 / 0.463 -- turns best on both.
# "forward" asks for the view to move ahead while the replay moves back; the poses carry that.
DEFAULT_REVERSE = "turns"


def reversed_order(context: int, horizon: int) -> np.ndarray:
    """Frame indices of a retrieval episode as the model sees it: the context, then the context
    backwards (generated frame i is context frame context-1-i). (context + horizon,) int64."""
    if not 1 <= horizon <= context:
        raise ValueError(f"reversed replay needs 1 <= horizon <= context, got horizon {horizon}, "
                         f"context {context}")
    return np.concatenate([np.arange(context), context - 1 - np.arange(horizon)]).astype(np.int64)


def reverse_actions(actions: np.ndarray, context: int, horizon: int,
                    mode: str = DEFAULT_REVERSE) -> np.ndarray:
    """The actions of the `horizon` reversed steps: step 0 stays (noop); step i goes from context
    frame context-i back to context-1-i, undoing actions[context-i] as REVERSE_ACTIONS[mode] says."""
    if mode not in REVERSE_ACTIONS:
        raise ValueError(f"unknown reverse-actions mode {mode!r}: one of {', '.join(REVERSE_ACTIONS)}")
    undone = np.asarray(actions)[context - np.arange(1, horizon)]
    table = REVERSE_ACTIONS[mode]
    return np.array([NOOP, *(table[int(a)] for a in undone)], dtype=np.int64)


def split(protocol: str, context: int | None, horizon: int | None, frames: int) -> tuple[int, int]:
    """(context, horizon) of a paper protocol on an episode of `frames` frames: the paper's unless
    overridden; ValueError if it does not fit."""
    c, h = SPLITS[protocol]
    c, h = context or c, horizon or h
    room = c if protocol == "paper-retrieval" else frames - c
    if c >= frames or h > room:
        raise ValueError(f"{protocol} with context {c} and horizon {h} does not fit an episode of {frames} "
                         "frames: generate longer episodes (scripts/paper_tables.sh) or pass --context / "
                         "--horizon")
    return c, h


def episode_view(protocol: str, ep: dict, actions: np.ndarray, poses: np.ndarray | None, context: int,
                 horizon: int, mode: str = DEFAULT_REVERSE) -> dict:
    """The episode as the protocol plays it: `order` (frame indices: truth is frames[order]
    [context:]), the actions and poses along it, and the recall distance of each generated frame
    (worldmodel.data.trajectories.recall_distance over the replayed trajectory)."""
    from ..data.trajectories import recall_distance

    if protocol == "paper-retrieval":
        order = reversed_order(context, horizon)
        actions = np.concatenate([actions[:context], reverse_actions(actions, context, horizon, mode)])
    else:
        order = np.arange(context + horizon)
        actions = actions[:context + horizon]
    distance = recall_distance(ep["agent_pos"][order], ep["agent_dir"][order], context)
    return dict(order=order, actions=actions, true_poses=None if poses is None else poses[order],
                distance=distance)


# -- the tables --------------------------------------------------------------------------------
# The paper's rows (PAPER.md): name -> (SSIM, LPIPS, PSNR), and which of our variants is which.
PAPER = {
    "paper-retrieval": {
        "Causal attention, 192-frame context": (0.829, 0.147, 26.4),
        "Mamba2 (frame-wise scan)": (0.747, 0.313, 20.4),
        "Mamba2 + frame-local attention": (0.735, 0.336, 19.3),
        "Block-wise SSM + frame-local attention": (0.898, 0.069, 30.8),
        "Causal attention, full context (quadratic)": (0.914, 0.057, 32.6)},
    "paper-reasoning": {
        "Causal, 192-frame context": (0.839, 0.125, 27.1),
        "Mamba2": (0.827, 0.150, 26.4),
        "Mamba2 + frame-local attention": (0.845, 0.113, 27.5),
        "Block-wise SSM + frame-local attention": (0.855, 0.099, 28.2),
        "Causal, full context": (0.860, 0.089, 28.8)},
}
OUR_VARIANT = {"ours": "block-wise SSM + frame-local attention + pose-keyed memory",
               "mamba2_local": "Mamba2 + frame-local attention",
               "causal_window": "causal attention, 10-frame window"}


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _label(res: dict, name: str) -> str:
    variants = {m["name"]: m for m in res["models"]}
    if name not in variants:
        return f"*{name}* (reference)"
    m = variants[name]
    return f"{name}: {OUR_VARIANT.get(m['variant'], m['variant'])}, {m['params'] / 1e6:.1f}M"


def _setting(res: dict) -> str:
    s, eps = res["settings"], res["episodes"]
    frames = sum(e["horizon"] for e in eps)
    reverse = f", reversed motion: {s['reverse_actions']}" if s.get("reverse_actions") else ""
    return (f"{len(eps)} episode(s) from `{s['episodes']}`, context {eps[0]['context']}, "
            f"{eps[0]['horizon']} generated frames each ({frames} scored), poses: {s['poses']}, "
            f"{s['steps']} sampler step(s){reverse}")


def table(protocol: str, res: dict, dead_reckoned: dict | None = None) -> list[str]:
    """Markdown lines: the paper's rows, then ours (models and references) from a results.json of
    `protocol`; with `dead_reckoned` (the same run with --dead-reckon) its SSIM and PSNR beside."""
    extra = " | SSIM, dead-reckoned poses | PSNR, dead-reckoned poses" if dead_reckoned else ""
    lines = [f"| {protocol} | SSIM ↑ | LPIPS ↓ | PSNR (dB) ↑{extra} |",
             "|---|---|---|---|" + ("---|---|" if dead_reckoned else "")]
    dash = " | -- | --" if dead_reckoned else ""
    for name, (ssim, lpips, psnr) in PAPER[protocol].items():
        lines.append(f"| paper: {name} (~200M) | {ssim:.3f} | {lpips:.3f} | {psnr:.1f}{dash} |")
    for name, m in res["summary"]["all"].items():
        row = f"| {_label(res, name)} | {_fmt(m['ssim'], 3)} | {_fmt(m['lpips'], 3)} | {_fmt(m['psnr'], 1)}"
        if dead_reckoned:
            d = dead_reckoned["summary"]["all"].get(name)
            row += f" | {_fmt(d and d['ssim'], 3)} | {_fmt(d and d['psnr'], 1)}"
        lines.append(row + " |")
    lines += ["", f"Ours: {_setting(res)}."]
    if dead_reckoned:
        lines.append(f"Dead-reckoned: {_setting(dead_reckoned)}.")
    return lines + [""]


def tables(retrieval: dict | None, reasoning: dict | None, dead_reckoned: dict | None = None) -> str:
    """The paper's two tables with our rows, as markdown."""
    lines = []
    if retrieval is not None:
        lines += ["### Spatial retrieval (400 context frames -> 400 frames retracing them)", ""]
        lines += table("paper-retrieval", retrieval)
    if reasoning is not None:
        lines += ["### Spatial reasoning (576 context frames -> 224 frames of new movement)", ""]
        lines += table("paper-reasoning", reasoning, dead_reckoned)
    return "\n".join(lines)


SAME = ("episodes", "episode_seeds", "steps", "poses", "reverse_actions", "context", "horizon", "limit")


def merge(results: list[dict]) -> dict:
    """Several results.json of one protocol on the same episodes and settings (e.g. models run
    apart) as one: every run's models, then the references (of the first run)."""
    first = results[0]
    for r in results[1:]:
        differ = [k for k in SAME if r["settings"].get(k) != first["settings"].get(k)]
        if r["protocol"] != first["protocol"] or differ:
            raise ValueError(f"cannot merge runs of other protocols or settings ({', '.join(differ)})")
    models = [m for r in results for m in r["models"]]
    rows = {m["name"]: next(r["summary"]["all"][m["name"]] for r in results if m in r["models"])
            for m in models}
    rows |= {n: v for n, v in first["summary"]["all"].items() if n not in rows}
    return {**first, "models": models, "summary": {**first["summary"], "all": rows}}


def main(argv: list[str] | None = None) -> int:
    """`python -m worldmodel.eval.paper --retrieval R.. --reasoning S.. [--dead-reckoned D..] [--out F]`:
    each flag takes one or more results.json of that protocol (merged: see merge)."""
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    for flag in ("--retrieval", "--reasoning", "--dead-reckoned"):
        parser.add_argument(flag, type=Path, nargs="+", default=None,
                            help=f"results.json of the {flag[2:]} run(s)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print)")
    args = parser.parse_args(argv)
    runs = {k: None if ps is None else merge([json.loads(p.read_text()) for p in ps])
            for k, ps in (("retrieval", args.retrieval), ("reasoning", args.reasoning),
                          ("dead_reckoned", args.dead_reckoned))}
    text = tables(runs["retrieval"], runs["reasoning"], runs["dead_reckoned"])
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
