"""`worldmodel bench --quick` end to end on the tiny preset: every section but the browser's, its files
and the causal skip; the app section's history script and report on the tiny preset."""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from worldmodel.bench import NO_TRITON_NOTE, SKIP_NOTE, app_markdown, plot_app
from worldmodel.cli import main


def test_bench_quick(tmp_path):
    threads = torch.get_num_threads()
    sections = ["stream", "memory", "kernels", "train"]  # "app" runs a browser: tests/test_app.py covers it
    args = ["bench", "--checkpoint", "tiny", "--quick", "--out", str(tmp_path), "--sections", *sections]
    assert main(args) == 0
    assert torch.get_num_threads() == threads  # --quick runs on one thread and gives the others back

    r = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert r["sections"] == ["stream", "memory", "kernels", "train"]
    assert r["models"].keys() == {"ours", "causal"}

    rows = r["stream"]["rows"]
    limit = r["stream"]["causal_max_history"]
    for row in rows:
        if row["model"] == "causal" and row["history"] > limit:
            assert row["skipped"] == SKIP_NOTE and "ms_per_frame" not in row
        else:
            assert all(math.isfinite(row[k]) and row[k] >= 0
                       for k in ("ms_per_frame", "fps", "state_mb", "prefill_peak_mb", "step_peak_mb"))
    assert {row["history"] for row in rows if row["model"] == "ours"} == set(r["stream"]["history"])
    assert any("skipped" in row for row in rows) and SKIP_NOTE in md

    kernels = r["kernels"]
    assert math.isfinite(kernels["peak_gbs"]) and kernels["rows"]
    assert {row["op"] for row in kernels["rows"]} == {"ssd_scan", "causal_conv1d", "windowed_attention"}
    assert all(
        math.isfinite(row["reference_ms"]) and math.isfinite(row["reference_gbs"]) for row in kernels["rows"]
    )
    if not torch.cuda.is_available():
        assert kernels["note"] == NO_TRITON_NOTE and NO_TRITON_NOTE in md
        assert not any("kernel_ms" in row for row in kernels["rows"])

    train = r["train"]["rows"]
    expected = {(m, c) for m in ("ours", "causal") for c in (4, 8)}
    assert {(row["model"], row["clip"]) for row in train} == expected
    assert all(math.isfinite(row["ms_per_iter"]) and row["ms_per_iter"] > 0 for row in train)
    for title in ("Per-frame latency", "Memory against history", "Kernels against", "Training iteration"):
        assert title in md


def test_history_script_and_app_report(tmp_path):
    """scripts/bench_history.py on the tiny preset (the app section's long-game figures), and the
    app section's table and app.png from its results beside browser figures in the scripts' format."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_history.py"
    out = tmp_path / "history.json"
    subprocess.run([sys.executable, str(script), "--checkpoint", "tiny", "--frames", "60",
                    "--checkpoints", "10", "60", "--reps", "3", "--json", str(out)],
                   check=True, capture_output=True)
    hist = json.loads(out.read_text())
    assert list(hist["rss_mb"]) == ["10", "60"] and math.isfinite(hist["latency_change_pct"])
    assert abs(hist["rss_growth_pct"]) < 5 and hist["ms_after_10"] > 0 and hist["ms_after_60"] > 0
    browser = {"fps_shown_median": 9.0, "fps_shown_runs": [8.0, 9.0, 10.0], "start_s_median": 0.5,
               "start_s": [2.0, 0.5, 0.4], "idle_core_pct": 0.3, "no_tab_core_pct": 0.2, "tabs": 1}
    app = {"loadavg_before": [3.0, 2.0, 1.0], "loadavg_after": [3.5, 2.0, 1.0],
           "server": {"ms_per_frame": 50.0, "fps": 20.0}, "browser_env_off": browser,
           "browser_env_on": browser, "tabs": dict(browser, tabs=8, fps_shown_per_tab_min=1.9),
           "history": hist}
    md = "\n".join(app_markdown(app))
    assert "the machine was loaded" in md and "9.00 fps (8.00, 9.00, 10.00)" in md and "8 tabs" in md
    plot_app(app, tmp_path / "app.png")
    assert (tmp_path / "app.png").stat().st_size > 0
