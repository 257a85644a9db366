"""What `worldmodel eval` writes besides results.json: the markdown tables, the PSNR plots and
the one-line summary it prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import PSNR_CAP_DB
from . import freeplay


def fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K" if n >= 1e3 else str(n)


def _tables(res: dict) -> list[str]:
    """One table per section of the summary that has frames: every model and reference."""
    params = {m["name"]: _count(m["params"]) for m in res["models"]}
    lines = []
    sections = (("all", "All generated frames"), ("recall", "Recall frames (views seen in the context)"),
                ("unseen", "Unseen frames (views the context never showed)"))
    for key, title in sections:
        section = res["summary"].get(key)  # results written before the unseen section have none
        if not section:
            continue
        frames = next(iter(section.values()))["frames"]
        if not frames:
            continue
        lines += [f"## {title}: {frames} frames", "", "| Model | Params | SSIM ↑ | LPIPS ↓ | PSNR (dB) ↑ |",
                  "|---|---|---|---|---|"]
        for name, m in section.items():
            label = name if name in params else f"*{name}* (reference)"
            lines.append(f"| {label} | {params.get(name, '-')} | {fmt(m['ssim'], 3)} | {fmt(m['lpips'], 3)} "
                         f"| {fmt(m['psnr'], 2)} |")
        lines.append("")
    return lines


def markdown(res: dict) -> str:
    """results.md: settings, a table per frame set, PSNR by recall distance."""
    s = res["settings"]
    context = (s["context"] if s["context"] is not None else "up to each closing look-around"
               if res["protocol"] == "lookback" else f"{freeplay.CONTEXT} frames"
               if res["protocol"] == "freeplay" else "from each episode (context_len)")
    horizon = s["horizon"] or "the rest of the episode"
    if res["protocol"].startswith("paper-") and res["episodes"]:
        context, horizon = res["episodes"][0]["context"], res["episodes"][0]["horizon"]
    lines = [f"# Memory Maze evaluation: spatial {res['protocol']}", "",
             f"{len(res['episodes'])} episode(s) from `{s['episodes']}`; context {context}, "
             f"horizon {horizon}; poses: {s['poses']}; {s['steps']} sampler steps, seed "
             f"{s['seed']}, device {res['device']['name']}.", ""]
    if res["protocol"] == "paper-retrieval":
        lines += ["The generated frames replay the context's poses in reverse: generated frame i is "
                  f"scored against context frame {context}-1-i; actions of the reversed motion: "
                  f"`{s['reverse_actions']}`.", ""]
    lines += _tables(res)
    if res["recall_buckets"]:
        names = list(res["summary"]["all"])
        lines += ["## PSNR (dB) by recall distance (frames since the view was last seen in the context)", "",
                  "| Distance | Frames | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for b in res["recall_buckets"]:
            lines.append(f"| {b['from']}-{b['to'] - 1} | {b['frames']} | "
                         + " | ".join(fmt(b["psnr"][n], 2) for n in names) + " |")
        lines.append("")
    if "buckets" in res:
        lines += freeplay.markdown(res) + [""]
    if s["lpips_weights"] is None:
        lines.append("LPIPS n/a: no `--lpips-weights` given (the AlexNet backbone cannot be downloaded "
                     "here).")
    lines.append(f"PSNR of identical frames is capped at {PSNR_CAP_DB:g} dB.")
    return "\n".join(lines) + "\n"


def plot(path: Path, res: dict) -> None:
    """psnr.png: PSNR per generated frame, and PSNR against recall distance."""
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
    shown = [v for curve in res["psnr_by_frame"].values() for v in curve if v is not None and v < PSNR_CAP_DB]
    if shown and max(max(c) for c in res["psnr_by_frame"].values()) >= PSNR_CAP_DB:
        ax1.set_ylim(top=max(shown) + 2)  # identical frames (capped PSNR) would flatten the rest
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    buckets = res["recall_buckets"]
    if buckets:
        centers = [(b["from"] + b["to"] - 1) / 2 for b in buckets]
        for name in res["psnr_by_frame"]:
            style = "-o" if name in models else "--s"
            psnr = [b["psnr"][name] for b in buckets]
            ax2.plot(centers, psnr, style, label=name, markersize=4, linewidth=1.2)
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


def summary_line(res: dict) -> str:
    """SSIM and PSNR of every model and reference over all generated frames, on one line."""
    return " | ".join(f"{n}: SSIM {fmt(m['ssim'], 3)} PSNR {fmt(m['psnr'], 2)} dB"
                      for n, m in res["summary"]["all"].items())
