"""`worldmodel train`: one training loop for CPU, one GPU and many (Hugging Face accelerate).

Batches and noise are drawn from generators seeded by (seed, step, micro-step, rank), never
from a running RNG, so `--resume` continues exactly where a run stopped. Checkpoints are written
to a temporary folder and renamed into place, so an interruption never leaves a half-written one
(a folder is complete once its trainer_state.json exists, written last; `--resume` takes the newest
complete one, and says so when there is none and the run starts over). metrics.jsonl keeps only
the lines up to the step a run starts from, so resumed runs never repeat a step.

Run folder layout:
    metrics.jsonl            one line per logged step (loss, lr, clip_len, it/s, val_loss ...)
    checkpoint/model/        raw weights   (config.json + safetensors, diffusers format)
    checkpoint/ema/          EMA weights   (what `load_world` should be given)
    checkpoint/*.pt          optimizer, scheduler and EMA state (tensors only: weights_only loads)
    checkpoint/trainer_state.json
    samples/step_XXXXXX.mp4  ground truth | generated, every --sample-every steps
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .config import DEFAULT_STEPS, PRESETS, VARIANTS, ModelConfig, TrainConfig, get_preset
from .diffusion import FlowMatching
from .model import WorldModel
from .vae import FrameCodec, check_codec, resolve_precision
from .world import frames_to_model, load_codec


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2**62))


def make_batch(dataset, batch_size: int, seed: int, step: int, micro: int, rank: int, device):
    """A deterministic batch: clip indices drawn from (seed, step, micro, rank). Returns model
    inputs (B, T, H, W, C), actions (B, T) and poses (B, T, 4) (x, y, dx, dy; None if the data has none)."""
    rng = np.random.default_rng([seed, step, micro, rank])
    items = [dataset[int(i)] for i in rng.integers(len(dataset), size=batch_size)]
    frames = torch.stack([it["frames"] for it in items]).to(device)
    actions = torch.stack([it["actions"] for it in items]).to(device)
    # pixels, or cached latents
    x = frames_to_model(frames) if frames.dtype == torch.uint8 else frames.float()
    pose = None
    if "agent_pos" in items[0]:
        pose = torch.stack([torch.cat([it["agent_pos"], it["agent_dir"]], dim=-1) for it in items]).to(device)
    return x, actions, pose


def _clip_dataset(root, clip_len: int, seed: int, codec: FrameCodec | None = None):
    from .data.dataset import ClipDataset

    dataset = ClipDataset(root, clip_len, seed=seed, samples_per_epoch=10**9, skip_corrupt=True)
    if codec is not None:
        episodes = list(zip(dataset.files, dataset.episodes))
        for path, ep in tqdm(episodes, desc=f"latents of {root}", leave=False):
            ep["frames"] = cached_latents(path, ep["frames"], codec)
    return dataset


def cached_latents(path: Path, frames: np.ndarray, codec: FrameCodec) -> np.ndarray:
    """An episode's latents (T, h, w, c) float16, encoded once per autoencoder and cached beside
    the episode in latents/<hash of the autoencoder's weights>/: a latent model then trains as
    fast as it would on pre-encoded data, and another autoencoder never reads stale latents."""
    path = Path(path).resolve()  # episodes linked into another folder share one cache
    cache = path.parent / "latents" / codec.fingerprint / (path.stem + ".npy")
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if z.shape == (len(frames), *codec.latent_shape):
            return z
    # bf16 on a GPU; float32 on a CPU, where bf16 convolutions run ~8x slower (BENCHMARKS.md)
    with torch.autocast(codec.device.type, dtype=torch.bfloat16, enabled=codec.device.type == "cuda"):
        z = torch.cat([codec.encode(frames_to_model(torch.from_numpy(frames[i:i + 32]).to(codec.device)))
                       for i in range(0, len(frames), 32)]).cpu().numpy().astype(np.float16)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")  # processes of one launch may write it at once
    np.save(tmp, z)
    tmp.rename(cache)
    return z


CHECKPOINT_DIRS = ("checkpoint", "checkpoint.tmp", "checkpoint.old")  # the swap's three folders


def _checkpoint_step(folder: Path) -> int | None:
    """The step of a complete checkpoint folder (its trainer_state.json, written last), else None."""
    try:
        return int(json.loads((folder / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _settle(out: Path) -> None:
    """After an interrupted swap: the newest complete folder becomes `checkpoint`, so that the next
    write, which first clears checkpoint.tmp and checkpoint.old, never deletes the only one."""
    best = _find_checkpoint(out)
    final = out / "checkpoint"
    if best is not None and best != final:
        shutil.rmtree(final, ignore_errors=True)
        best.rename(final)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_checkpoint(out: Path, model, ema, optimizer, scheduler, state: dict,
                       codec: FrameCodec | None = None) -> None:
    final, tmp, old = (out / name for name in CHECKPOINT_DIRS)
    _settle(out)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "model")
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    model.save_pretrained(tmp / "ema")
    ema.restore(model.parameters())
    if codec is not None:  # a latent model's checkpoint carries its autoencoder (what load_world reads)
        codec.vae.save_pretrained(tmp / "ema" / "vae")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(ema.state_dict(), tmp / "ema_state.pt")
    _write_text_atomic(tmp / "trainer_state.json", json.dumps(state, indent=2))  # last: "complete"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def warm_start(model: WorldModel, source: str | Path) -> list[str]:
    """Initialise from another checkpoint's weights (fine-tuning). A tensor that grew (e.g. the patch
    embedding when inputs were added) gets the old values in its leading slice and zeros elsewhere,
    so the added inputs change nothing until training moves them. Returns the grown names."""
    src = WorldModel.from_pretrained(str(source)).state_dict()
    grown, own = [], model.state_dict()
    for name, t in own.items():
        if name not in src and name.startswith("pose_embed."):
            continue  # pose conditioning added: its zero output layer leaves the model unchanged
        if name not in src:
            raise ValueError(f"{source} has no tensor {name}: not a warm start for this architecture")
        old = src[name]
        if old.shape != t.shape:
            if old.dim() != t.dim() or any(o > n for o, n in zip(old.shape, t.shape)):
                raise ValueError(f"{name}: {tuple(old.shape)} in {source} cannot initialise {tuple(t.shape)}")
            t.zero_()
            t[tuple(slice(0, o) for o in old.shape)] = old
            grown.append(name)
        else:
            t.copy_(old)
    return grown


def _find_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run: `checkpoint`, or after a crash during the
    swap, checkpoint.tmp (written completely) or checkpoint.old (not yet deleted)."""
    steps = {out / name: _checkpoint_step(out / name) for name in CHECKPOINT_DIRS}
    complete = [(step, -i, folder) for i, (folder, step) in enumerate(steps.items()) if step is not None]
    return max(complete)[2] if complete else None


