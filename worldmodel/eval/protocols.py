"""`worldmodel eval`: Memory Maze protocols (PAPER.md, Evaluation) scored against references.

The protocol is chosen by `--protocol` or by the `kind` in the episode folder's manifest.json
(revisit -> retrieval, reasoning -> reasoning):
- retrieval: revisit episodes; the model sees the context (up to `context_len`) and renders
  the way back. Metrics over all generated frames, over the recall frames (views seen in the
  context) and over the rest (views no memory could recall), and PSNR against the recall
  distance (frames since the view was last seen in the context,
  worldmodel.data.trajectories.recall_distance), bucketed.
- lookback: revisit episodes; the model sees everything up to the closing look-around (back at
  the start cell, after the way back) and renders the look-around. Its views were last seen in
  the opening look-around, most of them out of sight since: the cleanest test of long memory.
- reasoning: the context is exploration, then the model renders new movement.
- freeplay: exploration episodes; 32 context frames with poses, then every later frame from the
  actions alone with dead-reckoned poses, as the app plays; scored per 50-frame bucket with a
  sharpness ratio and the share of collapsed frames (worldmodel.eval.freeplay).
- paper-retrieval, paper-reasoning: the paper's own protocols on 2,000-step exploration
  episodes (400 context frames, then their poses replayed in reverse; 576 context frames, then
  224 of new movement), worldmodel.eval.paper.
Two trivial references are scored on the same frames: the last context frame repeated, and
the mean of the context frames; with known poses the context frame closest in pose; with a
latent model, also the true frames through its autoencoder (the ceiling of any model in that
latent space). Metrics: worldmodel.metrics; the written report: worldmodel.eval.report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..actions import LEFT
from ..config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS
from ..data.episodes import actions_to_index, episode_poses, load_episode
from ..metrics import LPIPS, PSNR_CAP_DB, frame_metrics, mean, recall_buckets
from ..world import DEFAULT_CHECKPOINT, World, device_name, frames_from_model, frames_to_model, load_world
from . import freeplay, paper, report
from .media import contact_sheet, write_image, write_video
from .rollout import rollout_episode

REFERENCES = {
    "repeat last frame": "the last context frame, repeated",
    "mean frame": "the mean of the context frames, repeated",
    "closest context view": "the context frame whose pose is nearest (cells + half-turns): a perfect memory "
                            "that copies",
}
AE_REFERENCE = "autoencoder reconstruction"  # scored only when a latent model is evaluated
AE_REFERENCE_TEXT = (
    "the true frames encoded and decoded by the latent model's autoencoder: the best it can score"
)
# protocol -> episode kind
PROTOCOLS = {"retrieval": "revisit", "lookback": "revisit", "reasoning": "reasoning", "freeplay": "explore",
             "paper-retrieval": "explore", "paper-reasoning": "explore"}


def reference_frames(context_frames: np.ndarray, horizon: int,
                     poses: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The trivial predictions of REFERENCES for `horizon` frames after the context; "closest context
    view" only with `poses` ((len(context_frames) + horizon, 4) of (x, y, dx, dy))."""
    last = context_frames[-1]
    mean_frame = context_frames.astype(np.float64).mean(0).round().astype(np.uint8)
    refs = {"repeat last frame": np.repeat(last[None], horizon, 0),
            "mean frame": np.repeat(mean_frame[None], horizon, 0)}
    if poses is not None:
        context = len(context_frames)
        heading = np.arctan2(poses[:, 3], poses[:, 2])
        seen, wanted = poses[:context], poses[context:context + horizon]
        shift = np.linalg.norm(wanted[:, None, :2] - seen[None, :, :2], axis=-1)
        turn = heading[context:context + horizon, None] - heading[None, :context]
        turn = np.abs(np.angle(np.exp(1j * turn)))
        refs["closest context view"] = context_frames[np.argmin(shift + turn / np.pi, axis=1)]
    return refs


