"""`worldmodel train` / `export` on the `tiny` preset over small synthetic episodes (no env needed):
files of a run, exact resume, and two CPU processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from worldmodel.cli import main
from worldmodel.data.episodes import index_to_onehot, save_episode

STEPS = 4


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """Two 24-frame episodes of a bar sliding with the action (enough structure to learn from)."""
    root = tmp_path_factory.mktemp("episodes")
    rng = np.random.default_rng(0)
    for i in range(2):
        actions = rng.integers(0, 6, 23)
        x, frames = 10, []
        for a in [0, *actions]:
            x = (x + {1: 3, 2: -4, 3: 4}.get(int(a), 0)) % 64
            img = np.full((64, 64, 3), 40, np.uint8)
            img[:, x:x + 6] = (200, 120, 60)
            frames.append(img)
        ep = {"image": np.stack(frames), "action": index_to_onehot(actions)}
        save_episode(root / f"ep_{i:08d}.npz", ep)
    return root


def _train(data, out, *extra):
    return main(["train", "--preset", "tiny", "--data", str(data), "--val-data", str(data), "--out", str(out),
                 "--max-steps", str(STEPS), "--ckpt-every", "100", "--val-every", "2", "--val-batches", "1",
                 "--sample-every", "0", "--precision", "no", *extra])


def _weights(run):
    return {kind: load_file(str(run / "checkpoint" / kind / "diffusion_pytorch_model.safetensors"))
            for kind in ("model", "ema")}


def test_train_export_and_exact_resume(episodes, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(episodes, straight) == 0
    state = json.loads((straight / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == STEPS
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    for name in ("optimizer.pt", "scheduler.pt", "ema_state.pt"):
        assert (straight / "checkpoint" / name).is_file()

    # Interrupted at step 2, then resumed: the same weights, bit for bit.
    assert _train(episodes, resumed, "--stop-at", "2") == 0
    assert json.loads((resumed / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    assert _train(episodes, resumed, "--stop-at", "2", "--resume") == 0  # rerun of a finished stage: no step
    assert json.loads((resumed / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    assert _train(episodes, resumed, "--resume") == 0
    a, b = _weights(straight), _weights(resumed)
    for kind in a:
        assert a[kind].keys() == b[kind].keys()
        for key in a[kind]:
            assert (a[kind][key] == b[kind][key]).all(), (kind, key)

    dest = tmp_path / "ckpt"
    assert main(["export", str(straight), str(dest)]) == 0
    from worldmodel import load_world

    world = load_world(str(dest), device="cpu")
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    assert world.reset(frames, [0, 1, 1]).shape == (64, 64, 3)
    assert world.step(1).dtype == np.uint8
    with pytest.raises(ValueError, match="holds no checkpoint"):
        main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")])
    with pytest.raises(ValueError, match="recall_blend needs pose_memory"):  # refused before writing
        main(["export", str(straight), str(tmp_path / "blend"), "--recall-blend", "0.5"])
    assert not (tmp_path / "blend").exists()


def test_export_sets_the_play_settings_of_a_pose_memory_model(tmp_path):
    from helpers import randomized

    from worldmodel import load_world

    ckpt = tmp_path / "run" / "checkpoint"
    model = randomized(pose_cond=True, pose_memory=True, memory_cells=10, memory_headings=4)
    model.save_pretrained(ckpt / "ema")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1}))
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "ckpt"), "--recall-blend", "0.75",
                 "--memory-headings", "8", "--memory-resolution", "2"]) == 0
    cfg = load_world(str(tmp_path / "ckpt"), device="cpu").cfg
    assert (cfg.recall_blend, cfg.memory_headings, cfg.memory_resolution) == (0.75, 8, 2)
    for flag, value, match in (("--recall-blend", "2", r"recall_blend must be a number in \[0.0, 1.0\]"),
                               ("--memory-resolution", "0", "memory_resolution")):
        with pytest.raises(ValueError, match=match):
            main(["export", str(tmp_path / "run"), str(tmp_path / "bad"), flag, value])
        assert not (tmp_path / "bad").exists()


def test_two_processes_under_accelerate_launch(episodes, tmp_path):
    """The multi-GPU launcher (torchrun + DDP) on two CPU processes: without CUDA, accelerate uses gloo."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "worldmodel.cli", "train", "--preset", "tiny", "--data", str(episodes), "--out", str(out),
           "--max-steps", "2", "--sample-every", "0", "--precision", "no"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["processes"] == 2
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2


