"""Rollouts, metrics and videos: `worldmodel rollout` and `worldmodel eval`.

Everything here drives the one sampling loop of the project, `World` (worldmodel.world):
`rollout` seeds a world with real context frames and steps it through a list of actions.

Metrics, per generated frame against the ground-truth frame (both uint8, compared as floats in
[0, 1] with data_range 1):
- SSIM and PSNR from torchmetrics' functional API, one value per frame (reduction "none").
  The PSNR of two identical frames is infinite; it is capped at PSNR_CAP_DB = 100 dB (above
  the 89.0 dB of the smallest non-zero error two 64x64 uint8 frames can have), so that means,
  plots and JSON stay finite.
- LPIPS (v0.1, AlexNet backbone, Zhang et al. 2018) only when `--lpips-weights PATH` names
  the ImageNet AlexNet weights, which cannot be downloaded here (torchvision is not installed
  either). PATH is a state dict (torch `.pth` or `.safetensors`) holding either torchvision's
  AlexNet (`alexnet-owt-7be5be79.pth`: keys `features.0.weight` ...) or a full LPIPS module
  as the `lpips` package and torchmetrics name it (`net.slice1.0.weight` ...,
  `lin0.model.1.weight` ...). The five linear calibration layers come from the file when it
  has them, else from the LPIPS v0.1 weights bundled with torchmetrics. Without weights LPIPS
  is reported as absent (null), never computed with a random backbone.

`worldmodel eval` protocols (PAPER.md, Evaluation), chosen by `--protocol` or by the `kind` in
the episode folder's manifest.json (revisit -> retrieval, reasoning -> reasoning):
- retrieval: revisit episodes; the model sees the context (up to `context_len`) and renders
  the way back. Metrics over all generated frames and over the recall frames (views seen in
  the context), and PSNR against the recall distance (frames since the view was last seen in
  the context, worldmodel.data.trajectories.recall_distance), bucketed.
- lookback: revisit episodes; the model sees everything up to the closing look-around (back at
  the start cell, after the way back) and renders the look-around. Its views were last seen in
  the opening look-around, most of them out of sight since: the cleanest test of long memory.
- reasoning: the context is exploration, then the model renders new movement.
Two trivial references are scored on the same frames: the last context frame repeated, and
the mean of the context frames; with a latent model, also the true frames through its
autoencoder (the ceiling of any model in that latent space).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.env import LEFT, MAZE_SIZES
from .data.episodes import actions_to_index, episode_poses, load_episode
from .world import DEFAULT_CHECKPOINT, World, device_name, frames_from_model, frames_to_model, load_world

PSNR_CAP_DB = 100.0
REFERENCES = {
    "repeat last frame": "the last context frame, repeated",
    "mean frame": "the mean of the context frames, repeated",
    "closest context view": "the context frame whose pose is nearest (cells + half-turns): a perfect memory that copies",
}
AE_REFERENCE = "autoencoder reconstruction"  # scored only when a latent model is evaluated
AE_REFERENCE_TEXT = "the true frames encoded and decoded by the latent model's autoencoder: the best it can score"
PROTOCOLS = {"retrieval": "revisit", "lookback": "revisit", "reasoning": "reasoning"}  # protocol -> episode kind


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
        out[i] = world.step(int(action), poses[context + i] if poses is not None and context + i < len(poses) else None)
        if progress is not None:
            progress(1)
    return out


def rollout_episode(world: World, frames: np.ndarray, actions: np.ndarray, context: int, horizon: int,
                    progress: Callable[[int], object] | None = None, poses: np.ndarray | None = None,
                    window: int | None = None, layout: np.ndarray | None = None) -> np.ndarray:
    """Seed `world` with the first `context` frames (only the last `window` of them, if given: what
    a model that remembers that far could use), then replay the episode's next `horizon` actions
    (and poses, if given: (>= context, 4); frames past them are dead-reckoned in `layout`).
    Returns the generated frames (horizon, H, W, 3) uint8, aligned with frames[context:context + horizon]."""
    horizon = min(horizon, len(frames) - context)
    lo = 0 if window is None else max(0, context - window)
    return rollout(world, frames[lo:context], actions[lo:context], actions[context:context + horizon], progress,
                   None if poses is None else poses[lo:context + horizon], layout)



# -- videos ------------------------------------------------------------------------------------
def tile(rows: list[np.ndarray], scale: int = 4) -> np.ndarray:
    """Place equally long frame sequences side by side, upscaled nearest-neighbour: (T, H*s, W*s*len, 3)."""
    t = min(len(r) for r in rows)
    wide = np.concatenate([r[:t] for r in rows], axis=2)
    return wide.repeat(scale, axis=1).repeat(scale, axis=2)


def contact_sheet(episodes: list[list[np.ndarray]], columns: int = 12, scale: int = 2, gap: int = 4) -> np.ndarray:
    """One still image to look at: per episode one row per sequence (ground truth, then each model),
    `columns` evenly spaced frames across the horizon, a white gap between episodes. uint8 (H, W, 3)."""
    blocks = []
    for rows in episodes:
        t = min(len(r) for r in rows)
        pick = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
        block = np.concatenate([np.concatenate(list(r[pick]), axis=1) for r in rows], axis=0)
        blocks += [block, np.full((gap, block.shape[1], 3), 255, np.uint8)]
    sheet = np.concatenate(blocks[:-1], axis=0)
    return sheet.repeat(scale, axis=0).repeat(scale, axis=1)


def label_strip(labels: Sequence[str], width: int, height: int = 16) -> np.ndarray:
    """A black strip (height, width*len(labels), 3) uint8 with one white label per column."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=height - 4)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    columns = []
    for text in labels:
        img = Image.new("RGB", (width, height))
        ImageDraw.Draw(img).text((3, 1), text, fill=(255, 255, 255), font=font)
        columns.append(np.asarray(img))
    return np.concatenate(columns, axis=1)