def closing_look_start(actions: np.ndarray) -> int:
    """Index of the first frame of a revisit episode's closing look-around (its trailing left turns)."""
    turns = np.flatnonzero(np.asarray(actions)[::-1] != LEFT)
    start = len(actions) - (turns[0] if len(turns) else len(actions))
    if start >= len(actions):
        raise ValueError("the episode does not end with a look-around (left turns)")
    return int(start)


# -- what to evaluate --------------------------------------------------------------------------
def _named_checkpoints(specs: Sequence[str | None]) -> list[tuple[str, str | None]]:
    """["NAME=PATH" | PATH | preset | None] -> [(unique name, spec)]."""
    out, seen = [], set()
    for spec in specs:
        if spec is not None and "=" in spec:
            name, spec = spec.split("=", 1)
        else:
            name = Path(spec).name if spec else DEFAULT_CHECKPOINT.name
        if name in REFERENCES:
            raise ValueError(f"a checkpoint may not be named {name!r}: that is a reference")
        base, k = name, 2
        while name in seen:
            name, k = f"{base}-{k}", k + 1
        seen.add(name)
        out.append((name, spec))
    return out


def _episode_files(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise ValueError(f"no episode files (*.npz) in {folder}")
    return files[:limit] if limit else files


def _protocol(folder: Path, requested: str | None) -> str:
    manifest = folder / "manifest.json"
    kind = json.loads(manifest.read_text()).get("kind") if manifest.exists() else None
    if requested:
        if kind in PROTOCOLS.values() and PROTOCOLS[requested] != kind:
            print(f"note: {folder} holds {kind} episodes; evaluating them with the {requested} protocol as "
                  "asked")
        return requested
    for protocol, k in PROTOCOLS.items():
        if kind == k:
            return protocol
    raise ValueError(f"cannot infer the protocol of {folder} (manifest kind {kind!r}): pass --protocol "
                     f"{' or '.join(PROTOCOLS)}")


def _context_len(path: Path) -> int:
    with np.load(path) as archive:
        if "context_len" not in archive.files:
            raise ValueError(f"{path} has no context_len: pass --context N")
        return int(archive["context_len"])


def _plan(args: argparse.Namespace, protocol: str, files: list[Path]) -> list[dict]:
    """Per episode: what to condition on and which frames to score (read once up front, frames later)."""
    from ..data.trajectories import recall_distance

    plan = []
    for i, path in enumerate(files):
        keys = ("agent_pos", "agent_dir", "action", *(("maze_layout",) if args.dead_reckon else ()))
        ep = load_episode(path, keys=keys)
        t1 = len(ep["action"])
        actions = actions_to_index(ep["action"])
        if protocol in paper.SPLITS:
            context, horizon = paper.split(protocol, args.context, args.horizon, t1)
            view = paper.episode_view(protocol, ep, actions, episode_poses(ep), context, horizon,
                                      args.reverse_actions)
            plan.append(dict(path=path, seed=args.seed + i, context=context, horizon=horizon,
                             layout=ep["maze_layout"][context - 1] if args.dead_reckon else None, **view))
            continue
        context = (args.context if args.context is not None else closing_look_start(actions)
                   if protocol == "lookback" else freeplay.CONTEXT if protocol == "freeplay"
                   else _context_len(path))
        if not 1 <= context < t1:
            raise ValueError(f"{path}: context {context} leaves no frame to generate ({t1} frames)")
        horizon = min(args.horizon or t1, t1 - context)
        distance = recall_distance(ep["agent_pos"], ep["agent_dir"], context)[:horizon]
        plan.append(dict(path=path, seed=args.seed + i, context=context, horizon=horizon, distance=distance,
                         actions=actions, true_poses=episode_poses(ep),
                         layout=ep["maze_layout"][context - 1] if args.dead_reckon else None))
    return plan


# -- generating and scoring --------------------------------------------------------------------
def _predict(args: argparse.Namespace, p: dict, frames: np.ndarray, worlds: dict[str, World],
             timing: dict[str, float], progress) -> dict[str, np.ndarray]:
    """Every model's frames for episode `p` (each a fresh World with the episode's seed)."""
    poses = None if args.no_pose else p["true_poses"]
    if args.dead_reckon and poses is not None:
        poses = poses[:p["context"]]
    preds = {}
    for name, base in worlds.items():
        world = World(base.model, steps=args.steps, device=base.device, seed=p["seed"], codec=base.codec,
                      commit_sigma=args.commit_sigma, fold_commit=args.fold_commit)
        t0 = time.perf_counter()
        preds[name] = rollout_episode(world, frames, p["actions"], p["context"], p["horizon"], progress,
                                      poses, args.context_window, p["layout"])
        timing[name] += time.perf_counter() - t0
    return preds


def _reference_predictions(p: dict, frames: np.ndarray, truth: np.ndarray, closest: bool,
                           codec) -> dict[str, np.ndarray]:
    preds = reference_frames(frames[:p["context"]], p["horizon"], p["true_poses"] if closest else None)
    if codec is not None:
        x = frames_to_model(torch.from_numpy(truth).to(codec.device))
        preds[AE_REFERENCE] = frames_from_model(codec.decode(codec.encode(x))).cpu().numpy()
    return preds


def _summarise(episodes: list[dict], plan: list[dict], names: list[str], bins: int) -> dict:
    """Frame-weighted aggregates over all episodes: summary (all frames, recall frames and the views
    the context never showed, which no memory can recall), recall buckets, PSNR per frame."""
    pooled = {n: {k: None if episodes[0]["metrics"][n][k] is None else
                  np.concatenate([e["metrics"][n][k] for e in episodes]) for k in ("ssim", "psnr", "lpips")}
              for n in names}
    distance = np.concatenate([p["distance"] for p in plan])
    recall = distance >= 0
    summary = {section: {n: {"ssim": mean(m["ssim"][mask]), "psnr": mean(m["psnr"][mask]),
                             "lpips": None if m["lpips"] is None else mean(m["lpips"][mask]),
                             "frames": int(mask.sum())} for n, m in pooled.items()}
               for section, mask in (("all", np.ones_like(recall)), ("recall", recall), ("unseen", ~recall))}
    longest = max(p["horizon"] for p in plan)
    psnr_by_frame = {}
    for n in names:
        grid = np.full((len(episodes), longest), np.nan)
        for row, e in zip(grid, episodes):
            row[:e["horizon"]] = e["metrics"][n]["psnr"]
        psnr_by_frame[n] = np.nanmean(grid, axis=0).tolist()
    return dict(summary=summary, recall_buckets=recall_buckets(distance, pooled, bins),
                psnr_by_frame=psnr_by_frame)


def _settings(args: argparse.Namespace, plan: list[dict], protocol: str) -> dict:
    poses = "none" if args.no_pose else "context, then dead-reckoned" if args.dead_reckon else "all"
    return dict(episodes=str(Path(args.episodes)), context=args.context, context_window=args.context_window,
                horizon=args.horizon, limit=args.limit, steps=args.steps, seed=args.seed, poses=poses,
                commit_sigma=args.commit_sigma, fold_commit=args.fold_commit,
                episode_seeds=[p["seed"] for p in plan],
                lpips_weights=args.lpips_weights, psnr_cap_db=PSNR_CAP_DB, data_range=1.0,
                recall_bins=args.recall_bins, metrics="torchmetrics SSIM/PSNR per frame on [0, 1] floats",
                **({"reverse_actions": args.reverse_actions} if protocol == "paper-retrieval" else {}))


def _models(specs: dict, worlds: dict[str, World], timing: dict[str, float], frames_total: int) -> list[dict]:
    return [dict(name=n, checkpoint=str(spec) if spec else str(DEFAULT_CHECKPOINT),
                 params=sum(q.numel() for q in worlds[n].model.parameters()), variant=worlds[n].cfg.variant,
                 seconds=round(timing[n], 3), frames_per_second=round(frames_total / max(timing[n], 1e-9), 2))
            for n, spec in specs.items()]


def _write(out: Path, res: dict, sheet: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, allow_nan=False) + "\n")
    (out / "results.md").write_text(report.markdown(res))
    report.plot(out / "psnr.png", res)
    if "buckets" in res:
        freeplay.plot(out / "freeplay.png", res)
    if sheet:
        write_image(out / "rollouts.png", contact_sheet(sheet))


