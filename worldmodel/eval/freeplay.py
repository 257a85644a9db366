"""The free-play protocol: walking from the actions alone, as a player does (the first yardstick).

Held-out exploration episodes (`worldmodel generate-data --kind explore`, seeds never trained on):
the model is seeded with the first CONTEXT frames and their poses, then makes every later frame
from the episode's actions alone, its poses dead-reckoned in the maze -- exactly as the app plays.
Per BUCKET generated frames, for the models and the references (repeat last frame, mean context
frame, the autoencoder's reconstruction): PSNR, SSIM, the sharpness ratio (the mean absolute
Laplacian of the frames over that of the real frames, summed over the same frames: blur and
collapse read below 1) and the share of collapsed frames (PSNR under COLLAPSE_DB).
"""

from __future__ import annotations

import cv2
import numpy as np

CONTEXT = 32
BUCKET = 50
COLLAPSE_DB = 12.0
# What "holds up" means (issue 17): every bucket up to frame 500 beats the mean context frame by
# this much PSNR, keeps this sharpness ratio, and under this share of frames collapse.
TARGET_FRAMES, TARGET_GAIN_DB, TARGET_SHARPNESS, TARGET_COLLAPSE = 500, 2.0, 0.8, 0.01


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Per frame, the mean absolute Laplacian of the grey image of uint8 (T, H, W, 3) frames."""
    return np.array([np.abs(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F)).mean()
                     for f in frames])


def buckets(episodes: list[dict], names: list[str], bucket: int = BUCKET) -> list[dict]:
    """Per `bucket` generated frames (pooled over episodes): each name's PSNR, SSIM, sharpness ratio
    and collapsed share. An episode holds metrics[name] with per-frame psnr, ssim, sharpness, and
    the real frames' sharpness in truth_sharpness."""
    longest = max(e["horizon"] for e in episodes)
    rows = []
    for start in range(0, longest, bucket):
        part = slice(start, start + bucket)
        real = np.concatenate([np.asarray(e["truth_sharpness"][part]) for e in episodes])
        row = {"start": start, "end": min(start + bucket, longest), "frames": int(len(real))}
        for n in names:
            got = {k: np.concatenate([np.asarray(e["metrics"][n][k][part], dtype=float) for e in episodes])
                   for k in ("psnr", "ssim", "sharpness")}
            row[n] = {"psnr": float(got["psnr"].mean()), "ssim": float(got["ssim"].mean()),
                      "sharpness_ratio": float(got["sharpness"].sum() / max(real.sum(), 1e-9)),
                      "collapsed": float((got["psnr"] < COLLAPSE_DB).mean())}
        rows.append(row)
    return rows


def verdict(rows: list[dict], model: str, mean_name: str = "mean frame") -> dict:
    """Issue 17's bar over the buckets that start before TARGET_FRAMES, as measured facts."""
    scored = [r for r in rows if r["start"] < TARGET_FRAMES]
    gains = [r[model]["psnr"] - r[mean_name]["psnr"] for r in scored]
    sharp = [r[model]["sharpness_ratio"] for r in scored]
    frames = sum(r["frames"] for r in scored)
    measured = min(TARGET_FRAMES, scored[-1]["end"])
    collapsed = sum(r[model]["collapsed"] * r["frames"] for r in scored) / max(frames, 1)
    return {"frames": measured, "worst_gain_db": min(gains), "worst_sharpness_ratio": min(sharp),
            "collapsed": collapsed,
            "holds": min(gains) >= TARGET_GAIN_DB and min(sharp) >= TARGET_SHARPNESS
            and collapsed < TARGET_COLLAPSE}


def markdown(res: dict) -> list[str]:
    """The bucket table and the verdict lines of a free-play result."""
    rows, models = res["buckets"], [m["name"] for m in res["models"]]
    refs = list(res["references"])
    head = (["frames"] + [f"{m} PSNR / SSIM / sharp / collapsed" for m in models]
            + [f"{r} PSNR / sharp" for r in refs])
    lines = ["", f"### Free play, per {BUCKET} generated frames (sharp = sharpness ratio vs the real frames; "
             f"collapsed = share under {COLLAPSE_DB:g} dB)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['start']}-{r['end'] - 1}"]
        cells += [f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.3f} / {r[m]['sharpness_ratio']:.2f} / "
                  f"{100 * r[m]['collapsed']:.1f}%" for m in models]
        cells += [f"{r[n]['psnr']:.2f} / {r[n]['sharpness_ratio']:.2f}" for n in refs]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m in models:
        v = verdict(rows, m)
        lines.append(f"- {m}, frames 0-{v['frames'] - 1}: worst bucket {v['worst_gain_db']:+.2f} dB "
                     f"against the mean context frame (target >= +{TARGET_GAIN_DB:g}), worst sharpness ratio "
                     f"{v['worst_sharpness_ratio']:.2f} (target >= {TARGET_SHARPNESS:g}), "
                     f"{100 * v['collapsed']:.1f}% collapsed (target < {100 * TARGET_COLLAPSE:g}%): "
                     f"{'holds' if v['holds'] else 'misses'}")
    return lines


def plot(path, res: dict) -> None:
    """PSNR and sharpness ratio per bucket, one line per model and reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = res["buckets"]
    x = [(r["start"] + r["end"]) / 2 for r in rows]
    names = [m["name"] for m in res["models"]] + list(res["references"])
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for n in names:
        style = "--" if n in res["references"] else "-o"
        ax1.plot(x, [r[n]["psnr"] for r in rows], style, label=n, markersize=3)
        ax2.plot(x, [r[n]["sharpness_ratio"] for r in rows], style, label=n, markersize=3)
    ax1.set(xlabel="generated frame", ylabel="PSNR (dB)", title="free play: PSNR per bucket")
    ax2.set(xlabel="generated frame", ylabel="sharpness / real", title="sharpness ratio")
    ax2.axhline(TARGET_SHARPNESS, color="grey", lw=0.8, ls=":")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
