"""Tests of the Memory Maze data pipeline against the real environment (no mocks).

Kept small for a 2-core CPU: a few episodes of tens of steps. The render backend is chosen by
worldmodel.data.env (MUJOCO_GL if set, else EGL, else OSMesa).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from worldmodel.data.episodes import (
    EpisodeRecorder,
    actions_to_index,
    episode_poses,
    index_to_onehot,
    load_episode,
    save_episode,
    validate_episode,
)
from worldmodel.data.generate import MANIFEST, generate_episodes, make_episode
from worldmodel.data.policies import PathFollower, bfs_distances, cell_of, heading_error, shortest_path, steer
from worldmodel.data.trajectories import explore_episode, recall_distance
from worldmodel.odometry import Odometry

LENGTH = 40
SEED = 123


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Two real 40-step explorer episodes made by two spawned worker processes."""
    out = tmp_path_factory.mktemp("maze") / "train"
    paths = generate_episodes(out, maze="9x9", episodes=2, length=LENGTH, workers=2,
                              seed=SEED, policy="explorer", kind="explore", progress=False)
    return out, paths


def test_import_is_light():
    code = ("import sys, worldmodel.data, worldmodel.data.env, worldmodel.data.policies, "
            "worldmodel.data.episodes, worldmodel.data.generate, worldmodel.data.trajectories\n"
            "heavy = [m for m in ('memory_maze', 'dm_control', 'mujoco') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_onehot_roundtrip():
    onehot = index_to_onehot([1, 5, 0, 3])
    assert onehot.shape == (5, 6) and onehot.dtype == np.uint8
    assert not onehot[0].any()
    assert actions_to_index(onehot).tolist() == [0, 1, 5, 0, 3]


def test_planner_geometry():
    # maze_layout[row=y, col=x], 1 = free; a wall column at x=1 with a gap at y=2.
    layout = np.array([[1, 0, 1],
                       [1, 0, 1],
                       [1, 1, 1]], dtype=np.uint8)
    assert cell_of((0.5, 2.9), layout) == (0, 2)
    assert shortest_path(layout, (0, 0), (2, 0)) == [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2),
                                                     (2, 1), (2, 0)]
    assert bfs_distances(layout, (0, 0))[0, 2] == 6 and bfs_distances(layout, (0, 0))[0, 1] == -1
    # Facing +x, a target at +y is to the left (counter-clockwise): positive error, turn left.
    assert heading_error((0, 0), (1, 0), (0, 1)) == pytest.approx(math.pi / 2)
    assert steer((0, 0), (1, 0), (0, 1)) == 2
    assert steer((0, 0), (1, 0), (2, 0)) == 1
    assert steer((0, 0), (1, 0), (2, -0.8)) == 5  # roughly ahead, to the right: forward+right


def test_generated_episodes_are_real_renders(generated):
    out, paths = generated
    assert [p.name for p in paths] == [f"ep_{SEED:08d}.npz", f"ep_{SEED + 1:08d}.npz"]
    for path in paths:
        ep = load_episode(path)
        assert ep["image"].shape == (LENGTH + 1, 64, 64, 3) and ep["image"].dtype == np.uint8
        assert ep["action"].shape == (LENGTH + 1, 6) and not ep["action"][0].any()
        for key in ("reward", "agent_pos", "agent_dir", "maze_layout", "targets_pos",
                    "targets_vec", "target_pos", "target_vec", "target_color"):
            assert len(ep[key]) == LENGTH + 1, key
        images = ep["image"].astype(np.float32)
        assert images.reshape(LENGTH + 1, -1).std(axis=1).min() > 10.0  # not blank frames
        # Every frame after a pose change differs from the previous one.
        pos, heading = ep["agent_pos"], np.arctan2(ep["agent_dir"][:, 1], ep["agent_dir"][:, 0])
        moved = (np.linalg.norm(np.diff(pos, axis=0), axis=1) > 0.02) | (
            np.abs(np.angle(np.exp(1j * np.diff(heading)))) > math.radians(3))
        changed = np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3)) > 1.0
        assert moved.sum() > LENGTH // 2
        assert changed[moved].all()
        # Coordinate convention: the agent is always in a free cell layout[floor(y), floor(x)].
        layout = ep["maze_layout"][0]
        assert (ep["maze_layout"] == layout).all()
        cells = np.floor(pos).astype(int)
        assert layout[cells[:, 1], cells[:, 0]].all()
        # The explorer does not push into walls: forward actions make progress.
        forward = np.isin(actions_to_index(ep["action"])[1:], (1, 4, 5))
        step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        assert (step[forward] < 0.02).mean() < 0.2


def test_manifest_and_resume(generated):
    out, paths = generated
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["maze"] == "9x9" and manifest["length"] == LENGTH
    assert manifest["policy"] == "explorer" and manifest["kind"] == "explore"
    assert manifest["seeds"] == [SEED, SEED + 1]
    assert manifest["files"] == [p.name for p in paths]
    assert manifest["frames_per_second"] > 0
    mtimes = [p.stat().st_mtime_ns for p in paths]
    again = generate_episodes(out, maze="9x9", episodes=2, length=LENGTH, workers=2, seed=SEED,
                              progress=False)
    assert again == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # skipped, not rewritten
    assert json.loads((out / MANIFEST).read_text())["generated_this_run"] == 0
    with pytest.raises(ValueError, match="other settings"):
        generate_episodes(out, maze="9x9", episodes=1, length=LENGTH + 1, seed=SEED,
                          progress=False)


