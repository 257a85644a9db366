"""Frames <-> latents: a small diffusers ``AutoencoderKL`` trained on maze frames.

Why a latent space (the paper's design; measured here on a 2-core CPU, see the model card):
a 64x64x3 frame becomes an 8x8x16 latent (12x fewer numbers), so with 2x2 patches a frame is
16 tokens instead of the 64 of 8x8 pixel patches, and each token predicts 64 numbers instead
of 192. The transformer's cost per frame drops about 4x (attention's about 16x), which is what
lets the world model see enough frames to learn on a CPU; the decoder, not the diffusion
model, draws the walls' edges.

    codec = FrameCodec.from_pretrained("checkpoints/maze9x9/vae")
    z = codec.encode(x)      # (B, T, 64, 64, 3) in [-1, 1] -> (B, T, 8, 8, 16), ~unit variance
    x = codec.decode(z)      # and back

`worldmodel train-vae` trains one (L1 reconstruction + a tiny KL term, accelerate, resumable)
and stores the latents' mean and std in the config (``shift_factor``, ``scaling_factor``), so
the diffusion model sees zero-mean, unit-variance latents.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from .data.dataset import episode_files
from .data.episodes import load_episode

_COMMON = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, sample_size=64)
# Both map 64x64 frames to 8x8 latents (three downsamplings).
AUTOENCODERS = {
    # 3.9M params
    "maze": dict(_COMMON, block_out_channels=(32, 64, 128, 128), latent_channels=16, norm_num_groups=16),
    # tests only
    "tiny": dict(_COMMON, block_out_channels=(8, 8, 16, 16), latent_channels=4, norm_num_groups=4),
}


def resolve_precision(precision: str, cpu: bool = False) -> str:
    """A training command's --precision: "auto" is bf16 on a GPU and "no" (float32) on a CPU, where
    bf16 autocast ran a training step 6.5x slower on a CPU without native bf16 (BENCHMARKS.md)."""
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and not cpu else "no"


def frames_to_model(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> [-1, 1] floats, the range the autoencoder and pixel models work in."""
    return frames.float() / 127.5 - 1.0