def write_video(path: str | Path, rows: list[np.ndarray], fps: int = 8, scale: int = 4,
                labels: Sequence[str] | None = None) -> Path:
    """mp4 (or gif, by suffix) of sequences shown side by side, with an optional label row on top."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = tile(rows, scale)
    if labels is not None:
        if len(labels) != len(rows):
            raise ValueError(f"got {len(labels)} labels for {len(rows)} columns")
        strip = label_strip(labels, rows[0].shape[2] * scale, height=2 * max(6, 2 * scale))
        frames = np.concatenate([np.broadcast_to(strip, (len(frames), *strip.shape)), frames], axis=1)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path


# -- metrics -----------------------------------------------------------------------------------
def _unit(frames: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(dtype) / 255.0


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 with the AlexNet backbone, as the `lpips` package and torchmetrics compute it:
    inputs scaled to [-1, 1] and normalised, unit-normalised features at the five ReLUs, squared
    differences weighted by 1x1 linear layers, averaged over space and summed over layers.
    Build it with `LPIPS.from_file(path)`; see the module docstring for the accepted files."""

    CHANNELS = (64, 192, 384, 256, 256)
    TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs in torchvision's alexnet().features
    CONVS = (0, 3, 6, 8, 10)  # indices of its convolutions

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: str | Path) -> "LPIPS":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--lpips-weights {path}: no such file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                raw = load_file(str(path))
            else:
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable file: say which and why
            raise ValueError(f"--lpips-weights {path}: not a readable state dict ({type(e).__name__}: {e})") from e
        if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
            raw = raw["state_dict"]
        if not isinstance(raw, dict):
            raise ValueError(f"--lpips-weights {path}: expected a state dict, got {type(raw).__name__}")
        state = {}
        for key, value in raw.items():
            m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
            if m and int(m[1]) in cls.CONVS:
                state[f"features.{m[1]}.{m[2]}"] = value
            m = re.fullmatch(r"lin(\d)\.model\.\d\.weight", key)
            if m:
                state[f"lins.{m[1]}.weight"] = value
        backbone = [f"features.{i}.{p}" for i in cls.CONVS for p in ("weight", "bias")]
        missing = [k for k in backbone if k not in state]
        if missing:
            raise ValueError(f"--lpips-weights {path} holds no AlexNet backbone (missing {missing[:2]}...): expected "
                             "torchvision's alexnet state dict (features.0.weight, ...) or an LPIPS module's "
                             "(net.slice1.0.weight, ..., lin0.model.1.weight, ...)")
        if not any(k.startswith("lins.") for k in state):
            import torchmetrics

            bundled = Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"
            if not bundled.is_file():
                raise ValueError(f"--lpips-weights {path} has no linear layers (lin0.model.1.weight ...) and the "
                                 f"LPIPS v0.1 layers bundled with torchmetrics are missing ({bundled})")
            for key, value in torch.load(bundled, map_location="cpu", weights_only=True).items():
                state[f"lins.{key[3]}.weight"] = value
        model = cls()
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"--lpips-weights {path}: tensors do not fit LPIPS-AlexNet: {e}") from e
        missing = [k for k in model.state_dict() if k not in state and k not in ("shift", "scale")]
        if missing:
            raise ValueError(f"--lpips-weights {path}: missing {missing}")
        return model

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) in [0, 1] -> (N,) distances."""
        total = 0.0
        fa, fb = (((2 * x.float() - 1) - self.shift) / self.scale for x in (a, b))
        lin = iter(self.lins)
        for i, layer in enumerate(self.features):
            fa, fb = layer(fa), layer(fb)
            if i in self.TAPS:
                na = fa / torch.sqrt(1e-8 + (fa ** 2).sum(1, keepdim=True))
                nb = fb / torch.sqrt(1e-8 + (fb ** 2).sum(1, keepdim=True))
                total = total + next(lin)((na - nb) ** 2).mean((2, 3))
        return total.flatten()


def frame_metrics(pred: np.ndarray, target: np.ndarray, lpips: LPIPS | None = None,
                  chunk: int = 256) -> dict[str, np.ndarray | None]:
    """Per-frame SSIM, PSNR (dB, capped at PSNR_CAP_DB) and LPIPS (None without a model) of
    uint8 frames (T, H, W, 3) against ground truth of the same shape."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.dtype != np.uint8 or target.dtype != np.uint8 or pred.ndim != 4 \
            or pred.shape[-1] != 3:
        raise ValueError(f"expected two uint8 arrays of one shape (T, H, W, 3), got {pred.dtype} {pred.shape} "
                         f"and {target.dtype} {target.shape}")
    ssim, psnr, lp = [], [], []
    for i in range(0, len(pred), chunk):
        p, t = _unit(pred[i:i + chunk]), _unit(target[i:i + chunk])
        ssim.append(structural_similarity_index_measure(p, t, data_range=1.0, reduction="none"))
        psnr.append(peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(max=PSNR_CAP_DB))
        if lpips is not None:
            lp.append(lpips(p, t))
    def cat(values: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(values).double().numpy() if values else np.zeros(0)

    return {"ssim": cat(ssim), "psnr": cat(psnr), "lpips": cat(lp) if lpips is not None else None}


def reference_frames(context_frames: np.ndarray, horizon: int, poses: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The trivial predictions of REFERENCES for `horizon` frames after the context; "closest context
    view" only with `poses` ((len(context_frames) + horizon, 4) of (x, y, dx, dy))."""
    last = context_frames[-1]
    mean = context_frames.astype(np.float64).mean(0).round().astype(np.uint8)
    refs = {"repeat last frame": np.repeat(last[None], horizon, 0), "mean frame": np.repeat(mean[None], horizon, 0)}
    if poses is not None:
        context = len(context_frames)
        heading = np.arctan2(poses[:, 3], poses[:, 2])
        seen, wanted = poses[:context], poses[context:context + horizon]
        shift = np.linalg.norm(wanted[:, None, :2] - seen[None, :, :2], axis=-1)
        turn = np.abs(np.angle(np.exp(1j * (heading[context:context + horizon, None] - heading[None, :context]))))
        refs["closest context view"] = context_frames[np.argmin(shift + turn / np.pi, axis=1)]
    return refs


# -- action scripts ----------------------------------------------------------------------------
ACTION_KEYS = {".": 0, "N": 0, "W": 1, "A": 2, "D": 3, "WA": 4, "AW": 4, "WD": 5, "DW": 5}


def _action_token(token, where: str) -> int:
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and 0 <= int(token) <= 5:
        return int(token)
    key = str(token).strip().upper()
    if key in ACTION_KEYS:
        return ACTION_KEYS[key]
    if key.isdigit() and 0 <= int(key) <= 5:
        return int(key)
    raise ValueError(f"unknown action key {token!r} ({where}); use W=forward, A=left, D=right, WA/AW=forward+left, "
                     "WD/DW=forward+right, . or N=noop (or ids 0..5), optionally repeated as KEY*COUNT")


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


def env_context(maze: str, seed: int, look: int, actions: Sequence[int]):
    """Context from the real environment: the first frame of maze `seed` and `look - 1` left
    turns (a full circle is ~20), then `actions` played in the same env as ground truth.
    Returns (context frames, context actions, ground-truth frames, poses of all these frames, the
    maze's layout)."""
    from .data.env import MazeEnv

    with MazeEnv(maze, seed=seed) as env:
        obs = [env.reset()]
        for _ in range(look - 1):
            obs.append(env.step(LEFT))
        obs += [env.step(int(a)) for a in actions]
    frames = np.stack([o["image"] for o in obs])
    context_actions = np.array([0] + [LEFT] * (look - 1), dtype=np.int64)
    poses = episode_poses({k: np.stack([o[k] for o in obs]) for k in ("agent_pos", "agent_dir")})
    return frames[:look], context_actions, frames[look:], poses, obs[-1]["maze_layout"]


# -- worldmodel rollout ------------------------------------------------------------------------
def add_rollout_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `worldmodel rollout`."""
    parser.add_argument("--checkpoint", default=None,
                        help=f"checkpoint folder or preset name (default: the shipped {DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--episode", default=None,
                        help="episode .npz: context from its first frames; without an action script its own "
                             "actions are replayed")
    parser.add_argument("--context", type=int, default=None,
                        help="context frames (default: the episode's context_len, else 16; from the real "
                             "environment: 21, the first frame and a full circle of left turns)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="frames to generate (default: the rest of the episode, or the whole action script)")
    script = parser.add_mutually_exclusive_group()
    script.add_argument("--actions", default=None,
                        help='action script: W=forward A=left D=right WA/AW WD/DW .|N=noop, KEY*COUNT repeats, '
                             'e.g. "W*8 A*5 WD ."')
    script.add_argument("--actions-file", default=None, help="action script as a text or JSON file")
    parser.add_argument("--maze", default="9x9", choices=MAZE_SIZES, help="maze size for a context from the real environment")
    parser.add_argument("--seed", type=int, default=0, help="maze seed (real environment) and sampler seed")
    parser.add_argument("--side-by-side", action="store_true",
                        help="ground truth beside the model (an episode replay, or the real environment)")
    parser.add_argument("--out", default="rollout.mp4", help="video path (.mp4 or .gif)")
    parser.add_argument("--gif", action="store_true", help="also write a .gif beside the video")
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling factor")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="sampler steps per frame")
    parser.add_argument("--no-pose", action="store_true", help="do not give a pose-conditioned model the agent's "
                                                                "poses (known for an episode's or the environment's frames)")
    parser.add_argument("--dead-reckon", action="store_true",
                        help="give the model the context's poses only and dead-reckon the rest from the actions, as the "
                             "app does (an action script on an episode always is)")
    parser.add_argument("--device", default="auto")
    return parser


def run_rollout(args: argparse.Namespace) -> int:
    """Entry point of `worldmodel rollout`."""
    if args.actions is not None:
        script = parse_actions(args.actions)
    elif args.actions_file is not None:
        script = read_actions_file(args.actions_file)
    else:
        script = None
    if script is not None and args.horizon is not None:
        script = script[:args.horizon]
    if script is None and args.episode is None:
        raise ValueError("give --episode (replay its actions) or an action script (--actions / --actions-file)")
    if args.scale < 1 or (args.horizon is not None and args.horizon < 1):
        raise ValueError("--scale and --horizon must be >= 1")
    world = load_world(args.checkpoint, device=args.device, steps=args.steps, seed=args.seed)
    truth = poses = layout = None
    if args.episode is not None:
        ep = load_episode(args.episode)
        frames, actions, poses = ep["image"], actions_to_index(ep["action"]), episode_poses(ep)
        context = args.context if args.context is not None else int(ep.get("context_len", min(16, len(frames) - 1)))
        if not 1 <= context <= len(frames) - (script is None):
            raise ValueError(f"--context {context} does not fit {args.episode} ({len(frames)} frames)")
        context_frames, context_actions = frames[:context], actions[:context]
        if script is None:
            script = actions[context:context + (args.horizon or len(frames))].tolist()
            truth = frames[context:]
        # The episode's poses while it replays its own actions; a script of other actions gets the
        # context's poses, and the world dead-reckons the rest in the episode's maze.
        if poses is not None:
            poses = poses[:context + len(script)] if truth is not None else poses[:context]
        layout = ep["maze_layout"][context - 1] if "maze_layout" in ep else None
    else:
        look = args.context if args.context is not None else 21
        if look < 1:
            raise ValueError(f"--context must be >= 1, got {look}")
        context_frames, context_actions, truth, poses, layout = env_context(args.maze, args.seed, look, script)
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
    print(f"{len(generated)} frames after {len(context_frames)} context frames, {len(generated) / elapsed:.1f} "
          f"frames/s on {world.device}: {', '.join(map(str, paths))}")
    return 0


# -- worldmodel eval ---------------------------------------------------------------------------
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
            print(f"note: {folder} holds {kind} episodes; evaluating them with the {requested} protocol as asked")
        return requested
    for protocol, k in PROTOCOLS.items():
        if kind == k:
            return protocol
    raise ValueError(f"cannot infer the protocol of {folder} (manifest kind {kind!r}): pass --protocol "
                     f"{' or '.join(PROTOCOLS)}")


def closing_look_start(actions: np.ndarray) -> int:
    """Index of the first frame of a revisit episode's closing look-around (its trailing left turns)."""
    turns = np.flatnonzero(np.asarray(actions)[::-1] != LEFT)
    start = len(actions) - (turns[0] if len(turns) else len(actions))
    if start >= len(actions):
        raise ValueError("the episode does not end with a look-around (left turns)")
    return int(start)


def _context_len(path: Path) -> int:
    with np.load(path) as archive:
        if "context_len" not in archive.files:
            raise ValueError(f"{path} has no context_len: pass --context N")
        return int(archive["context_len"])


def _mean(x: np.ndarray | None) -> float | None:
    return None if x is None or len(x) == 0 else float(np.mean(x))


def _recall_buckets(distance: np.ndarray, pooled: dict, bins: int) -> list[dict]:
    seen = distance >= 0
    if not seen.any():
        return []
    edges = np.unique(np.linspace(distance[seen].min(), distance[seen].max() + 1, bins + 1).round().astype(int))
    buckets = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = seen & (distance >= lo) & (distance < hi)
        if mask.any():
            buckets.append({"from": int(lo), "to": int(hi), "frames": int(mask.sum()),
                            "psnr": {n: float(m["psnr"][mask].mean()) for n, m in pooled.items()},
                            "ssim": {n: float(m["ssim"][mask].mean()) for n, m in pooled.items()}})
    return buckets


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K" if n >= 1e3 else str(n)


def _markdown(res: dict) -> str:
    s = res["settings"]
    params = {m["name"]: _count(m["params"]) for m in res["models"]}
    context = (s["context"] if s["context"] is not None else "up to each closing look-around"
               if res["protocol"] == "lookback" else "from each episode (context_len)")
    lines = [f"# Memory Maze evaluation: spatial {res['protocol']}", "",
             f"{len(res['episodes'])} episode(s) from `{s['episodes']}`; context {context}, "
             f"horizon {s['horizon'] or 'the rest of the episode'}; {s['steps']} sampler steps, seed {s['seed']}, "
             f"device {res['device']['name']}.", ""]
    tables = [("all", "All generated frames"), ("recall", "Recall frames (views seen in the context)")]
    for key, title in tables:
        section = res["summary"][key]
        frames = next(iter(section.values()))["frames"]
        if not frames:
            continue
        lines += [f"## {title}: {frames} frames", "", "| Model | Params | SSIM ↑ | LPIPS ↓ | PSNR (dB) ↑ |",
                  "|---|---|---|---|---|"]
        for name, m in section.items():
            label = name if name in params else f"*{name}* (reference)"
            lines.append(f"| {label} | {params.get(name, '-')} | {_fmt(m['ssim'], 3)} | {_fmt(m['lpips'], 3)} "
                         f"| {_fmt(m['psnr'], 2)} |")
        lines.append("")
    if res["recall_buckets"]:
        names = list(res["summary"]["all"])
        lines += ["## PSNR (dB) by recall distance (frames since the view was last seen in the context)", "",
                  "| Distance | Frames | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for b in res["recall_buckets"]:
            lines.append(f"| {b['from']}-{b['to'] - 1} | {b['frames']} | "
                         + " | ".join(_fmt(b["psnr"][n], 2) for n in names) + " |")
        lines.append("")
    if s["lpips_weights"] is None:
        lines.append("LPIPS n/a: no `--lpips-weights` given (the AlexNet backbone cannot be downloaded here).")
    lines.append(f"PSNR of identical frames is capped at {PSNR_CAP_DB:g} dB.")
    return "\n".join(lines) + "\n"


def _plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    models = {m["name"] for m in res["models"]}
    for name, curve in res["psnr_by_frame"].items():
        style = "-" if name in models else "--"
        ax1.plot(np.arange(1, len(curve) + 1), curve, style, label=name, linewidth=1.2)
    ax1.set(xlabel="frames after the context", ylabel="PSNR (dB), mean over episodes",
            title=f"{res['protocol']}: PSNR per generated frame")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    buckets = res["recall_buckets"]
    if buckets:
        centers = [(b["from"] + b["to"] - 1) / 2 for b in buckets]
        for name in res["psnr_by_frame"]:
            style = "-o" if name in models else "--s"
            ax2.plot(centers, [b["psnr"][name] for b in buckets], style, label=name, markersize=4, linewidth=1.2)
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no generated frame shows a view\nseen in the context", ha="center", va="center",
                 transform=ax2.transAxes)
    ax2.set(xlabel="recall distance (frames since the view was last seen)", ylabel="PSNR (dB)",
            title="PSNR vs recall distance (bucketed)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `worldmodel eval`."""
    parser.add_argument("--checkpoints", "--checkpoint", nargs="+", default=[None], metavar="[NAME=]CKPT",
                        help="checkpoint folders or preset names to compare, optionally named NAME=PATH "
                             f"(default: the shipped {DEFAULT_CHECKPOINT.name})")
    parser.add_argument("--episodes", required=True, help="folder of evaluation episodes (.npz with context_len)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default=None,
                        help="retrieval (render the way back), lookback (render the closing look-around) or "
                             "reasoning (default: from the folder's manifest.json kind; revisit -> retrieval)")
    parser.add_argument("--context", type=int, default=None, help="context frames for every episode (default: each "
                                                                   "episode's context_len; lookback: its way back)")
    parser.add_argument("--horizon", type=int, default=None, help="at most this many generated frames per episode")
    parser.add_argument("--context-window", type=int, default=None,
                        help="give the models only the last N context frames (recall distances still count from "
                             "the whole context): how much the rest of the context, i.e. memory, is worth")
    parser.add_argument("--limit", type=int, default=None, help="only the first K episodes (sorted by name)")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps per frame")
    parser.add_argument("--seed", type=int, default=0, help="episode i is sampled with World seed SEED+i")
    parser.add_argument("--commit-sigma", type=float, default=0.25,
                        help="noise level at which generated frames enter the state (World's commit_sigma); higher "
                             "hides more of the model's own frames from it")
    parser.add_argument("--no-pose", action="store_true", help="do not give pose-conditioned models the episodes' "
                                                                "poses")
    parser.add_argument("--dead-reckon", action="store_true",
                        help="give pose-conditioned models the context's poses only; the generated frames' poses are "
                             "dead-reckoned from the actions in the episode's maze (as in the app)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lpips-weights", default=None,
                        help="AlexNet (torchvision) or full LPIPS state dict, .pth or .safetensors; LPIPS is null "
                             "without it")
    parser.add_argument("--recall-bins", type=int, default=8, help="buckets of the PSNR-vs-recall-distance curve")
    parser.add_argument("--videos", type=int, default=2, help="side-by-side videos of the first N episodes")
    parser.add_argument("--scale", type=int, default=4, help="video upscaling factor")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Entry point of `worldmodel eval`: writes results.json, results.md, psnr.png, rollouts.png
    (ground truth above each model, for the first --videos episodes) and videos/."""
    from tqdm import tqdm

    from .data.trajectories import recall_distance

    folder, out = Path(args.episodes), Path(args.out)
    if any(v is not None and v < 1 for v in (args.context, args.horizon, args.context_window)):
        raise ValueError("--context, --horizon and --context-window must be >= 1")
    protocol = _protocol(folder, args.protocol)
    files = _episode_files(folder, args.limit)
    lpips = LPIPS.from_file(args.lpips_weights) if args.lpips_weights else None
    specs = dict(_named_checkpoints(args.checkpoints))
    worlds = {name: load_world(spec, device=args.device, steps=args.steps, seed=args.seed)
              for name, spec in specs.items()}
    codec = next((w.codec for w in worlds.values() if w.codec is not None), None)

    # Episodes: what to condition on and which frames to score (read once up front, frames later).
    plan = []
    for i, path in enumerate(files):
        ep = load_episode(path, keys=("agent_pos", "agent_dir", "action", *(("maze_layout",) if args.dead_reckon else ())))
        t1 = len(ep["action"])
        actions = actions_to_index(ep["action"])
        context = (args.context if args.context is not None else closing_look_start(actions) if protocol == "lookback"
                   else _context_len(path))
        if not 1 <= context < t1:
            raise ValueError(f"{path}: context {context} leaves no frame to generate ({t1} frames)")
        horizon = min(args.horizon or t1, t1 - context)
        distance = recall_distance(ep["agent_pos"], ep["agent_dir"], context)[:horizon]
        plan.append(dict(path=path, seed=args.seed + i, context=context, horizon=horizon, distance=distance,
                         actions=actions, true_poses=episode_poses(ep),
                         layout=ep["maze_layout"][context - 1] if args.dead_reckon else None))

    poses_known = all(p["true_poses"] is not None for p in plan)  # else no "closest context view"
    references = {n: text for n, text in REFERENCES.items() if poses_known or n != "closest context view"}
    references |= {AE_REFERENCE: AE_REFERENCE_TEXT} if codec is not None else {}
    names = [*worlds, *references]

    episodes, timing, sheet = [], {n: 0.0 for n in worlds}, []
    bar = tqdm(total=sum(p["horizon"] for p in plan) * len(worlds), unit="frame", desc=f"eval {protocol}",
               disable=args.no_progress, dynamic_ncols=True)
    for i, p in enumerate(plan):
        frames = load_episode(p["path"], keys=("image",))["image"]
        actions, context, horizon = p["actions"], p["context"], p["horizon"]
        poses = None if args.no_pose else p["true_poses"]
        if args.dead_reckon and poses is not None:
            poses = poses[:context]
        truth = frames[context:context + horizon]
        preds = {}
        for name, base in worlds.items():
            world = World(base.model, steps=args.steps, device=base.device, seed=p["seed"], codec=base.codec,
                          commit_sigma=args.commit_sigma)
            t0 = time.perf_counter()
            preds[name] = rollout_episode(world, frames, actions, context, horizon, progress=bar.update, poses=poses,
                                          window=args.context_window, layout=p["layout"])
            timing[name] += time.perf_counter() - t0
        preds.update(reference_frames(frames[:context], horizon, p["true_poses"] if poses_known else None))
        if codec is not None:
            x = frames_to_model(torch.from_numpy(truth).to(codec.device))
            preds[AE_REFERENCE] = frames_from_model(codec.decode(codec.encode(x))).cpu().numpy()
        metrics = {n: frame_metrics(preds[n], truth, lpips) for n in names}
        episodes.append(dict(file=p["path"].name, seed=p["seed"], context=context, horizon=horizon,
                             recall_distance=p["distance"].tolist(),
                             metrics={n: {k: None if v is None else v.tolist() for k, v in m.items()}
                                      for n, m in metrics.items()}))
        if i < args.videos:
            sheet.append([truth, *(preds[n] for n in worlds)])
            write_video(out / "videos" / f"{p['path'].stem}.mp4", [truth, *(preds[n] for n in worlds)],
                        scale=args.scale, labels=["ground truth", *worlds])
    bar.close()

    # Aggregates: frame-weighted over all episodes.
    pooled = {n: {k: None if episodes[0]["metrics"][n][k] is None else
                  np.concatenate([e["metrics"][n][k] for e in episodes]) for k in ("ssim", "psnr", "lpips")}
              for n in names}
    distance = np.concatenate([p["distance"] for p in plan])
    recall = distance >= 0
    summary = {section: {n: {"ssim": _mean(m["ssim"][mask]), "psnr": _mean(m["psnr"][mask]),
                             "lpips": None if m["lpips"] is None else _mean(m["lpips"][mask]),
                             "frames": int(mask.sum())} for n, m in pooled.items()}
               for section, mask in (("all", np.ones_like(recall)), ("recall", recall))}
    longest = max(p["horizon"] for p in plan)
    psnr_by_frame = {}
    for n in names:
        grid = np.full((len(episodes), longest), np.nan)
        for row, e in zip(grid, episodes):
            row[:e["horizon"]] = e["metrics"][n]["psnr"]
        psnr_by_frame[n] = np.nanmean(grid, axis=0).tolist()
    device = next(iter(worlds.values())).device
    frames_total = sum(p["horizon"] for p in plan)
    res = dict(
        protocol=protocol,
        models=[dict(name=n, checkpoint=str(spec) if spec else str(DEFAULT_CHECKPOINT),
                     params=sum(q.numel() for q in worlds[n].model.parameters()), variant=worlds[n].cfg.variant,
                     seconds=round(timing[n], 3), frames_per_second=round(frames_total / max(timing[n], 1e-9), 2))
                for n, spec in specs.items()],
        references=references,
        settings=dict(episodes=str(folder), context=args.context, context_window=args.context_window,
                      horizon=args.horizon, limit=args.limit, steps=args.steps, seed=args.seed,
                      poses="none" if args.no_pose else "context, then dead-reckoned" if args.dead_reckon else "all",
                      commit_sigma=args.commit_sigma, episode_seeds=[p["seed"] for p in plan],
                      lpips_weights=args.lpips_weights, psnr_cap_db=PSNR_CAP_DB, data_range=1.0,
                      recall_bins=args.recall_bins, metrics="torchmetrics SSIM/PSNR per frame on [0, 1] floats"),
        device=dict(name=device_name(device), type=device.type, torch=torch.__version__,
                    threads=torch.get_num_threads()),
        summary=summary,
        recall_buckets=_recall_buckets(distance, pooled, args.recall_bins),
        psnr_by_frame=psnr_by_frame,
        episodes=episodes,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, allow_nan=False) + "\n")
    (out / "results.md").write_text(_markdown(res))
    _plot(out / "psnr.png", res)
    if sheet:
        import imageio.v3 as iio

        iio.imwrite(out / "rollouts.png", contact_sheet(sheet))
    best = summary["all"]
    print(" | ".join(f"{n}: SSIM {_fmt(m['ssim'], 3)} PSNR {_fmt(m['psnr'], 2)} dB" for n, m in best.items()))
    print(f"results in {out}/ (results.json, results.md, psnr.png"
          + (f", rollouts.png, {min(args.videos, len(plan))} video(s) in videos/)" if args.videos > 0 else ")"))
    return 0