def trim_metrics(path: Path, step: int) -> int:
    """Keep the lines of metrics.jsonl up to `step` (where a run starts), so that a resumed or
    restarted run does not log a step twice; a line cut by a kill goes too. Returns lines dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass
    if len(kept) < len(lines):
        _write_text_atomic(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


@torch.no_grad()
def validation_loss(model, flow: FlowMatching, dataset, batches: int, batch_size: int, device,
                    autocast) -> float:
    """Loss on fixed clips with fixed noise: comparable from one evaluation to the next."""
    model.eval()
    total = 0.0
    for i in range(batches):
        x, a, pose = make_batch(dataset, batch_size, 12345, i, 0, 0, device)
        gen = torch.Generator(device).manual_seed(i)
        with autocast():
            total += flow.loss(model, x, a, generator=gen, pose=pose if model.cfg.pose_cond else None).item()
    model.train()
    return total / batches


def save_sample(path: Path, model, episode_dir, context: int = 16, horizon: int = 16,
                steps: int = DEFAULT_STEPS, codec=None) -> None:
    from .data.episodes import actions_to_index, load_episode
    from .eval.media import write_video
    from .eval.rollout import rollout_episode
    from .world import World

    files = sorted(Path(episode_dir).glob("*.npz"))
    if not files:
        return
    ep = load_episode(files[0], keys=("image", "action"))
    world = World(model, steps=steps, device=next(model.parameters()).device, codec=codec)
    gen = rollout_episode(world, ep["image"], actions_to_index(ep["action"]), context, horizon)
    write_video(path, [ep["image"][context:context + horizon], gen], fps=8)


# Flags that override the preset's TrainConfig field of the same name.
TRAIN_FLAGS = ("batch_size", "max_steps", "lr", "clip_len", "grad_accum", "val_every", "ckpt_every",
               "sample_every", "gap_prob", "gap_max", "prefix_prob", "prefix_min", "warmup_steps")
LOG_EVERY = 10  # steps between lines of metrics.jsonl


def configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The preset's model and training configs with the command line's overrides."""
    preset = get_preset(args.preset)
    m, t = preset.model, preset.train
    mcfg = dataclasses.replace(m, variant=args.variant or m.variant,
                               pose_cond=m.pose_cond or args.pose or args.pose_memory,
                               pose_memory=m.pose_memory or args.pose_memory)
    given = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    tcfg = dataclasses.replace(t, **given)
    if args.clip_len is not None:  # longer curriculum stages are dropped
        tcfg.curriculum = [c for c in tcfg.curriculum if c[1] <= args.clip_len]
    return mcfg, tcfg