def test_warm_start_into_grown_model_computes_the_same(tmp_path):
    """--init-from a checkpoint without the previous-frame input: the grown patch embedding starts
    with zeros for the new inputs, so the network adds to the previous frame what the source predicted."""
    import torch

    from worldmodel.config import get_preset
    from worldmodel.model import WorldModel
    from worldmodel.train import warm_start

    cfg = get_preset("tiny").model.to_dict()
    torch.manual_seed(0)
    source = WorldModel({**cfg, "prev_frame_input": False})
    for p in source.parameters():  # non-zero everywhere, unlike adaLN-Zero's fresh init
        torch.nn.init.normal_(p, std=0.05)
    source.save_pretrained(tmp_path / "src")
    grown = WorldModel(cfg)
    assert warm_start(grown, tmp_path / "src") == ["patch_embed.weight"]
    x, sigma, a = torch.randn(2, 5, 64, 64, 3), torch.rand(2, 5), torch.randint(0, 6, (2, 5))
    with torch.no_grad():
        want, _ = source(x, sigma, a)
        got, _ = grown(x, sigma, a)
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    torch.testing.assert_close(got, want + prev)
    with pytest.raises(ValueError, match="cannot initialise"):
        warm_start(WorldModel({**cfg, "d_model": 16, "n_heads": 2}), tmp_path / "src")


def test_latent_model_trains_exports_and_plays_with_its_autoencoder(episodes, tmp_path):
    """train-vae -> train --vae (latents cached per autoencoder) -> export carries vae/ -> World
    takes and returns 64x64 frames while the model works on 8x8 latents."""
    from worldmodel import load_world
    from worldmodel.vae import FrameCodec

    vae_run = tmp_path / "vae"
    assert main(["train-vae", "--size", "tiny", "--data", str(episodes), "--out", str(vae_run),
                 "--steps", "2", "--ckpt-every", "2", "--batch-size", "4", "--precision", "no"]) == 0
    codec = FrameCodec.from_pretrained(vae_run / "checkpoint" / "vae")
    # latent statistics were measured and stored
    assert codec.latent_shape == (8, 8, 4) and codec.scale != 1.0
    with pytest.raises(ValueError, match="pass --vae"):
        main(["train", "--preset", "tiny-latent", "--data", str(episodes), "--out", str(tmp_path / "x"),
              "--precision", "no"])

    run = tmp_path / "latent"
    assert main(["train", "--preset", "tiny-latent", "--vae", str(vae_run / "checkpoint" / "vae"),
                 "--data", str(episodes), "--out", str(run), "--max-steps", "2", "--sample-every", "0",
                 "--precision", "no"]) == 0
    cached = sorted((episodes / "latents" / codec.fingerprint).glob("*.npy"))
    assert len(cached) == 2 and np.load(cached[0]).shape == (24, 8, 8, 4)
    dest = tmp_path / "ckpt"
    assert main(["export", str(run), str(dest)]) == 0
    assert (dest / "vae" / "config.json").is_file()

    world = load_world(str(dest), device="cpu")
    assert world.codec is not None and world.frame_shape == (64, 64, 3)
    frames = np.load(episodes / "ep_00000000.npz")["image"][:4]
    assert world.reset(frames, [0, 1, 1, 2]).shape == (64, 64, 3)
    snap = world.snapshot()
    first = world.step(1)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert snap["state.prev"].shape == (1, 1, 8, 8, 4)  # the state holds latents, not pixels
    world.restore(snap)
    assert (world.step(1) == first).all()
