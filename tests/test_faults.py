"""Kills (issue 19): a training run killed anywhere -- also during its first checkpoint write or
between the swap's renames -- resumes from its newest complete checkpoint or says it starts over,
and metrics.jsonl never repeats a step; killing `generate-data` leaves no worker and no truncated
episode. Real SIGKILLs of subprocesses on the `tiny` preset and tiny episodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.cli import main
from worldmodel.data.episodes import index_to_onehot, load_episode, save_episode

# Runs `worldmodel ARGS` and SIGKILLs itself at the KILL_AT_SAVE-th torch.save (3 per checkpoint:
# optimizer, scheduler, EMA state), or when the swap renames checkpoint.tmp while checkpoint.old
# exists (KILL_AT_SWAP: between its two renames).
KILLER = """
import os, pathlib, signal, sys
import torch
calls, real_save, real_rename = [0], torch.save, pathlib.Path.rename
def save(*a, **k):
    real_save(*a, **k)
    calls[0] += 1
    if calls[0] == int(os.environ.get("KILL_AT_SAVE", 0)):
        os.kill(os.getpid(), signal.SIGKILL)
def rename(self, target):
    if os.environ.get("KILL_AT_SWAP") and self.name == "checkpoint.tmp" and \\
            (self.parent / "checkpoint.old").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(self, target)
torch.save, pathlib.Path.rename = save, rename
from worldmodel.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    save_episode(root / "ep_00000000.npz", {"image": rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8),
                                            "action": index_to_onehot(rng.integers(0, 6, 19))})
    return root


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer then leaves torch's threads alone
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(data, out, steps=4, *extra):
    return ["train", "--preset", "tiny", "--data", str(data), "--val-data", str(data), "--out", str(out),
            "--max-steps", str(steps), "--ckpt-every", "2", "--val-every", "1", "--val-batches", "1",
            "--sample-every", "0", "--precision", "no", "--batch-size", "1", *extra]


def _killed(args, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-1000:] + proc.stderr[-3000:]
    return proc


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(folder: Path) -> int:
    return json.loads((folder / "trainer_state.json").read_text())["step"]


def test_kill_during_first_checkpoint_write_says_it_starts_over(data, tmp_path, capsys):
    out = tmp_path / "run"
    _killed(_args(data, out), KILL_AT_SAVE="1")  # optimizer.pt of the step-2 checkpoint written
    assert (out / "checkpoint.tmp").is_dir() and not (out / "checkpoint").exists()
    assert _steps(out) == [1, 2]
    assert main(_args(data, out, 4, "--resume")) == 0
    said = capsys.readouterr().out
    assert "no complete checkpoint (checkpoint.tmp: a write that was interrupted): starting over" in said
    assert _steps(out) == [1, 2, 3, 4] and _state(out / "checkpoint") == 4
    assert not (out / "checkpoint.tmp").exists()


def test_kill_during_a_later_checkpoint_write_resumes(data, tmp_path, capsys):
    out = tmp_path / "run"
    _killed(_args(data, out), KILL_AT_SAVE="5")  # during the step-4 checkpoint's write
    assert _state(out / "checkpoint") == 2 and _steps(out) == [1, 2, 3, 4]
    assert main(_args(data, out, 4, "--resume")) == 0
    said = capsys.readouterr().out
    assert "resumed from" in said and "at step 2" in said and "lines after step 2 dropped" in said
    assert _steps(out) == [1, 2, 3, 4] and _state(out / "checkpoint") == 4


def test_kill_between_the_swaps_renames_resumes_from_the_newest(data, tmp_path, capsys):
    out = tmp_path / "run"
    _killed(_args(data, out), KILL_AT_SWAP="1")  # step 4: checkpoint -> .old done, .tmp not yet renamed
    assert not (out / "checkpoint").exists()
    assert _state(out / "checkpoint.old") == 2 and _state(out / "checkpoint.tmp") == 4
    assert main(_args(data, out, 6, "--resume", "--stop-at", "5")) == 0
    assert "checkpoint.tmp at step 4" in capsys.readouterr().out
    assert _steps(out) == [1, 2, 3, 4, 5] and _state(out / "checkpoint") == 5
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()


def test_kill_at_a_random_moment_resumes(data, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "worldmodel.cli", *_args(data, out, 8, "--ckpt-every", "1")]
    proc = subprocess.Popen(args, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0, 2))
    proc.kill()
    proc.wait()
    assert main(_args(data, out, 8, "--ckpt-every", "1", "--resume")) == 0
    assert _steps(out) == list(range(1, 9)) and _state(out / "checkpoint") == 8


# -- generate-data ---------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_generate_data_leaves_no_worker_and_no_truncated_file(tmp_path):
    pytest.importorskip("memory_maze")
    out = tmp_path / "episodes"
    proc = subprocess.Popen([sys.executable, "-m", "worldmodel.cli", "generate-data", "--out", str(out),
                             "--episodes", "4", "--length", "1000", "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and proc.poll() is None:
            # the spawn start method adds a resource tracker beside the two pool workers
            workers = _children(proc.pid)
            if len(workers) >= 3:
                break
            time.sleep(0.2)
        assert len(workers) >= 3, "the workers never started"
        time.sleep(4)  # building their envs or making episodes
        proc.kill()
        proc.wait()
        deadline = time.time() + 10  # without a death signal they would finish their episodes first
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived their parent"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # this test's own process group: whatever is left of it
        except ProcessLookupError:
            pass
    for path in out.glob("*.npz"):
        assert len(load_episode(path)["image"]) == 1001
    assert not list(out.glob(".*.tmp")), "a killed worker left its temporary file"
