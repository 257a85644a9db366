"""`worldmodel bench --quick` end to end on the tiny preset: every section, its files and the causal skip."""

import json
import math

import torch

from worldmodel.bench import NO_TRITON_NOTE, SKIP_NOTE
from worldmodel.cli import main


def test_bench_quick(tmp_path):
    threads = torch.get_num_threads()
    assert main(["bench", "--checkpoint", "tiny", "--quick", "--out", str(tmp_path)]) == 0
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
