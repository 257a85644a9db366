"""`worldmodel bench`: what the model costs, ours against the full-attention `causal` baseline.

Sections (``--sections``, all by default):
  stream   per-frame latency and fps of `World.step` (denoising passes + commit pass + decode to
           uint8) after H frames of history -- the paper's Fig. 8, as a table and as bench.png
  memory   state bytes and peak memory against history (CUDA: torch.cuda.max_memory_allocated,
           reset per phase; CPU: process RSS sampled by a thread), measured in the same pass
  kernels  each hot op's Triton kernel against its reference in worldmodel.ops at the model's
           streaming and training shapes: median ms, achieved GB/s, the device's copy bandwidth
  train    one training iteration (forward + backward + AdamW step) against clip length
  app      the demo end to end (issue 18): server fps of World.step at the app's settings (1 thread),
           browser fps (scripts/bench_browser.py: median of 3 runs holding W, real env off and on),
           Start to first frame, 8 tabs holding W at once, an idle tab's CPU, and per-frame latency
           and RSS against 10,000 frames of history (scripts/bench_history.py); run as subprocesses
           (the library never imports the app), with /proc/loadavg before and after; app.png

Every time is a median after warm-up, printed with the device, torch version, thread count and
sizes. Writes bench.json, bench.md and bench.png into --out. ``--quick`` is a seconds-long smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import ops
from .config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS, PRESETS
from .diffusion import FlowMatching
from .model import WorldModel
from .vae import resolve_precision
from .world import World, device_name, load_codec, load_model, resolve_device

SECTIONS = ("stream", "memory", "kernels", "train", "app")
SKIP_NOTE = "skipped (quadratic prefill; see --causal-max-history)"
NO_TRITON_NOTE = "Triton kernels need a CUDA GPU; not timed on CPU"
# Defaults of the sizes, full run and --quick; an option given on the command line wins over both.
FULL = dict(history=[10, 100, 1000, 5000], frames=20, warmup=3, causal_max_history=1000,
            train_clips=[16, 32, 64, 128], train_iters=5, kernel_reps=50, kernel_clip=None, copy_mb=1024,
            threads=None)
QUICK = dict(history=[5, 20, 60], frames=2, warmup=1, causal_max_history=20,
             train_clips=[4, 8], train_iters=2, kernel_reps=3, kernel_clip=4, copy_mb=8, threads=1)


# ----------------------------------------------------------------------------- timing and memory
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Median milliseconds of fn() over `reps` calls after `warmup` calls (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _release() -> None:
    """Free garbage and give freed heap pages back to the OS (glibc keeps them: RSS would hide new growth)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_in_use(device: torch.device) -> int:
    """Bytes in use now (CUDA: allocated by torch; CPU: RSS after `_release`)."""
    _release()
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss()


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return ("CUDA: torch.cuda.max_memory_allocated (peak stats reset per phase) minus the memory "
                "allocated before the point (weights excluded)")
    return ("CPU: peak process RSS (sampled every 2 ms by a thread) minus the RSS before the point (after "
            "malloc_trim); approximate -- the allocator can reuse pages freed within the point, so "
            "transients may be under-counted. State MB = World.state_bytes, the size of the state tensors")