class Trainer:
    """One training run: `Trainer(args).fit()` trains from the run folder's state to its end."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.mcfg, self.tcfg = configs(args)
        # the autoencoder: a checkpoint folder's (vae/ or vae.json), or an autoencoder folder itself
        self.codec = (load_codec(args.vae) or FrameCodec.from_pretrained(args.vae)) if args.vae else None
        check_codec(self.mcfg, self.codec, f"preset {args.preset}")
        # cpu=True without CUDA: else two CPU processes under `accelerate launch` never join one group.
        self.accelerator = acc = Accelerator(
            mixed_precision=resolve_precision(args.precision),
            gradient_accumulation_steps=self.tcfg.grad_accum,
            cpu=not torch.cuda.is_available(), project_dir=args.out,
            log_with="tensorboard" if importlib.util.find_spec("tensorboard") else None)
        if acc.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # share the cores between processes instead of oversubscribing them (OMP_NUM_THREADS wins)
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // acc.num_processes))
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.main = acc.is_main_process
        if self.codec is not None:
            self.codec.to(acc.device)
        self.step = self._build()
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.raw = acc.unwrap_model(self.model)
        self.ema.to(acc.device)
        if acc.trackers:
            acc.init_trackers("worldmodel")
        t = self.tcfg
        self.flow = FlowMatching(prefix_prob=t.prefix_prob, prefix_min=t.prefix_min,
                                 self_prev_prob=t.self_prev_prob, pose_drop=t.pose_drop,
                                 frame_range=None if self.codec is not None else 1.0,
                                 gap_prob=t.gap_prob, gap_max=t.gap_max)
        self.val_set = None
        if args.val_data:
            self.val_set = _clip_dataset(args.val_data, t.clip_len, seed=1, codec=self.codec)
        self.dataset, self.clip_len = None, None  # built for the step's clip length, in the loop
        if self.main:
            self._describe()

    def _build(self) -> int:
        """Model, optimizer, schedule and EMA: fresh, warm-started or resumed; returns the step."""
        args, tcfg = self.args, self.tcfg
        torch.manual_seed(args.seed)  # the initial weights: a run is a function of its seed
        self.model = model = WorldModel(self.mcfg.to_dict())
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.99),
                                           weight_decay=tcfg.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, tcfg.warmup_steps, tcfg.max_steps)
        ckpt = _find_checkpoint(self.out)
        if self.main and ckpt is None and args.resume:
            partial = [n for n in CHECKPOINT_DIRS if (self.out / n).exists()]
            print(f"--resume: {self.out} holds no complete checkpoint"
                  + (f" ({', '.join(partial)}: a write that was interrupted)" if partial else "")
                  + ": starting over at step 0")
        elif self.main and ckpt is not None and not args.resume:
            print(f"note: {ckpt} (step {_checkpoint_step(ckpt)}) is replaced at this run's first "
                  "checkpoint: it starts at step 0 (--resume continues it)")
        ckpt = ckpt if args.resume else None
        if args.init_from and ckpt is None:
            grown = warm_start(model, args.init_from)
            if self.main:
                print(f"initialised from {args.init_from}"
                      + (f" (grown: {', '.join(grown)})" if grown else ""))
        # after any warm start
        self.ema = EMAModel(model.parameters(), decay=tcfg.ema_decay, use_ema_warmup=True, power=3 / 4)
        if ckpt is None:
            return 0
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if state["model_config"] != self.mcfg.to_dict():
            raise ValueError(f"{ckpt} was trained with another model config; "
                             "use a new --out or the same preset")
        model.load_state_dict(WorldModel.from_pretrained(ckpt / "model").state_dict())
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        self.ema.load_state_dict(torch.load(ckpt / "ema_state.pt", weights_only=True))
        if self.main:
            print(f"resumed from {ckpt} at step {state['step']}")
        return state["step"]

    def _describe(self) -> None:
        args, mcfg, tcfg, acc = self.args, self.mcfg, self.tcfg, self.accelerator
        n_params = sum(p.numel() for p in self.raw.parameters())
        print(f"{args.preset}/{mcfg.variant}: {n_params / 1e6:.2f}M params, {acc.num_processes} "
              f"process(es) on {acc.device}, precision {acc.mixed_precision}, batch {tcfg.batch_size} x "
              f"{tcfg.grad_accum} accum x {acc.num_processes} procs")
        (self.out / "run_config.json").write_text(json.dumps(
            {"preset": args.preset, "model_config": mcfg.to_dict(), "train_config": tcfg.__dict__,
             "args": vars(args), "params": n_params, "processes": acc.num_processes,
             "device": str(acc.device)},
            indent=2, default=str))

    def checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.main:
            state = {"step": self.step, "preset": self.args.preset, "model_config": self.mcfg.to_dict(),
                     "wall_seconds": time.time() - self.t_start, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
            _atomic_checkpoint(self.out, self.raw, self.ema, self.optimizer, self.scheduler, state,
                               self.codec)

    def train_step(self) -> tuple[float, float]:
        """One optimizer step (grad_accum micro-steps) on the step's batches; returns loss and grad norm."""
        acc, tcfg, seed, step = self.accelerator, self.tcfg, self.args.seed, self.step
        if tcfg.clip_len_at(step) != self.clip_len:
            self.clip_len = tcfg.clip_len_at(step)
            self.dataset = _clip_dataset(self.args.data, self.clip_len, seed=seed, codec=self.codec)
        self.model.train()
        for micro in range(tcfg.grad_accum):
            rank = acc.process_index
            x, a, pose = make_batch(self.dataset, tcfg.batch_size, seed, step, micro, rank, acc.device)
            gen = torch.Generator(acc.device).manual_seed(_seed(seed, step, micro, acc.process_index))
            with acc.accumulate(self.model), acc.autocast():
                pose = pose if self.mcfg.pose_cond else None
                loss = self.flow.loss(self.model, x, a, generator=gen, pose=pose)
                acc.backward(loss)
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), tcfg.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.ema.step(self.raw.parameters())
        self.step += 1
        return acc.reduce(loss.detach(), reduction="mean").item(), float(grad_norm)

    def record(self, loss: float, grad_norm: float) -> None:
        """The step's line of metrics.jsonl, with the EMA model's validation loss when it is due."""
        step, tcfg, raw = self.step, self.tcfg, self.raw
        record = None
        if step % LOG_EVERY == 0 or step == tcfg.max_steps:
            now = time.time()
            record = {"step": step, "loss": loss, "grad_norm": grad_norm,
                      "lr": self.scheduler.get_last_lr()[0],
                      "clip_len": self.clip_len, "it_s": (step - self.last_log) / (now - self.last_t),
                      "elapsed_s": now - self.t_start}
            self.last_log, self.last_t = step, now
        if self.val_set is not None and (step % tcfg.val_every == 0 or step == tcfg.max_steps):
            self.ema.store(raw.parameters())
            self.ema.copy_to(raw.parameters())
            val = validation_loss(raw, self.flow, self.val_set, self.args.val_batches, tcfg.batch_size,
                                  self.accelerator.device, self.accelerator.autocast)
            self.ema.restore(raw.parameters())
            record = (record or {"step": step}) | {"val_loss": val}
            self.bar.write(f"step {step}: val loss (EMA) {val:.4f}")
        if record and self.main:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
            self.accelerator.log(record, step=step)

    def fit(self) -> Path:
        args, tcfg, main = self.args, self.tcfg, self.main
        self.t_start = self.last_t = time.time()
        deadline = time.time() + args.max_minutes * 60 if args.max_minutes else math.inf
        self.bar = tqdm(total=tcfg.max_steps, initial=self.step, disable=not main, dynamic_ncols=True,
                        desc="train")
        if main and trim_metrics(self.out / "metrics.jsonl", self.step):
            self.bar.write(f"metrics.jsonl: lines after step {self.step} dropped (this run logs them again)")
        self.metrics = open(self.out / "metrics.jsonl", "a") if main else None
        self.last_log = self.step
        if args.stop_at is not None and self.step >= args.stop_at and main:  # a finished stage stays finished
            self.bar.write(f"step {self.step} already reaches --stop-at {args.stop_at}: nothing to do")
        while self.step < tcfg.max_steps and (args.stop_at is None or self.step < args.stop_at):
            loss, grad_norm = self.train_step()
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", clip=self.clip_len)
            self.record(loss, grad_norm)
            step = self.step
            stop = time.time() > deadline or step == args.stop_at
            if step % tcfg.ckpt_every == 0 or step == tcfg.max_steps or stop:
                self.checkpoint()
            if main and args.val_data and tcfg.sample_every and step % tcfg.sample_every == 0:
                sample_model = copy.deepcopy(self.raw)
                self.ema.copy_to(sample_model.parameters())
                path = self.out / "samples" / f"step_{step:06d}.mp4"
                save_sample(path, sample_model, args.val_data, codec=self.codec)
            if stop:
                if main:
                    why = (f"--stop-at {args.stop_at}" if step == args.stop_at
                           else f"--max-minutes {args.max_minutes}")
                    self.bar.write(f"stopping at step {step}: {why} reached "
                                   "(checkpoint saved; --resume continues)")
                break
        self.bar.close()
        if self.metrics:
            self.metrics.close()
        self.accelerator.end_training()
        return self.out / "checkpoint"


