"""Paired comparison of two models from `worldmodel eval` results: per-episode mean PSNR, the
difference, how many episodes each wins, and a bootstrap 95% interval of the mean difference over
episodes. The two may come from different result files (e.g. full context against
--context-window 16), matched by episode file; several files per side are pooled.

    python scripts/compare_evals.py runs/lookback/results.json:ours runs/lookback_w16/results.json:ours
    python scripts/compare_evals.py A.json:ours B.json:ours --frames recall   # revisit: recall frames only
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def per_episode(specs: list[str], frames: str) -> dict[str, float]:
    """{episode file: mean PSNR of the chosen frames} for 'results.json:model' specs."""
    out = {}
    for spec in specs:
        path, _, model = spec.rpartition(":")
        res = json.loads(open(path).read())
        for ep in res["episodes"]:
            psnr = np.asarray(ep["metrics"][model]["psnr"], dtype=float)
            keep = np.asarray(ep["recall_distance"]) >= 0 if frames == "recall" else np.ones(len(psnr), bool)
            if keep.any():
                out[ep["file"]] = float(psnr[keep].mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="results.json:model (several joined by commas are pooled)")
    p.add_argument("b", help="results.json:model to compare against")
    p.add_argument("--frames", choices=("all", "recall"), default="all",
                   help="all generated frames, or only those showing a view seen in the context")
    p.add_argument("--resamples", type=int, default=10000)
    args = p.parse_args()
    a, b = per_episode(args.a.split(","), args.frames), per_episode(args.b.split(","), args.frames)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("no episode is in both")
    d = np.array([a[k] - b[k] for k in common])
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), (args.resamples, len(d)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(f"{len(common)} episodes ({args.frames} frames, per-episode means): A "
          f"{np.mean([a[k] for k in common]):.2f} dB, B {np.mean([b[k] for k in common]):.2f} dB; A - B = "
          f"{d.mean():+.2f} dB, 95% CI [{lo:+.2f}, {hi:+.2f}], A better in {(d > 0).sum()} of {len(d)}")


if __name__ == "__main__":
    main()
