"""`worldmodel bench`: per-frame latency and state size against history length (the paper's Fig. 8
as a table), for our model and the full-attention `causal` baseline in the same run.

Every number is a median over timed frames after warm-up, with the device and sizes printed
beside it. Writes bench.json and bench.md into --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from .model import WorldModel
from .world import World, load_model, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_stream(world: World, history: int, frames: int, warmup: int, seed: int = 0) -> dict:
    """Median seconds per `world.step` after `history` frames of context."""
    rng = np.random.default_rng(seed)
    context = rng.integers(0, 256, (history, *world.frame_shape), dtype=np.uint8)
    world.reset(context, rng.integers(0, 6, history))
    times = []
    for i in range(warmup + frames):
        _sync(world.device)
        t0 = time.perf_counter()
        world.step(int(rng.integers(6)))
        _sync(world.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"history": history, "ms_per_frame": med * 1e3, "fps": 1 / med, "state_mb": world.state_bytes() / 2**20,
            "frames_timed": frames}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run_bench(models: dict, histories: list[int], frames: int, warmup: int, steps: int, device: str) -> dict:
    dev = resolve_device(device)
    results = {"device": device_name(dev), "torch": torch.__version__, "sampler_steps": steps,
               "passes_per_frame": steps + 1, "models": {}}
    for name, model in models.items():
        cfg = model.cfg
        rows = []
        for h in histories:
            # The causal baseline's prefill mask is (chunk*N) x (history*N): keep its chunks short.
            world = World(model, steps=steps, device=dev, prefill_chunk=8 if cfg.window is None else 64)
            rows.append(time_stream(world, h, frames, warmup))
            print(f"{name:>10} history {h:>5}: {rows[-1]['ms_per_frame']:8.1f} ms/frame  "
                  f"{rows[-1]['fps']:6.1f} fps  state {rows[-1]['state_mb']:.2f} MB", flush=True)
        results["models"][name] = {"variant": cfg.variant,
                                   "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                                   "tokens_per_frame": cfg.tokens_per_frame, "rows": rows}
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        results["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return results


def to_markdown(r: dict) -> str:
    lines = [f"Device: {r['device']} (torch {r['torch']}); sampler {r['sampler_steps']} steps + 1 commit pass per frame; "
             "medians over timed frames after warm-up.", "",
             "| model | variant | params | history (frames) | ms / frame | frames / s | state (MB) |",
             "|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for row in m["rows"]:
            lines.append(f"| {name} | {m['variant']} | {m['params_m']:.2f}M | {row['history']} | {row['ms_per_frame']:.1f} "
                         f"| {row['fps']:.1f} | {row['state_mb']:.2f} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", default=None, help="checkpoint folder or preset (default: the shipped checkpoint)")
    p.add_argument("--compare", nargs="*", default=["causal"],
                   help="more checkpoints or presets to time in the same run (default: causal, the full-attention baseline "
                        "at the checkpoint's size)")
    p.add_argument("--history", type=int, nargs="+", default=[10, 100, 1000, 5000], help="history lengths in frames")
    p.add_argument("--frames", type=int, default=20, help="timed frames per point")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="denoising steps per frame")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    return p


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_model(args.checkpoint)
    models = {"ours": base}
    for extra in args.compare:
        if extra == "causal":  # the baseline at our size; untrained weights time the same as trained ones
            models["causal"] = WorldModel(base.cfg.to_dict() | {"variant": "causal"})
        else:
            models[Path(extra).name] = load_model(extra)
    results = run_bench(models, args.history, args.frames, args.warmup, args.steps, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    (out / "bench.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0