def frames_from_model(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def build_autoencoder(size: str = "maze") -> AutoencoderKL:
    if size not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder size {size!r}; known: {', '.join(AUTOENCODERS)}")
    return AutoencoderKL(**AUTOENCODERS[size])


PIXEL_FRAME = (64, 64, 3)  # what a model without an autoencoder works on


def check_codec(cfg, codec: "FrameCodec | None", what: str = "the model") -> None:
    """ValueError unless `codec` fits the model config `cfg` (a ModelConfig): the autoencoder whose
    latents a latent model works on, or none for a pixel model."""
    shape = (cfg.frame_size, cfg.frame_size, cfg.in_channels)
    if codec is not None and codec.latent_shape != shape:
        raise ValueError(f"the autoencoder makes {codec.latent_shape} latents but {what} works on {shape}")
    if codec is None and shape != PIXEL_FRAME:
        raise ValueError(f"{what} works on {shape} latents but has no autoencoder: pass --vae when training, "
                         "or load a checkpoint folder with a vae/ subfolder")


class FrameCodec:
    """A frozen autoencoder as the world model's frame <-> latent map, channels-last like frames."""

    def __init__(self, vae: AutoencoderKL, chunk: int = 256):
        self.vae = vae.eval().requires_grad_(False)
        self.chunk = chunk  # frames per encoder/decoder call: bounded memory for long prefills
        cfg = vae.config
        self.scale, self.shift = float(cfg.scaling_factor), float(cfg.shift_factor or 0.0)
        down = 2 ** (len(cfg.block_out_channels) - 1)
        self.frame_shape = (cfg.sample_size, cfg.sample_size, cfg.in_channels)
        self.latent_shape = (cfg.sample_size // down, cfg.sample_size // down, cfg.latent_channels)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "FrameCodec":
        path = Path(path)
        if not (path / "config.json").exists():
            raise ValueError(f"{path} is not an autoencoder folder: expected config.json and "
                             "diffusion_pytorch_model.safetensors (from `worldmodel train-vae`)")
        return cls(AutoencoderKL.from_pretrained(str(path)))

    def to(self, device) -> "FrameCodec":
        self.vae.to(device)
        return self

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of the weights: names caches of latents made by this autoencoder."""
        import hashlib

        h = hashlib.sha256()
        for name, t in sorted(self.vae.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
        h.update(repr((self.scale, self.shift)).encode())
        return h.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _map(self, fn, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        flat = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
        out = torch.cat([fn(flat[i:i + self.chunk]) for i in range(0, len(flat), self.chunk)])
        return out.permute(0, 2, 3, 1).reshape(*lead, *out.shape[-3:][1:], out.shape[1])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, W, 3) pixels in [-1, 1] -> (..., h, w, c) normalised latents (posterior means)."""
        dtype = self.vae.dtype
        def encode(f):
            return (self.vae.encode(f.to(dtype)).latent_dist.mode() - self.shift) * self.scale

        return self._map(encode, x).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., h, w, c) normalised latents -> (..., H, W, 3) pixels in [-1, 1]."""
        dtype = self.vae.dtype
        def decode(f):
            return self.vae.decode(f.to(dtype) / self.scale + self.shift).sample

        return self._map(decode, z).float().clamp(-1, 1)


# -- training ------------------------------------------------------------------------------
def _load_frames(root, limit: int | None = None) -> np.ndarray:
    files = episode_files(root)[:limit]
    files = tqdm(files, desc=f"reading {root}", leave=False)
    return np.concatenate([load_episode(f, keys=("image",))["image"] for f in files])


def _pixels(frames: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, H, W, C) frames -> the autoencoder's (N, C, H, W) input."""
    return frames_to_model(torch.from_numpy(frames).to(device)).permute(0, 3, 1, 2)


@torch.no_grad()
def reconstruction_metrics(vae: AutoencoderKL, frames: np.ndarray, device, batch: int = 64) -> dict:
    """Mean PSNR / SSIM of decode(mode(encode(x))) over uint8 `frames`, scored on the uint8 frames a
    user would see by the eval's own metrics (worldmodel.metrics)."""
    from .metrics import frame_metrics

    vae.eval()
    decoded = []
    for i in range(0, len(frames), batch):
        z = vae.encode(_pixels(frames[i:i + batch], device)).latent_dist.mode()
        decoded.append(frames_from_model(vae.decode(z).sample.permute(0, 2, 3, 1)).cpu().numpy())
    vae.train()
    m = frame_metrics(np.concatenate(decoded), np.asarray(frames))
    return {"psnr": float(m["psnr"].mean()), "ssim": float(m["ssim"].mean()), "frames": len(frames)}


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, frames: np.ndarray, device, batch: int = 64) -> tuple[float, float]:
    """Mean and std of the posterior means over `frames` (for shift_factor / scaling_factor)."""
    zs = [vae.encode(_pixels(frames[i:i + batch], device)).latent_dist.mode().float()
          for i in range(0, len(frames), batch)]
    z = torch.cat(zs)
    return z.mean().item(), z.std().item()