def test_same_seed_same_episode(generated, tmp_path):
    """In-process generation reproduces the worker-made episode exactly."""
    _, paths = generated
    (path,) = generate_episodes(tmp_path, maze="9x9", episodes=1, length=LENGTH, workers=1,
                                seed=SEED, progress=False)
    a, b = load_episode(paths[0]), load_episode(path)
    assert np.array_equal(a["image"], b["image"])
    assert np.array_equal(a["action"], b["action"])
    assert np.array_equal(a["agent_pos"], b["agent_pos"])


def test_clip_dataset(generated):
    from worldmodel.data.dataset import ClipDataset

    out, paths = generated
    ds = ClipDataset(out, clip_len=8)
    assert len(ds) == ds.num_clips == 2 * (LENGTH + 1 - 8 + 1)
    ep = load_episode(paths[0])
    item = ds[0]
    assert item["frames"].shape == (8, 64, 64, 3) and str(item["frames"].dtype) == "torch.uint8"
    assert str(item["actions"].dtype) == "torch.int64" and item["actions"].shape == (8,)
    assert str(item["agent_pos"].dtype) == "torch.float32" and item["agent_dir"].shape == (8, 2)
    assert np.array_equal(item["frames"].numpy(), ep["image"][:8])
    assert item["actions"].tolist() == actions_to_index(ep["action"])[:8].tolist()
    assert item["actions"][0] == 0  # nothing led to the first frame of an episode
    last = ds[len(ds) - 1]
    assert last["episode"] == 1 and last["start"] == LENGTH + 1 - 8

    skip = ClipDataset([str(p) for p in paths], clip_len=4, frame_skip=3, samples_per_epoch=10,
                       seed=5)
    assert len(skip) == 10
    first = skip[3]
    assert np.array_equal(ClipDataset(out, 4, 3, samples_per_epoch=10, seed=5)[3]["frames"],
                          first["frames"])
    src = load_episode(paths[first["episode"]])
    s = first["start"]
    assert np.array_equal(first["frames"].numpy(), src["image"][s:s + 10:3])
    assert first["actions"].tolist() == actions_to_index(src["action"])[s:s + 10:3].tolist()
    draws = {(skip[i]["episode"], skip[i]["start"]) for i in range(10)}
    skip.set_epoch(1)
    assert {(skip[i]["episode"], skip[i]["start"]) for i in range(10)} != draws


def test_corrupt_files_are_named(generated, tmp_path):
    from worldmodel.data.dataset import ClipDataset

    _, paths = generated
    good = tmp_path / "good.npz"
    shutil.copy(paths[0], good)
    raw = paths[1].read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.npz"
    middle = len(raw) // 2
    corrupt.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 4096])
                        + raw[middle + 4096:])
    for bad in (truncated, corrupt):
        with pytest.raises(ValueError, match=bad.name):
            load_episode(bad)
        with pytest.raises(ValueError, match=bad.name):
            ClipDataset([good, bad], clip_len=4)
    with pytest.warns(UserWarning) as caught:
        ds = ClipDataset(tmp_path, clip_len=4, skip_corrupt=True)
    assert ds.files == [good]
    messages = " ".join(str(w.message) for w in caught)
    assert "truncated.npz" in messages and "corrupt.npz" in messages

    ep = load_episode(good)
    # a partial read is checked for what it holds (no 'action' or 'image' needed)
    assert set(load_episode(good, keys=("agent_pos",))) == {"agent_pos"}
    np.savez(tmp_path / "wrong_shape.npz", **dict(ep, image=ep["image"][..., :2]))
    with pytest.raises(ValueError, match=r"wrong_shape\.npz.*'image'"):
        load_episode(tmp_path / "wrong_shape.npz")
    with pytest.raises(ValueError, match="x: key 'action' has 41 frames, other keys 40"):
        validate_episode(dict(ep, image=ep["image"][:-1]), "x")
    no_action = {k: v for k, v in ep.items() if k != "action"}
    np.savez(tmp_path / "no_action.npz", **no_action)
    with pytest.raises(ValueError, match=r"no_action\.npz: missing key\(s\) \['action'\]"):
        load_episode(tmp_path / "no_action.npz")
    not_onehot = dict(ep, action=ep["action"].copy())
    not_onehot["action"][5] = 0
    with pytest.raises(ValueError, match="row 5 is not one-hot"):
        save_episode(tmp_path / "bad_action.npz", not_onehot)
    assert not (tmp_path / "bad_action.npz").exists()