# -- worldmodel eval ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `worldmodel eval`."""
    parser.add_argument("--checkpoints", "--checkpoint", nargs="+", default=[None], metavar="[NAME=]CKPT",
                        help="checkpoint folders or preset names to compare, optionally named NAME=PATH "
                             f"(default: the shipped {DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--episodes", required=True, help="folder of evaluation episodes (.npz with "
                                                          "context_len)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default=None,
                        help="retrieval (render the way back), lookback (render the closing look-around), "
                             "reasoning, or freeplay (32 posed context frames, then the actions alone with "
                             "dead reckoning, scored per 50 frames; default: from the folder's "
                             "manifest.json kind: revisit -> retrieval, explore -> freeplay); "
                             "paper-retrieval (400 context frames, then their poses in reverse) and "
                             "paper-reasoning (576 context frames, then 224 new) are the paper's own, on "
                             "2,000-step explore episodes")
    parser.add_argument("--reverse-actions", choices=tuple(paper.REVERSE_ACTIONS),
                        default=paper.DEFAULT_REVERSE,
                        help="paper-retrieval: the actions of the reversed replay (there is no backward "
                             "key): " + "; ".join(f"{k}: {v}" for k, v in paper.REVERSE_ACTIONS_TEXT.items()))
    parser.add_argument("--context", type=int, default=None,
                        help="context frames for every episode (default: each episode's context_len; "
                             "lookback: its way back; freeplay: 32; paper-retrieval: 400, paper-reasoning: "
                             "576)")
    parser.add_argument("--horizon", type=int, default=None, help="at most this many generated frames per "
                                                                  "episode")
    parser.add_argument("--context-window", type=int, default=None,
                        help="give the models only the last N context frames (recall distances still count "
                             "from the whole context): how much the rest of the context, i.e. memory, is "
                             "worth")
    parser.add_argument("--limit", type=int, default=None, help="only the first K episodes (sorted by name)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"sampler steps per frame (default {DEFAULT_STEPS}, the app's)")
    parser.add_argument("--seed", type=int, default=0, help="episode i is sampled with World seed SEED+i")
    parser.add_argument("--commit-sigma", type=float, default=0.25,
                        help="noise level at which generated frames enter the state (World's commit_sigma); "
                             "higher hides more of the model's own frames from it")
    parser.add_argument("--fold-commit", action=argparse.BooleanOptionalAction,
                        default=DEFAULT_FOLD_COMMIT,
                        help="keep the state of the last denoising pass instead of running a commit pass: "
                        "one model pass per frame fewer, and --commit-sigma unused (default: on; "
                        "BENCHMARKS.md, 'Sampler steps', has what each does to quality)")
    parser.add_argument("--no-pose", action="store_true",
                        help="do not give pose-conditioned models the episodes' poses")
    parser.add_argument("--dead-reckon", action="store_true",
                        help="give pose-conditioned models the context's poses only; the generated frames' "
                             "poses are dead-reckoned from the actions in the episode's maze (as in the app)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lpips-weights", default=None,
                        help="AlexNet (torchvision) or full LPIPS state dict, .pth or .safetensors; LPIPS "
                             "is null without it")
    parser.add_argument("--recall-bins", type=int, default=8, help="buckets of the PSNR-vs-recall-distance "
                                                                   "curve")
    parser.add_argument("--videos", type=int, default=2, help="side-by-side videos of the first N episodes")
    parser.add_argument("--scale", type=int, default=4, help="video upscaling factor")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Entry point of `worldmodel eval`: writes results.json, results.md, psnr.png, rollouts.png
    (ground truth above each model, for the first --videos episodes) and videos/."""
    from tqdm import tqdm

    folder, out = Path(args.episodes), Path(args.out)
    if any(v is not None and v < 1 for v in (args.context, args.horizon, args.context_window)):
        raise ValueError("--context, --horizon and --context-window must be >= 1")
    protocol = _protocol(folder, args.protocol)
    if protocol == "paper-retrieval" and args.dead_reckon:
        raise ValueError("paper-retrieval replays the context's poses backwards, which no action can "
                         "dead-reckon: --dead-reckon is for paper-reasoning")
    if protocol == "freeplay":  # as the app plays: poses of the context only, then dead reckoning
        args = argparse.Namespace(**{**vars(args), "dead_reckon": True})
    files = _episode_files(folder, args.limit)
    lpips = LPIPS.from_file(args.lpips_weights) if args.lpips_weights else None
    specs = dict(_named_checkpoints(args.checkpoints))
    worlds = {name: load_world(spec, device=args.device, steps=args.steps, seed=args.seed)
              for name, spec in specs.items()}
    codec = next((w.codec for w in worlds.values() if w.codec is not None), None)
    plan = _plan(args, protocol, files)

    # "closest context view" needs poses; in paper-retrieval it is the ground truth itself
    closest = protocol != "paper-retrieval" and all(p["true_poses"] is not None for p in plan)
    references = {n: text for n, text in REFERENCES.items() if closest or n != "closest context view"}
    references |= {AE_REFERENCE: AE_REFERENCE_TEXT} if codec is not None else {}
    names = [*worlds, *references]

    episodes, timing, sheet = [], {n: 0.0 for n in worlds}, []
    bar = tqdm(total=sum(p["horizon"] for p in plan) * len(worlds), unit="frame", desc=f"eval {protocol}",
               disable=args.no_progress, dynamic_ncols=True)
    for i, p in enumerate(plan):
        frames = load_episode(p["path"], keys=("image",))["image"]
        if "order" in p:  # the episode as a paper protocol plays it (paper-retrieval: replayed backwards)
            frames = frames[p["order"]]
        truth = frames[p["context"]:p["context"] + p["horizon"]]
        preds = _predict(args, p, frames, worlds, timing, bar.update)
        preds.update(_reference_predictions(p, frames, truth, closest, codec))
        metrics = {n: frame_metrics(preds[n], truth, lpips) for n in names}
        extra = {}
        if protocol == "freeplay":
            for n in names:
                metrics[n]["sharpness"] = freeplay.sharpness(preds[n])
            extra["truth_sharpness"] = freeplay.sharpness(truth).tolist()
        episodes.append(dict(file=p["path"].name, seed=p["seed"], context=p["context"], horizon=p["horizon"],
                             recall_distance=p["distance"].tolist(),
                             metrics={n: {k: None if v is None else v.tolist() for k, v in m.items()}
                                      for n, m in metrics.items()}, **extra))
        if i < args.videos:
            sheet.append([truth, *(preds[n] for n in worlds)])
            write_video(out / "videos" / f"{p['path'].stem}.mp4", [truth, *(preds[n] for n in worlds)],
                        scale=args.scale, labels=["ground truth", *worlds])
    bar.close()

    device = next(iter(worlds.values())).device
    res = dict(
        protocol=protocol,
        models=_models(specs, worlds, timing, sum(p["horizon"] for p in plan)),
        references=references,
        settings=_settings(args, plan, protocol),
        device=dict(name=device_name(device), type=device.type, torch=torch.__version__,
                    threads=torch.get_num_threads()),
        **_summarise(episodes, plan, names, args.recall_bins),
        episodes=episodes,
    )
    if protocol == "freeplay":
        res["buckets"] = freeplay.buckets(episodes, names)
        res["verdict"] = {n: freeplay.verdict(res["buckets"], n) for n in worlds}
    _write(out, res, sheet)
    print(report.summary_line(res))
    videos = f", rollouts.png, {min(args.videos, len(plan))} video(s) in videos/" if args.videos > 0 else ""
    print(f"results in {out}/ (results.json, results.md, psnr.png{videos})")
    return 0