def _save(out: Path, vae, optimizer, scheduler, state: dict, stats_frames: np.ndarray, device) -> None:
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    shutil.rmtree(tmp, ignore_errors=True)
    mean, std = latent_statistics(vae, stats_frames, device)
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)
    vae.save_pretrained(tmp / "vae")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    state = {**state, "latent_mean": mean, "latent_std": std}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    old = out / "checkpoint.old"  # swap by renames: an interruption never leaves no checkpoint
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def train_vae(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=resolve_precision(args.precision, args.cpu), cpu=args.cpu)
    device = accelerator.device
    frames = _load_frames(args.data)
    val = _load_frames(args.val_data, limit=4)[::16] if args.val_data else frames[::997]
    stats_frames = frames[:: max(1, len(frames) // 1024)]
    vae = build_autoencoder(args.size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(100, args.steps // 10), args.steps)
    step, ckpt = 0, out / "checkpoint"
    if args.resume and (ckpt / "trainer_state.json").exists():
        vae = AutoencoderKL.from_pretrained(str(ckpt / "vae"))
        optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        scheduler = get_cosine_schedule_with_warmup(optimizer, min(100, args.steps // 10), args.steps)
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    vae, optimizer, scheduler = accelerator.prepare(vae, optimizer, scheduler)
    raw = accelerator.unwrap_model(vae)
    params = sum(p.numel() for p in raw.parameters())
    accelerator.print(f"train-vae: {params / 1e6:.2f}M params, {len(frames)} frames, "
                      f"batch {args.batch_size}, steps {step} -> {args.steps}, on {device}")
    t0, deadline = time.time(), time.time() + 60 * args.max_minutes if args.max_minutes else math.inf
    log = (out / "metrics.jsonl").open("a")
    bar = tqdm(total=args.steps, initial=step, desc="train-vae", disable=not accelerator.is_main_process)
    while step < args.steps and time.time() < deadline:
        rng = np.random.default_rng([args.seed, step])
        x = _pixels(frames[np.sort(rng.choice(len(frames), args.batch_size, replace=False))], device)
        flip = torch.from_numpy(rng.random(len(x)) < 0.5).to(device)[:, None, None, None]
        x = torch.where(flip, x, x.flip(-1))
        with accelerator.autocast():
            posterior = raw.encode(x).latent_dist
            z = posterior.sample(generator=torch.Generator(device).manual_seed(step))
            y = raw.decode(z).sample
            recon = (y.float() - x).abs().mean()
            kl = posterior.kl().mean() / z[0].numel()
            loss = recon + args.kl_weight * kl
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % 10 == 0:
            rec = {"step": step, "l1": recon.item(), "kl": kl.item(), "lr": scheduler.get_last_lr()[0],
                   "elapsed_s": round(time.time() - t0, 1)}
            bar.set_postfix(l1=f"{rec['l1']:.4f}")
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % args.ckpt_every == 0 or step == args.steps:
            with accelerator.autocast():
                metrics = reconstruction_metrics(raw, val, device)
            record = {"step": step, "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"]}
            log.write(json.dumps(record) + "\n")
            log.flush()
            accelerator.print(f"\nstep {step}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}")
            with accelerator.autocast():
                state = {"step": step, "val": metrics, "data": str(args.data)}
                _save(out, raw, optimizer, scheduler, state, stats_frames, device)
    if step % args.ckpt_every and step != args.steps:  # stopped by --max-minutes between checkpoints
        with accelerator.autocast():
            metrics = reconstruction_metrics(raw, val, device)
            state = {"step": step, "val": metrics, "data": str(args.data)}
            _save(out, raw, optimizer, scheduler, state, stats_frames, device)
    bar.close()
    accelerator.print(f"train-vae: stopped at step {step}; autoencoder in {ckpt / 'vae'}")
    return ckpt / "vae"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder of training episodes (*.npz)")
    p.add_argument("--val-data", help="folder of held-out episodes for reconstruction PSNR/SSIM")
    p.add_argument("--out", required=True, help="run folder; the autoencoder lands in OUT/checkpoint/vae")
    p.add_argument("--size", choices=tuple(AUTOENCODERS), default="maze",
                   help="autoencoder size (default maze; tiny is for tests)")
    p.add_argument("--steps", type=int, default=1500,
                   help="optimizer steps (default 1500; the cosine follows it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6,
                   help="weight of the per-dimension KL term (default 1e-6; measured: 1e-4 kept the "
                        "posterior noisy and reconstructions blurred)")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    p.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="autocast dtype; auto (default): bf16 on a GPU, none (float32) on a CPU")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    train_vae(args)