@contextlib.contextmanager
def peak_memory(device: torch.device, base: int, out: dict, key: str):
    """Stores in out[key] the peak MB above `base` bytes while the block runs."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        _release()
        highest, stop = [_rss()], threading.Event()

        def sample():
            while not stop.wait(0.002):
                highest[0] = max(highest[0], _rss())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        peak = max(highest[0], _rss())
    out[key] = max(peak - base, 0) / 2**20


# ----------------------------------------------------------------------------- stream + memory
def time_stream(world: World, history: int, frames: int, warmup: int, seed: int = 0,
                memory: bool = False) -> dict:
    """Median `world.step` time after `reset` on `history` random frames and warm-up steps; with
    `memory`, the peak memory of the prefill (reset) and of the warm-up steps after the first,
    above the memory in use before."""
    dev = world.device
    base = memory_in_use(dev)
    mem: dict = {}

    def meter(key: str):
        return peak_memory(dev, base, mem, key) if memory else contextlib.nullcontext()

    rng = np.random.default_rng(seed)
    with meter("prefill_peak_mb"):
        world.reset(rng.integers(0, 256, (history, *world.frame_shape), dtype=np.uint8),
                    rng.integers(0, 6, history))
    world.step(int(rng.integers(6)))  # outside both: it also frees what the prefill left pinned (state views)
    with meter("step_peak_mb"):
        for _ in range(max(warmup - 1, 1)):  # max(warmup, 2) warm-up frames in all
            world.step(int(rng.integers(6)))
    row = {"history": history, "state_mb": world.state_bytes() / 2**20, **mem}
    if frames:
        ms = time_ms(lambda: world.step(int(rng.integers(6))), dev, 0, frames)
        row |= {"ms_per_frame": ms, "fps": 1e3 / ms, "frames_timed": frames}
    return row


def bench_stream(models: dict, args, dev: torch.device, codec=None) -> list[dict]:
    timed, memory = "stream" in args.sections, "memory" in args.sections
    rows = []
    for name, model in models.items():
        full_attention, warm = model.cfg.window is None, False
        for h in args.history:
            if full_attention and h > args.causal_max_history:
                rows.append({"model": name, "history": h, "skipped": SKIP_NOTE})
                print(f"{name:>10} history {h:>5}: {SKIP_NOTE}", flush=True)
                continue
            # The causal baseline's prefill mask is (chunk*N) x (history*N): keep its chunks short.
            world = World(model, steps=args.steps, device=dev, prefill_chunk=8 if full_attention else 64,
                          # a latent model streams frames through its autoencoder, as in the app
                          codec=codec, fold_commit=args.fold_commit)
            if not warm:  # one untimed short point first: one-time allocations and lazy set-up
                time_stream(world, min(args.history), 0, 1)
                warm = True
            timing = time_stream(world, h, args.frames if timed else 0, args.warmup, memory=memory)
            rows.append({"model": name} | timing)
            del world
            r = rows[-1]
            print(f"{name:>10} history {h:>5}: "
                  + (f"{r['ms_per_frame']:8.1f} ms/frame {r['fps']:6.1f} fps  " if timed else "")
                  + f"state {r['state_mb']:.2f} MB"
                  + (f"  peak prefill {r['prefill_peak_mb']:.1f} MB, step {r['step_peak_mb']:.1f} MB"
                     if memory else ""),
                  flush=True)
    return rows


# ----------------------------------------------------------------------------- kernels
def _tensors(x) -> list[torch.Tensor]:
    return [t for t in (x if isinstance(x, (tuple, list)) else (x,)) if torch.is_tensor(t)]


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def copy_bandwidth(dev: torch.device, mb: int, warmup: int, reps: int) -> float:
    """GB/s of a device-to-device copy of `mb` MiB (bytes read + written / median time)."""
    x = torch.ones(mb * 2**20 // 4, device=dev)
    y = torch.empty_like(x)
    return 2 * x.nbytes / time_ms(lambda: y.copy_(x), dev, warmup, reps) / 1e6


def kernel_cases(cfg, batch: int, clip: int, dev: torch.device, train_dtype: torch.dtype) -> list[dict]:
    """The hot ops at the model's shapes: streaming (one frame, batch 1, carried state) and training
    (batch x clip frames, fresh state), as the model calls them (see ssm.py and attention.py)."""
    g = torch.Generator(dev).manual_seed(0)

    def rnd(*shape, dtype=torch.float32):
        return torch.randn(shape, device=dev, generator=g).to(dtype)

    cases = []
    if cfg.has_ssm:
        d_inner = cfg.expand * cfg.d_model
        h, p, n, k = d_inner // cfg.headdim, cfg.headdim, cfg.d_state, cfg.d_conv
        c = d_inner + 2 * n
        # the model's A = -exp(A_log), A_log ~ log U(1, 16)
        A = -1 - 15 * torch.rand(h, device=dev, generator=g)
        for bh, bw in sorted({cfg.layer_block_size(i) for i in range(cfg.n_layers)}):
            blocks = (cfg.grid // bh) * (cfg.grid // bw)
            for mode, nb, L, dtype in (("stream", blocks, bh * bw, torch.float32),
                                       ("train", batch * blocks, clip * bh * bw, train_dtype)):
                stream, where = mode == "stream", f"block {bh}x{bw}: nb={nb} L={L}"
                ssd = (rnd(nb, L, h, p), F.softplus(rnd(nb, L, h) - 1), A, rnd(nb, L, n), rnd(nb, L, n),
                       cfg.chunk_size, rnd(nb, h, p, n) if stream else None)
                conv = (rnd(nb, L, c, dtype=dtype), rnd(c, k, dtype=dtype), rnd(c, dtype=dtype),
                        rnd(nb, k - 1, c, dtype=dtype) if stream else None)
                cases += [dict(op="ssd_scan", mode=mode, shape=f"{where} h={h} p={p} n={n}", args=ssd,
                               reference=ops.ssd_scan_reference,
                               kernel="ssm_step" if stream else "ssd_scan_chunked"),
                          dict(op="causal_conv1d", mode=mode, shape=f"{where} c={c} k={k}", args=conv,
                               reference=ops.causal_conv1d_reference, kernel="causal_conv1d")]
    if cfg.has_attention:
        heads, d, N, w = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.tokens_per_frame, cfg.window
        for mode, B, T, dtype in (("stream", 1, 1, torch.float32), ("train", batch, clip, train_dtype)):
            Tk = T + (w or 0)  # fresh training state: `window` empty (invalid) cache slots before the clip
            valid = torch.ones(B, Tk, dtype=torch.bool, device=dev)
            if mode == "train":
                valid[:, :Tk - T] = False
            cases.append(dict(op="windowed_attention", mode=mode, shape=f"b={B} h={heads} Tq={T} Tk={Tk} "
                                                                        f"N={N} d={d} "
                              f"window={w}", reference=ops.windowed_attention_reference,
                              kernel="windowed_attention_stream",
                              args=(rnd(B, heads, T, N, d, dtype=dtype), rnd(B, heads, Tk, N, d, dtype=dtype),
                                    rnd(B, heads, Tk, N, d, dtype=dtype), valid, w)))
    return cases


def _call(fn, args, backward: bool):
    """fn(*args) as a call without arguments: the forward under no_grad, or forward + backward
    through every floating-point tensor input (made leaves once, here)."""
    if not backward:
        def forward():
            with torch.no_grad():
                return fn(*args)
        return forward
    leaves = [a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a
              for a in args]
    return lambda: sum(t.float().sum() for t in _tensors(fn(*leaves)) if t.requires_grad).backward()


def bench_kernels(cfg, args, dev: torch.device) -> dict:
    kernels, note = None, None
    if dev.type != "cuda":
        note = NO_TRITON_NOTE
    else:
        try:
            from . import kernels  # needs triton and a GPU
        except Exception as e:  # the references are still timed
            note = f"Triton kernels not importable ({type(e).__name__}: {e}); references only"
    clip = args.kernel_clip or next((p.train.clip_len for p in PRESETS.values()
                                     if p.model.to_dict() == cfg.to_dict()), 32)
    train_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = copy_bandwidth(dev, args.copy_mb, args.warmup, max(args.kernel_reps // 5, 3))
    print(f"copy bandwidth ({args.copy_mb} MiB): {peak:.1f} GB/s" + (f"; {note}" if note else ""), flush=True)
    rows = []
    for case in kernel_cases(cfg, args.train_batch, clip, dev, train_dtype):
        a, ref = case["args"], case["reference"]
        for pass_name in ("fwd", "fwd+bwd") if case["mode"] == "train" else ("fwd",):
            backward = pass_name == "fwd+bwd"
            # windowed_attention has no Triton backward: training runs torch SDPA (the reference)
            kernel = None if kernels is None or (backward and case["op"] == "windowed_attention") \
                else getattr(kernels, case["kernel"])
            ref_out = _tensors(_call(ref, a, False)())
            # minimum traffic: inputs and outputs once; the backward reads inputs and output grads,
            # writes input grads
            n_in, n_out = _nbytes(_tensors(a)), _nbytes(ref_out)
            nbytes = 3 * n_in + 2 * n_out if backward else n_in + n_out
            row = {k: case[k] for k in ("op", "mode", "shape")} | {
                "pass": pass_name, "dtype": str(a[0].dtype).removeprefix("torch."),
                "kernel": f"kernels.{case['kernel']}" if kernel else None}
            for who, fn in (("reference", ref), ("kernel", kernel)):
                if fn is not None:
                    ms = time_ms(_call(fn, a, backward), dev, args.warmup, args.kernel_reps)
                    row |= {f"{who}_ms": ms, f"{who}_gbs": nbytes / ms / 1e6}
            if kernel and not backward:
                row["max_abs_diff"] = max((x.float() - y.float()).abs().max().item()
                                          for x, y in zip(_tensors(_call(kernel, a, False)()), ref_out))
            rows.append(row)
            print(f"{row['op']:>18} {row['mode']:>6} {pass_name:>7} {row['shape']}: reference "
                  f"{row['reference_ms']:.3f} ms"
                  + (f", kernel {row['kernel_ms']:.3f} ms" if kernel else ""), flush=True)
    return {"clip": clip, "batch": args.train_batch, "copy_mb": args.copy_mb, "peak_gbs": peak, "note": note,
            "rows": rows}


# ----------------------------------------------------------------------------- training
def time_train(model: WorldModel, clip: int, batch: int, dev: torch.device, warmup: int, iters: int,
               precision: str) -> float:
    """Median ms of one training iteration (flow-matching loss, backward, AdamW step) on random clips."""
    model = copy.deepcopy(model).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow, cfg = FlowMatching(), model.cfg
    g = torch.Generator(dev).manual_seed(0)
    shape = (batch, clip, cfg.frame_size, cfg.frame_size, cfg.in_channels)
    x = torch.rand(shape, device=dev, generator=g) * 2 - 1
    a = torch.randint(0, cfg.num_actions, (batch, clip), device=dev, generator=g)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = flow.loss(model, x, a, generator=g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    # >= 1 warm-up: AdamW allocates its state on the first step
    return time_ms(step, dev, max(warmup, 1), iters)


def bench_train(models: dict, args, dev: torch.device) -> list[dict]:
    rows = []
    for name, model in models.items():
        for clip in args.train_clips:
            ms = time_train(model, clip, args.train_batch, dev, args.warmup, args.train_iters, args.precision)
            rows.append({"model": name, "clip": clip, "ms_per_iter": ms,
                         "frames_per_s": 1e3 * clip * args.train_batch / ms})
            print(f"{name:>10} train clip {clip:>4} x batch {args.train_batch}: {ms:8.1f} ms/iteration",
                  flush=True)
    return rows


# ----------------------------------------------------------------------------- the app end to end
def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


def app_jobs(args) -> dict[str, list[str]]:
    """The scripts (in the repository's scripts/) the app section runs, with their arguments."""
    hold, runs = ("2", "1") if args.quick else ("10", "3")
    checkpoint = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    fold = f"--{'' if args.fold_commit else 'no-'}fold-commit"
    compile_ = f"--{'' if args.compile else 'no-'}compile"
    app_args = f"--steps {args.steps} {fold} {compile_}"
    browser = ["bench_browser.py", "--runs", runs, "--hold", hold, "--app-args", app_args, *checkpoint]
    return {"browser_env_off": browser + ["--idle", "5"],
            "browser_env_on": browser + ["--compare"],
            "tabs": ["bench_browser.py", "--runs", "1", "--tabs", "2" if args.quick else "8",
                     "--hold", "4" if args.quick else "20", "--app-args", app_args,
                     *checkpoint],
            "history": ["bench_history.py", "--steps", str(args.steps), fold, compile_, *checkpoint,
                        *(["--frames", "100", "--checkpoints", "10", "100", "--reps", "5"] if args.quick
                          else ["--frames", "10000", "--fill-steps", "1"])]}


def bench_app(model: WorldModel, args, codec=None) -> dict:
    dev = resolve_device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app computes each frame
    try:
        world = World(model, steps=args.steps, device=dev, codec=codec, fold_commit=args.fold_commit,
                      compile=args.compile)
        row = time_stream(world, 21, args.frames, args.warmup)
    finally:
        torch.set_num_threads(threads)
    r = {"loadavg_before": loadavg(), "server": {"ms_per_frame": row["ms_per_frame"], "fps": row["fps"],
                                                 "threads": 1, "history": 21}}
    print(f"app: World.step at the app's settings: {row['ms_per_frame']:.1f} ms, {row['fps']:.1f} fps",
          flush=True)
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (script, *rest) in app_jobs(args).items():
        path = out / f"app_{name}.json"
        print(f"app: {name}: {script} {' '.join(rest)}", flush=True)
        subprocess.run([sys.executable, str(scripts / script), *rest, "--json", str(path)], check=True)
        r[name] = {k: v for k, v in json.loads(path.read_text()).items() if k != "raw"}
    r["loadavg_after"] = loadavg()
    return r


def _runs(xs: list[float], unit: str) -> str:
    return f"{statistics.median(xs):.2f} {unit} ({', '.join(f'{x:.2f}' for x in xs)})"


def app_markdown(a: dict) -> list[str]:
    off, on, tabs, hist = a["browser_env_off"], a["browser_env_on"], a["tabs"], a["history"]
    idle = off.get("idle_core_pct", float("nan"))
    rss = ", ".join(f"{k}: {v:.1f} MB" for k, v in hist["rss_mb"].items())
    loaded = max(a["loadavg_before"][:1] + a["loadavg_after"][:1], default=0) > 1.0
    n = hist["frames"]
    return ["", "## The app end to end", "",
            f"/proc/loadavg (1, 5, 15 min) before {a['loadavg_before']}, after {a['loadavg_after']}: "
            + ("**the machine was loaded** (other jobs on the cores)." if loaded else "a quiet machine."), "",
            *_table(["measure", "value"], [
                ["World.step at the app's settings (1 thread, 21 frames of history)",
                 f"{a['server']['ms_per_frame']:.1f} ms ({a['server']['fps']:.1f} fps)"],
                ["browser, holding W, real env off (median; runs)", _runs(off["fps_shown_runs"], "fps")],
                ["browser, holding W, real env on (median; runs)", _runs(on["fps_shown_runs"], "fps")],
                ["server start: process to page, with the compile and warm-up (env off run)",
                 f"{off['server_start_s']:.1f} s" if "server_start_s" in off else "not measured"],
                ["Start to first frame, env off (median; each start)", _runs(off["start_s"], "s")],
                ["Start to first frame, env on (median)", f"{on['start_s_median']:.2f} s"],
                [f"{tabs['tabs']} tabs holding W at once: slowest tab, mean",
                 f"{tabs['fps_shown_per_tab_min']:.2f} fps, {tabs['fps_shown_median']:.2f} fps"],
                ["server CPU with an idle started tab (with no tab at all)",
                 f"{idle:.2f}% of a core ({off.get('no_tab_core_pct', float('nan')):.2f}%)"],
                [f"per-frame latency after 10 / {n:,} frames of history (interleaved)",
                 f"{hist['ms_after_10']:.1f} / {hist[f'ms_after_{n}']:.1f} ms "
                 f"({hist['latency_change_pct']:+.1f}%)"],
                [f"RSS over a {n:,}-frame game", f"{rss} ({hist['rss_growth_pct']:+.2f}%)"]])]


def plot_app(a: dict, path: Path) -> None:
    """app.png: browser fps (env off, on, per tab of the multi-tab run) and RSS against history."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    bars = {"env off": a["browser_env_off"]["fps_shown_median"],
            "env on": a["browser_env_on"]["fps_shown_median"],
            f"{a['tabs']['tabs']} tabs (slowest)": a["tabs"]["fps_shown_per_tab_min"],
            "World.step": a["server"]["fps"]}
    left.bar(list(bars), list(bars.values()))
    left.set(ylabel="frames / s", title="browser frame rate holding W")
    rss = a["history"]["rss_mb"]
    right.plot([int(k) for k in rss], list(rss.values()), marker="o")
    right.set(xscale="log", xlabel="history (frames)", ylabel="RSS (MB)", ylim=(0, None),
              title="memory of a long game")
    fig.suptitle(f"{a['history']['device']}; loadavg {a['loadavg_before']} -> {a['loadavg_after']}")
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- run, report
def run_bench(models: dict, args, codec=None) -> dict:
    """Runs the chosen sections over `models` (name -> WorldModel; the first one's shapes are the
    kernels'; `codec`: their autoencoder if they work on latents). Returns everything bench.json holds."""
    dev = resolve_device(args.device)
    base = next(iter(models.values())).cfg
    r = {"device": device_name(dev), "device_type": dev.type, "torch": torch.__version__,
         "threads": torch.get_num_threads(), "sections": list(args.sections), "quick": args.quick,
         "sampler_steps": args.steps, "passes_per_frame": args.steps + (not args.fold_commit),
         "compile_app": args.compile,
         "warmup": args.warmup,
         "models": {name: {"variant": m.cfg.variant, "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
                           "tokens_per_frame": m.cfg.tokens_per_frame, "d_model": m.cfg.d_model,
                           "n_layers": m.cfg.n_layers, "frame_size": m.cfg.frame_size}
                    for name, m in models.items()}}
    if "stream" in args.sections or "memory" in args.sections:
        r["stream"] = {"history": args.history, "frames": args.frames,
                       "causal_max_history": args.causal_max_history,
                       "memory_method": memory_method(dev) if "memory" in args.sections else None,
                       "rows": bench_stream(models, args, dev, codec)}
    if "kernels" in args.sections:
        r["kernels"] = bench_kernels(base, args, dev) | {"reps": args.kernel_reps}
    if "app" in args.sections:
        r["app"] = bench_app(next(iter(models.values())), args, codec)
    if "train" in args.sections:
        r["train"] = {"batch": args.train_batch, "iters": args.train_iters, "precision": args.precision,
                      "rows": bench_train(models, args, dev)}
    return r


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, x)) + " |" for x in rows]