def train(args: argparse.Namespace) -> Path:
    """Train as the command line says; returns the run's checkpoint folder."""
    return Trainer(args).fit()


# ModelConfig fields that are settings of play, not of the weights: export may set them
PLAY_SETTINGS = ("recall_blend", "memory_headings", "memory_resolution")


def export(run: str | Path, dest: str | Path, **settings) -> Path:
    """Copy a run's EMA weights into a shippable checkpoint folder (config.json + safetensors).
    `settings` (PLAY_SETTINGS: None = as trained) set those ModelConfig fields in the copy: the pose
    memory has no parameters, so its lattice and how much a frame takes of its read change no weight
    (the shipped model's values were chosen on the eval protocols, BENCHMARKS.md)."""
    ckpt = _find_checkpoint(Path(run))
    if ckpt is None:
        raise ValueError(f"{run} holds no checkpoint")
    unknown = set(settings) - set(PLAY_SETTINGS)
    if unknown:
        raise ValueError(f"export sets only {', '.join(PLAY_SETTINGS)}, not {', '.join(sorted(unknown))}")
    given = {k: v for k, v in settings.items() if v is not None}
    config = None
    if given:  # checked before anything is written
        config = json.loads((ckpt / "ema" / "config.json").read_text())
        config["config"] = ModelConfig.from_dict(config["config"] | given).to_dict()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in (ckpt / "ema").iterdir():
        if f.is_dir():  # vae/
            shutil.copytree(f, dest / f.name, dirs_exist_ok=True)
        else:
            shutil.copy2(f, dest / f.name)
    shutil.copy2(ckpt / "trainer_state.json", dest / "trainer_state.json")
    if config is not None:
        (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dest


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    arg = p.add_argument
    arg("--preset", default="cpu", help=f"model + recipe preset: {', '.join(PRESETS)} (default: cpu)")
    arg("--variant", choices=VARIANTS, help="override the preset's architecture (baselines)")
    arg("--data", required=True, help="folder of training episodes (.npz)")
    arg("--val-data", help="folder of held-out episodes for validation loss and sample videos")
    arg("--out", required=True, help="run folder (checkpoints, metrics.jsonl, samples)")
    arg("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    arg("--init-from", help="start from this checkpoint folder's weights (fine-tuning; a fresh optimizer and "
                            "schedule); ignored when --resume finds a checkpoint")
    arg("--pose", action="store_true", help="condition on the agent's pose as well as the action (the "
                                            "paper's Memory Maze setup; dropped in a pose_drop of the clips)")
    arg("--pose-memory", action="store_true", help="add the pose-keyed memory (implies --pose): a map from "
                                                   "pose to the frames seen there, read when a pose recurs")
    arg("--gap-prob", type=float, help="fraction of clean-prefix clips with a memory gap: up to --gap-max "
                                       "frames after the prefix heavily noised, so later ones are recalled")
    arg("--gap-max", type=int, help="longest memory gap in frames (default 32)")
    arg("--prefix-prob", type=float, help="fraction of clips with a clean prefix (default 0.5; the rest get "
                                          "independent noise levels per frame)")
    arg("--prefix-min", type=float, help="a clean prefix covers more than this fraction of the clip (default "
                                         "0.5); higher puts the scored frames, and gaps, late in long clips")
    arg("--vae", help="autoencoder folder (from `worldmodel train-vae`) for presets that work on latents")
    arg("--max-steps", type=int, help="override the preset's number of optimizer steps")
    arg("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    arg("--stop-at", type=int, help="stop (with a checkpoint) at this step; the schedule still runs to "
                                    "--max-steps, so --resume continues exactly")
    arg("--batch-size", type=int, help="clips per process per micro-step")
    arg("--grad-accum", type=int, help="micro-steps per optimizer step")
    arg("--clip-len", type=int, help="frames per clip (drops longer curriculum stages)")
    arg("--lr", type=float, help="peak learning rate")
    arg("--warmup-steps", type=int, help="steps of linear learning-rate warm-up")
    arg("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
        help="autocast dtype; auto (default): bf16 on a GPU, none (float32) on a CPU, where bf16 can run "
             "several times slower")
    arg("--seed", type=int, default=0)
    arg("--val-every", type=int, help="validation every N steps")
    arg("--val-batches", type=int, default=4)
    arg("--ckpt-every", type=int, help="checkpoint every N steps")
    arg("--sample-every", type=int, help="sample video every N steps (0 = never)")
    return p


def run(args: argparse.Namespace) -> int:
    train(args)
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("run", help="training run folder (holds checkpoint/)")
    p.add_argument("dest", help="checkpoint folder to write, e.g. checkpoints/maze9x9")
    p.add_argument("--recall-blend", type=float, help="set the model's recall_blend in [0, 1] (pose-memory "
                   "models: how much of the memory's read a frame takes as it is, by its confidence; "
                   "checkpoints/maze9x9 ships 1.0)")
    p.add_argument("--memory-headings", type=int,
                   help="set the pose memory's heading bins (checkpoints/maze9x9 ships 40)")
    p.add_argument("--memory-resolution", type=int, help="set the pose memory's lattice points per cell "
                   "(checkpoints/maze9x9 ships 2)")
    return p


def run_export(args: argparse.Namespace) -> int:
    dest = export(args.run, args.dest, **{k: getattr(args, k) for k in PLAY_SETTINGS})
    print(f"exported EMA weights to {dest}")
    return 0