def test_actions_recorded_and_fast_env_identical():
    """Drive to the target object (to exercise the activation check) with the fast env (its
    target check and persistent render camera), then replay the same actions with dm_control's
    original code: identical frames and rewards, and the recorded one-hot actions match the
    actions taken."""
    from worldmodel.data.env import MazeEnv

    taken, images, rewards = [], [], []
    with MazeEnv("9x9", seed=4, fast=True) as env:
        obs = env.reset()
        rec = EpisodeRecorder(obs)
        layout = obs["maze_layout"]
        follower = PathFollower(layout, cell_of(obs["target_pos"], layout),
                                np.random.default_rng(0))
        for _ in range(150):
            action = follower.act(obs["agent_pos"], obs["agent_dir"])
            if action is None:
                break
            obs = env.step(action)
            rec.add(action, obs)
            taken.append(action)
            rewards.append(obs["reward"])
            if obs["reward"] > 0:
                break
        episode = rec.episode()
    assert sum(rewards) >= 1.0, "the driver should reach the target object"
    assert not episode["action"][0].any()
    assert actions_to_index(episode["action"])[1:].tolist() == taken

    with MazeEnv("9x9", seed=4, fast=False) as env:
        obs = env.reset()
        images.append(obs["image"])
        replay_rewards = []
        for action in taken:
            obs = env.step(action)
            images.append(obs["image"])
            replay_rewards.append(obs["reward"])
    assert np.array_equal(np.stack(images), episode["image"])
    assert replay_rewards == rewards


def test_reused_env_same_episode():
    """An env reused across episodes (as generate-data does), even after an interrupted
    episode, makes exactly the episode of a fresh env with that seed."""
    from worldmodel.data.env import MazeEnv

    with MazeEnv("9x9", seed=SEED) as env:  # fresh, never reseeded
        fresh = explore_episode(env, 20, np.random.default_rng(SEED))
    with MazeEnv("9x9", seed=SEED + 7) as env:
        env.reset()
        for action in (1, 1, 2, 4):  # another maze, left mid-episode
            env.step(action)
        reused = make_episode("9x9", SEED, 20, env=env)
    assert fresh.keys() == reused.keys()
    for key in fresh:
        assert np.array_equal(fresh[key], reused[key]), key


def test_revisit_episode(tmp_path):
    length = 150
    (path,) = generate_episodes(tmp_path, maze="9x9", episodes=1, length=length, workers=1,
                                seed=7, kind="revisit", progress=False)
    ep = load_episode(path)
    context_len = int(ep["context_len"])
    assert ep["context_len"].shape == () and 20 < context_len < length
    pos, direction = ep["agent_pos"], ep["agent_dir"]
    layout = ep["maze_layout"][0]
    assert cell_of(pos[-1], layout) == cell_of(pos[0], layout)  # back at the start cell
    recall = recall_distance(pos, direction, context_len)
    assert recall.shape == (length + 1 - context_len,)
    # The closing look-around shows views of the opening one, ~100+ frames earlier.
    assert (recall[-15:] >= 0).all() and recall[-1] > length // 2
    past = recall_distance(pos, direction, context_len, within="past")
    assert (past[recall >= 0] <= recall[recall >= 0]).all()
    # Dead reckoning (worldmodel.odometry) follows the real agent out and back from its actions alone
    poses, actions = episode_poses(ep), actions_to_index(ep["action"])
    track = Odometry(poses[1], poses[0], layout)
    est = np.stack([track.step(a) for a in actions[2:]])
    off = np.linalg.norm(est[:, :2] - poses[2:, :2], axis=1)
    turned = np.degrees(np.abs(np.angle((est[:, 2] + 1j * est[:, 3]) / (poses[2:, 2] + 1j * poses[2:, 3]))))
    assert off.max() < 0.5 and turned.max() < 5, (off.max(), turned.max())
    assert cell_of(est[-1, :2], layout) == cell_of(pos[0], layout)


def test_reasoning_episode(tmp_path):
    length = 60
    (path,) = generate_episodes(tmp_path, maze="9x9", episodes=1, length=length, workers=1,
                                seed=8, kind="reasoning", progress=False)
    ep = load_episode(path)
    assert int(ep["context_len"]) == round(0.72 * (length + 1))
    assert len(ep["image"]) == length + 1


def test_recall_distance_synthetic():
    # Still for 3 frames, away for 3, back at the start facing the same way, then turned 90.
    pos = np.array([[0.5, 0.5]] * 3 + [[3.5, 0.5]] * 3 + [[0.6, 0.5], [0.6, 0.5]])
    dirs = np.array([[1.0, 0.0]] * 7 + [[0.0, 1.0]])
    assert recall_distance(pos, dirs, context_len=6).tolist() == [4, -1]
    assert recall_distance(pos, dirs, context_len=6, within="past").tolist() == [4, -1]
    assert recall_distance(pos, dirs, context_len=4).tolist() == [1, 2, 4, -1]
    assert recall_distance(pos, dirs, context_len=4, within="past").tolist() == [1, 1, 4, -1]


def test_cli_arguments():
    import argparse

    from worldmodel.data.generate import add_arguments

    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--out", "d", "--episodes", "3", "--kind", "revisit", "--policy", "random"])
    assert (args.out, args.episodes, args.kind, args.policy) == ("d", 3, "revisit", "random")
    assert args.maze == "9x9" and args.length is None and args.seed == 0