def _f(x, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def to_markdown(r: dict) -> str:
    lines = ["# worldmodel bench", "",
             f"Device: {r['device']}; torch {r['torch']}; torch CPU threads: {r['threads']}; "
             f"sections: {', '.join(r['sections'])}"
             + ("; **--quick smoke sizes**" if r["quick"] else "") + ". Every time is a median after "
                                                                     "warm-up.", "",
             *_table(["model", "variant", "params", "d_model x layers", "frame", "tokens / frame"],
                     [[n, m["variant"], f"{m['params_m']:.2f}M", f"{m['d_model']} x {m['n_layers']}",
                       f"{m['frame_size']}x{m['frame_size']}", m["tokens_per_frame"]]
                      for n, m in r["models"].items()])]
    s = r.get("stream")
    if s and "stream" in r["sections"]:
        lines += ["", "## Per-frame latency against history", "",
                  f"`World.step` end to end: {r['sampler_steps']} denoising passes + "
                  f"{r['passes_per_frame'] - r['sampler_steps']} commit pass + decode "
                  f"to uint8, batch 1, after `World.reset` on H random frames; median of {s['frames']} "
                  f"timed frames after {max(r['warmup'], 2)} warm-up frames. Full-attention models are "
                  f"skipped above --causal-max-history {s['causal_max_history']} frames.", "",
                  *_table(["model", "history (frames)", "ms / frame", "frames / s", "state (MB)"],
                          [[x["model"], x["history"], x["skipped"], "", ""] if "skipped" in x else
                           [x["model"], x["history"], f"{x['ms_per_frame']:.1f}", f"{x['fps']:.1f}",
                            f"{x['state_mb']:.2f}"]
                           for x in s["rows"]])]
    if s and "memory" in r["sections"]:
        lines += ["", "## Memory against history", "", f"Peak memory per phase, {s['memory_method']}. "
                                                       "Prefill = "
                  "`World.reset` (chunks of 64 frames, 8 for full attention); streaming = the warm-up steps "
                  "after the first (the first also frees what the prefill left pinned).", "",
                  *_table(["model", "history (frames)", "state (MB)", "prefill peak (MB)",
                           "streaming peak (MB)"],
                          [[x["model"], x["history"], x["skipped"], "", ""] if "skipped" in x else
                           [x["model"], x["history"], f"{x['state_mb']:.2f}", f"{x['prefill_peak_mb']:.1f}",
                            f"{x['step_peak_mb']:.1f}"] for x in s["rows"]])]
    k = r.get("kernels")
    if k:
        lines += ["", "## Kernels against their references", "",
                  "Shapes of the first model: stream = one frame, batch 1, carried state; train = batch "
                  f"{k['batch']} x clip {k['clip']} frames. Median of {k['reps']} calls after {r['warmup']} "
                  "warm-up calls. GB/s = minimum bytes read + written (each input and output once; fwd+bwd: "
                  f"3x inputs + 2x outputs) / time. Measured peak bandwidth (copy of {k['copy_mb']} MiB): "
                  f"**{k['peak_gbs']:.1f} GB/s**."]
        if k["note"]:
            lines += ["", f"**{k['note']}.**"]
        header = ["op", "mode", "pass", "shape", "dtype", "reference ms", "reference GB/s", "kernel",
                  "kernel ms", "kernel GB/s", "speedup", "max abs diff"]
        lines += ["", *_table(header,
                              [[x["op"], x["mode"], x["pass"], x["shape"], x["dtype"],
                                f"{x['reference_ms']:.3f}", f"{x['reference_gbs']:.3g}", x["kernel"] or "—",
                                _f(x.get("kernel_ms"), ".3f"),
                                _f(x.get("kernel_gbs"), ".3g"),
                                _f(x["reference_ms"] / x["kernel_ms"] if "kernel_ms" in x else None, ".2f"),
                                _f(x.get("max_abs_diff"), ".1e")] for x in k["rows"]])]
        if k["note"] is None:
            lines += ["", "windowed_attention has no Triton backward (training runs torch SDPA, the "
                          "reference); its train fwd rows time kernels.windowed_attention_stream, the "
                          "forward kernel, at the training shape."]
    if r.get("app"):
        lines += app_markdown(r["app"])
    t = r.get("train")
    if t:
        lines += ["", "## Training iteration against clip length", "",
                  f"Flow-matching loss + backward + AdamW step, batch {t['batch']}, precision "
                  f"{t['precision']}, random clips; median of {t['iters']} iterations after "
                  f"{max(r['warmup'], 1)} warm-up.", "",
                  *_table(["model", "clip (frames)", "ms / iteration", "frames / s"],
                          [[x["model"], x["clip"], f"{x['ms_per_iter']:.1f}", f"{x['frames_per_s']:.1f}"]
                           for x in t["rows"]])]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    """bench.png: ms/frame (and streaming peak memory) against history, one line per model, log x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    s = r["stream"]
    choices = (("ms_per_frame", "ms / frame", "stream"),
               ("step_peak_mb", "streaming peak memory (MB)", "memory"))
    panels = [(key, label) for key, label, section in choices if section in r["sections"]]
    fig = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (key, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for name in r["models"]:
            rows = [x for x in s["rows"] if x["model"] == name]
            skipped = [str(x["history"]) for x in rows if "skipped" in x]
            label = name + (f" (skipped at {', '.join(skipped)})" if skipped else "")
            line, = ax.plot([x["history"] for x in rows if key in x], [x[key] for x in rows if key in x],
                            marker="o", label=label)
            if key == "step_peak_mb":  # the exact state size beside the measured peak
                known = [x for x in rows if "state_mb" in x]
                ax.plot([x["history"] for x in known], [x["state_mb"] for x in known],
                        ls="--", color=line.get_color(), label=f"{name} state")
        ax.set(xscale="log", xlabel="history (frames)", ylabel=label, ylim=(0, None))
        ax.set_xticks(r["stream"]["history"], labels=[f"{h:,}" for h in r["stream"]["history"]], minor=False)
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{r['device']}, torch {r['torch']}, threads: {r['threads']}")
    fig.savefig(path, dpi=120)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def dflt(key):
        return f"default {FULL[key]}; --quick: {QUICK[key]}"

    p.add_argument("--checkpoint", default=None, help="checkpoint folder or preset (default: the shipped "
                                                      "checkpoint)")
    p.add_argument("--compare", nargs="*", default=["causal"],
                   help="more checkpoints or presets to time in the same run (default: causal, the "
                        "full-attention baseline at the checkpoint's size)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="parts to run "
                                                                                           "(default: all)")
    p.add_argument("--quick", action="store_true", help="small smoke sizes (seconds); explicit options "
                                                        "still win")
    p.add_argument("--history", type=int, nargs="+", help=f"history lengths in frames ({dflt('history')})")
    p.add_argument("--causal-max-history", type=int,
                   help="skip full-attention models above this history: their prefill is quadratic "
                        f"({dflt('causal_max_history')})")
    p.add_argument("--frames", type=int, help=f"timed frames per history point ({dflt('frames')})")
    p.add_argument("--warmup", type=int, help="warm-up frames / calls / iterations before timing "
                                              f"({dflt('warmup')})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"denoising steps per frame (default {DEFAULT_STEPS})")
    p.add_argument("--fold-commit", action=argparse.BooleanOptionalAction,
                   default=DEFAULT_FOLD_COMMIT,
                   help="keep the state of the last denoising pass instead of running a commit pass: "
                   "one model pass per frame fewer (default: on; BENCHMARKS.md, 'Sampler "
                   "steps', has what each does to quality)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="the app section runs as `worldmodel play` does, each frame's passes compiled with "
                   "torch.compile (default: on; the model speed table is eager)")
    p.add_argument("--kernel-reps", type=int, help=f"timed calls per kernel ({dflt('kernel_reps')})")
    p.add_argument("--kernel-clip", type=int, help="frames of the training shapes of the kernels (default: "
                                                   "the matching preset's training clip, else 32; --quick: "
                                                   "4)")
    p.add_argument("--copy-mb", type=int, help=f"MiB copied to measure peak bandwidth ({dflt('copy_mb')})")
    p.add_argument("--train-clips", type=int, nargs="+", help="training clip lengths "
                                                              f"({dflt('train_clips')})")
    p.add_argument("--train-batch", type=int, default=2, help="training batch size (default 2)")
    p.add_argument("--train-iters", type=int, help="timed training iterations per point "
                                                   f"({dflt('train_iters')})")
    p.add_argument("--precision", choices=("auto", "no", "bf16"), default="auto",
                   help="training autocast (and kernel training dtype): auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; --quick: 1, "
                                               "which does not fight other jobs for the cores)")
    p.add_argument("--out", default="bench", help="folder for bench.json, bench.md and bench.png")
    return p


def run(args: argparse.Namespace) -> int:
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.precision = resolve_precision(args.precision, cpu=resolve_device(args.device).type != "cuda")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        _run(args)
    finally:
        torch.set_num_threads(threads)  # main() may be called in a process that goes on (tests)
    return 0


def _run(args: argparse.Namespace) -> None:
    base = load_model(args.checkpoint)
    models = {"ours": base}
    for extra in args.compare:
        if extra == "causal":  # the baseline at our size; untrained weights time the same as trained ones
            models["causal"] = WorldModel(base.cfg.to_dict() | {"variant": "causal"})
        else:
            models[Path(extra).name] = load_model(extra)
    results = run_bench(models, args, load_codec(args.checkpoint))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    (out / "bench.md").write_text(to_markdown(results))
    if "stream" in results:
        plot(results, out / "bench.png")
    if "app" in results:
        plot_app(results["app"], out / "app.png")
    print(to_markdown(results))
    png = f", {out / 'bench.png'}" if "stream" in results else ""
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'}{png}")
