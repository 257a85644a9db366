"""Bad input at the public edges (issue 19): every case is a ValueError (or the documented error)
that says what was expected, raised before anything changes -- the World then makes the same
next frames as one that never saw the call (ARCHITECTURE.md, invariant 6). Tiny random models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import randomized
from safetensors.torch import load_file, save_file

from worldmodel import cli
from worldmodel.app.main import exposure_warning
from worldmodel.data import episodes
from worldmodel.diffusion import DiffusionSampler, FlowMatching
from worldmodel.world import MAX_EXTRA_BYTES, World, load_codec, load_model, load_world

T = 4
rng = np.random.default_rng(0)
FRAMES = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)
ACTIONS = np.array([0, 1, 2, 1])
POSES = np.array([[1.5, 1.5, 1, 0], [1.7, 1.5, 1, 0], [1.7, 1.5, 0.95, 0.31], [1.9, 1.6, 0.95, 0.31]],
                 np.float32)
LAYOUT = np.ones((9, 9), np.uint8)
LAYOUT[3, 2:7] = 0
PLAYED = (1, 4)  # actions taken after reset, before the bad call
AFTER = ((5, [2.2, 1.8, 0.9, 0.4]), (2, None))  # calls after it, compared with a reference


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is ~50x faster than two fighting over a loaded machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["posed", "plain"])
def model(request):
    """A pose-conditioned model with a (small) pose-keyed memory, and one without poses."""
    if request.param == "posed":
        return randomized("ours", pose_cond=True, pose_memory=True, memory_cells=4, memory_headings=4)
    return randomized("ours")


_PLAYED: dict = {}


def played(model, more: int = 0) -> World:
    """A world reset on the context, then PLAYED (and `more` further steps): made once per model,
    then restored from its snapshot (restore's round trip is bit-identical: test_model)."""
    key = (id(model), more)
    if key not in _PLAYED:
        world = World(model, steps=1, seed=0)
        world.reset(FRAMES, ACTIONS, POSES, LAYOUT)
        for a in PLAYED + (3,) * more:
            world.step(a)
        _PLAYED[key] = world.snapshot()
    world = World(model, steps=1, seed=0)
    world.restore(_PLAYED[key])
    return world


def future(world: World) -> list:
    """What a world does next: frames, poses and frame counts of a few more steps."""
    out = [world.frames_seen, world.pose, world.layout]
    for a, pose in AFTER:
        out += [world.step(a, pose=pose), world.pose, world.frames_seen]
    return out


@pytest.fixture(scope="module")
def reference(model):
    world = World(model, steps=1, seed=0)  # played the long way
    world.reset(FRAMES, ACTIONS, POSES, LAYOUT)
    for a in PLAYED:
        world.step(a)
    return future(world)


def assert_unchanged(world: World, reference: list) -> None:
    for got, want in zip(future(world), reference, strict=True):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)


def refused(world, call, match, reference, error=ValueError):
    with pytest.raises(error, match=match):
        call(world)
    assert_unchanged(world, reference)


# -- reset ---------------------------------------------------------------------------------------
def _reset(frames=FRAMES, actions=ACTIONS, poses=POSES, layout=LAYOUT):
    return lambda w: w.reset(frames, actions, poses, layout)


BAD_RESETS = {
    "frames float": (_reset(frames=FRAMES.astype(np.float32)), "uint8 of shape"),
    "frames int64": (_reset(frames=FRAMES.astype(np.int64)), "uint8 of shape"),
    "frames 3-D": (_reset(frames=FRAMES[..., 0]), r"\(T, 64, 64, 3\)"),
    "frames 5-D": (_reset(frames=FRAMES[None]), r"\(T, 64, 64, 3\)"),
    "frames small": (_reset(frames=FRAMES[:, :32, :32]), r"got uint8 \(4, 32, 32, 3\)"),
    "frames rgba": (_reset(frames=np.concatenate([FRAMES, FRAMES[..., :1]], -1)), "uint8 of shape"),
    "frames empty": (_reset(frames=FRAMES[:0], actions=ACTIONS[:0], poses=POSES[:0]), "T >= 1"),
    "frames string": (_reset(frames="frames.npz"), "uint8 of shape"),
    "frames None": (_reset(frames=None), "uint8 of shape"),
    "frames bool": (_reset(frames=FRAMES > 9), "uint8 of shape"),
    "frames ragged": (_reset(frames=[FRAMES[0], FRAMES[0, :3]]), "context_frames"),
    "action 6": (_reset(actions=[0, 1, 6, 1]), "out of range"),
    "action -1": (_reset(actions=[0, -1, 2, 1]), "out of range"),
    "actions short": (_reset(actions=ACTIONS[:3]), r"shape \(4,\)"),
    "actions float": (_reset(actions=[0, 1.5, 2, 1]), "context_actions"),
    "actions string": (_reset(actions="wasd"), "context_actions"),
    "actions None": (_reset(actions=None), "context_actions"),
    "actions 2-hot": (_reset(actions=np.eye(6)[[0, 1, 2, 3]] + np.eye(6)[[1, 1, 1, 1]]), "one-hot"),
    "actions width 5": (_reset(actions=np.eye(5)[[0, 1, 2, 3]]), "context_actions"),
    "pose inf": (_reset(poses=np.where(np.arange(4)[:, None] == 2, np.inf, POSES)), "finite"),
    "pose -inf": (_reset(poses=np.where(np.eye(4, dtype=bool), -np.inf, POSES)), "finite"),
    "pose huge": (_reset(poses=POSES * 1e30), "finite numbers"),
    "poses (T, 3)": (_reset(poses=POSES[:, :3]), r"shape \(4, 4\)"),
    "poses (T-1, 4)": (_reset(poses=POSES[1:]), r"shape \(4, 4\)"),
    "poses 3-D": (_reset(poses=POSES[None]), r"shape \(4, 4\)"),
    "poses strings": (_reset(poses=[["a", "b", "c", "d"]] * 4), "poses of shape"),
    "poses dict": (_reset(poses={"x": 1}), "poses of shape"),
    "layout flat": (_reset(layout=LAYOUT.reshape(-1)), "2-D grid"),
    "layout string": (_reset(layout="#####\n#...#"), "2-D grid"),
    "layout 3-D": (_reset(layout=LAYOUT[None]), "2-D grid"),
    "layout value 2": (_reset(layout=LAYOUT * 2), "0 \\(wall\\) / 1"),
    "layout half": (_reset(layout=LAYOUT * 0.5), "2-D grid"),
    "layout nan": (_reset(layout=np.full((9, 9), np.nan)), "2-D grid"),
    "layout 1x1": (_reset(layout=np.ones((1, 1))), "2..64"),
    "layout 100x100": (_reset(layout=np.ones((100, 100))), "2..64"),
    "layout empty": (_reset(layout=np.ones((0, 0))), "2-D grid"),
    "layout objects": (_reset(layout=np.array([[None, 1], [1, 1]])), "2-D grid"),
}


@pytest.mark.parametrize("case", BAD_RESETS)
def test_bad_reset_changes_nothing(model, reference, case):
    call, match = BAD_RESETS[case]
    refused(played(model), call, match, reference)


def test_refused_first_reset_leaves_no_state(model):
    world = World(model, steps=1)
    with pytest.raises(ValueError, match="finite"):
        world.reset(FRAMES, ACTIONS, np.full((T, 4), np.inf))
    assert world.frames_seen == 0 and world.pose is None and world.layout is None
    with pytest.raises(RuntimeError, match="call reset"):
        world.step(1)


# -- step ----------------------------------------------------------------------------------------
BAD_STEPS = {
    "action 6": ((6, None), "out of range"),
    "action -1": ((-1, None), "out of range"),
    "action 1.5": ((1.5, None), "an int in 0..5"),
    "action float32": ((np.float32(1), None), "an int in 0..5"),
    "action name": (("forward", None), "an int in 0..5"),
    "action None": ((None, None), "an int in 0..5"),
    "action bool": ((True, None), "an int in 0..5"),
    "action 2-hot": (([1, 1, 0, 0, 0, 0], None), "one-hot"),
    "action one-hot 2": (([0, 2, 0, 0, 0, 0], None), "one-hot"),
    "action list": (([1, 2], None), "an int in 0..5"),
    "pose inf": ((1, [np.inf, 2, 1, 0]), "finite"),
    "pose -inf": ((1, [2, 2, 1, -np.inf]), "finite"),
    "pose huge": ((1, [1e30, 2, 1, 0]), "finite numbers"),
    "pose (3,)": ((1, [2, 2, 1]), r"shape \(1, 4\)|\(4,\)"),
    "pose (5,)": ((1, [2, 2, 1, 0, 0]), r"\(4,\)|shape \(1, 4\)"),
    "pose (1, 4)": ((1, [[2, 2, 1, 0]]), r"\(4,\)"),
    "pose scalar": ((1, 2.0), r"\(4,\)"),
    "pose string": ((1, "north"), r"\(4,\)"),
    "pose strings": ((1, ["a", 2, 1, 0]), "pose"),
    "pose bad action": ((7, [2, 2, 1, 0]), "out of range"),
}


@pytest.mark.parametrize("case", BAD_STEPS)
def test_bad_step_changes_nothing(model, reference, case):
    (action, pose), match = BAD_STEPS[case]
    refused(played(model), lambda w: w.step(action, pose=pose), match, reference)


# -- restore -------------------------------------------------------------------------------------
def _set(key, value):
    return lambda snap: snap | {key: value}


def _drop(key):
    return lambda snap: {k: v for k, v in snap.items() if k != key}


def _poison(key, value=float("nan"), where=0):
    def edit(snap):
        t = snap[key].clone()
        t.view(-1)[where] = value
        return snap | {key: t}
    return edit


BAD_SNAPSHOTS = {
    "no frames_seen": (_drop("meta.frames_seen"), "missing meta.frames_seen"),
    "no last_frame": (_drop("meta.last_frame"), "missing meta.last_frame"),
    "no ssm state": (_drop("state.0.ssm.ssm"), "missing state.0.ssm.ssm"),
    "no kv cache": (_drop("state.1.attn.k"), "missing state.1.attn.k"),
    "no prev frame": (_drop("state.prev"), "missing state.prev"),
    "ssm shape": (lambda s: s | {"state.0.ssm.ssm": s["state.0.ssm.ssm"][:1]}, "state.0.ssm.ssm is"),
    "ssm dtype": (lambda s: s | {"state.0.ssm.ssm": s["state.0.ssm.ssm"].double()}, "torch.float64"),
    "kv shape": (lambda s: s | {"state.0.attn.v": s["state.0.attn.v"][..., :8]}, "state.0.attn.v is"),
    "extra state": (_set("state.9.ssm.ssm", torch.zeros(3)), "unexpected"),
    "nan in ssm": (_poison("state.0.ssm.ssm"), "non-finite"),
    "inf in conv": (_poison("state.1.ssm.conv", float("inf"), 5), "non-finite"),
    "nan in kv": (_poison("state.0.attn.k", float("nan"), 7), "non-finite"),
    "inf in prev": (_poison("state.prev", float("-inf")), "non-finite"),
    "frame counter -1": (_set("state.0.attn.frame", torch.tensor(-1)), "frame count"),
    "frames_seen 0": (_set("meta.frames_seen", torch.tensor(0)), "frames_seen is 0"),
    "frames_seen -5": (_set("meta.frames_seen", torch.tensor(-5)), "frames_seen is -5"),
    "frames_seen float": (_set("meta.frames_seen", torch.tensor(6.0)), "meta.frames_seen is"),
    "frames_seen (2,)": (_set("meta.frames_seen", torch.tensor([6, 6])), "meta.frames_seen is"),
    "last_frame shape": (_set("meta.last_frame", torch.zeros(32, 32, 3, dtype=torch.uint8)), "last_frame is"),
    "last_frame float": (_set("meta.last_frame", torch.zeros(64, 64, 3)), "meta.last_frame is"),
    "rng short": (_set("meta.rng", torch.zeros(3, dtype=torch.uint8)), "meta.rng"),
    "rng float": (_set("meta.rng", torch.zeros(5056)), "meta.rng is"),
    "rng huge": (_set("meta.rng", torch.zeros(1 << 17, dtype=torch.uint8)), "meta.rng is"),
    "odometry (3,)": (_set("meta.odometry", torch.zeros(3, dtype=torch.float64)), "meta.odometry is"),
    "odometry inf": (lambda s: s | {"meta.odometry": torch.tensor([1, 1, 0, np.inf, 0.0]),
                                    "meta.pose": torch.ones(4)}, "non-finite"),
    "odometry ints": (_set("meta.odometry", torch.zeros(5, dtype=torch.int64)), "meta.odometry is"),
    "pose alone": (lambda s: _drop("meta.odometry")(s | {"meta.pose": torch.ones(4)}), "come together"),
    "odometry alone": (lambda s: _drop("meta.pose")(s | {"meta.odometry": torch.zeros(5).double()}),
                       "come together"),
    "pose inf": (lambda s: s | {"meta.odometry": torch.zeros(5).double(),
                                "meta.pose": torch.tensor([np.inf, 1, 1, 0])}, "non-finite"),
    "pose (3,)": (lambda s: s | {"meta.odometry": torch.zeros(5).double(), "meta.pose": torch.ones(3)},
                  "meta.pose is"),
    "layout flat": (_set("meta.layout", torch.ones(81, dtype=torch.uint8)), "meta.layout is"),
    "layout value 3": (_set("meta.layout", torch.full((9, 9), 3, dtype=torch.uint8)), "0 \\(wall\\)"),
    "layout huge": (_set("meta.layout", torch.ones(4096, 4096, dtype=torch.uint8)), "meta.layout is"),
    "layout bfloat16": (_set("meta.layout", torch.ones(9, 9, dtype=torch.bfloat16)), "meta.layout is"),
    "extra 2 MiB": (_set("meta.notes", torch.zeros(MAX_EXTRA_BYTES // 2 + 1, dtype=torch.int16) + 1),
                    "keys beyond the state"),
    "100 extra keys": (lambda s: s | {f"x{i}": torch.zeros(1) for i in range(100)}, "100 keys beyond"),
    "numpy values": (lambda s: {k: v.numpy() for k, v in s.items()}, "dict of tensors"),
    "a list": (lambda s: list(s.values()), "dict of tensors"),
    "None": (lambda s: None, "dict of tensors"),
}


@pytest.mark.parametrize("case", BAD_SNAPSHOTS)
def test_bad_snapshot_changes_nothing(model, reference, case):
    edit, match = BAD_SNAPSHOTS[case]
    world = played(model)
    bad = edit(dict(world.snapshot()))
    other = played(model, more=1)  # a world in another state: restore must not half-apply
    saved = other.snapshot()
    refused(world, lambda w: w.restore(bad), match, reference)
    with pytest.raises(ValueError, match=match):
        other.restore(bad)
    assert all(torch.equal(v, other.snapshot()[k]) for k, v in saved.items())


def test_snapshot_of_another_model_changes_nothing(model, reference):
    bigger = World(randomized("ours", d_model=64, headdim=16), steps=1)
    bigger.reset(FRAMES, ACTIONS)
    refused(played(model), lambda w: w.restore(bigger.snapshot()), "does not match this model", reference)


# -- load_state: files, bounded before they are read ---------------------------------------------
def _file(kind, world, path):
    if kind == "missing":
        return path / "nowhere.safetensors"
    if kind == "empty":
        path.joinpath("s.safetensors").write_bytes(b"")
    elif kind == "garbage":
        path.joinpath("s.safetensors").write_bytes(os.urandom(4096))
    elif kind == "huge header":
        path.joinpath("s.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    elif kind == "bad json":
        path.joinpath("s.safetensors").write_bytes((5).to_bytes(8, "little") + b"{oops")
    else:
        world.save_state(path / "s.safetensors")
        data = (path / "s.safetensors").read_bytes()
        if kind == "truncated":
            path.joinpath("s.safetensors").write_bytes(data[: len(data) // 2])
        elif kind == "1 GiB extra":  # a header that claims a 1 GiB tensor: refused before reading
            snap = load_file(str(path / "s.safetensors"))
            save_file(snap | {"meta.big": torch.zeros(8)}, str(path / "s.safetensors"))
            data = (path / "s.safetensors").read_bytes()
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + n])
            header["meta.big"]["shape"] = [1 << 28]
            header = json.dumps(header).encode()
            data = len(header).to_bytes(8, "little") + header + data[8 + n:]
            path.joinpath("s.safetensors").write_bytes(data)
        elif kind == "no frames_seen":
            snap = load_file(str(path / "s.safetensors"))
            save_file({k: v for k, v in snap.items() if k != "meta.frames_seen"}, str(path / "s.safetensors"))
    return path / "s.safetensors"


FILES = {"missing": "No such file", "empty": "too short", "garbage": "header", "huge header": "header claims",
         "bad json": "unreadable safetensors header", "truncated": "not a readable world snapshot",
         "1 GiB extra": "keys beyond the state", "no frames_seen": "missing meta.frames_seen"}


@pytest.mark.parametrize("kind", FILES)
def test_bad_snapshot_file_changes_nothing(model, reference, kind, tmp_path):
    world = played(model)
    path = _file(kind, played(model), tmp_path)
    with pytest.raises(ValueError, match=FILES[kind]) as e:
        world.load_state(path)
    assert str(tmp_path) not in str(e.value) and path.name in str(e.value)
    assert_unchanged(world, reference)


# -- constructors, loaders, configs ---------------------------------------------------------------
BAD_ARGS = {
    "steps 0": (lambda m: World(m, steps=0), "steps as an int in 1..1000"),
    "steps -1": (lambda m: World(m, steps=-1), "steps as an int"),
    "steps 2.5": (lambda m: World(m, steps=2.5), "steps as an int"),
    "steps '4'": (lambda m: World(m, steps="4"), "steps as an int"),
    "steps True": (lambda m: World(m, steps=True), "steps as an int"),
    "steps 10**6": (lambda m: World(m, steps=10**6), "steps as an int"),
    "commit_sigma -0.1": (lambda m: World(m, commit_sigma=-0.1), "commit_sigma"),
    "commit_sigma nan": (lambda m: World(m, commit_sigma=float("nan")), "commit_sigma"),
    "commit_sigma '0'": (lambda m: World(m, commit_sigma="0"), "commit_sigma"),
    "seed string": (lambda m: World(m, seed="x"), "seed as an int"),
    "prefill_chunk 0": (lambda m: World(m, prefill_chunk=0), "prefill_chunk as an int >= 1"),
    "sampler steps 0": (lambda m: DiffusionSampler(0), "steps as an int"),
    "training prefix_prob 1.5": (lambda m: FlowMatching(prefix_prob=1.5), r"prefix_prob in \[0, 1\]"),
    "training gap_prob nan": (lambda m: FlowMatching(gap_prob=float("nan")), r"gap_prob in \[0, 1\]"),
    "load_world steps 0": (lambda m: load_world("tiny", device="cpu", steps=0), "steps as an int"),
    "load_world steps -3": (lambda m: load_world("tiny", device="cpu", steps=-3), "steps as an int"),
    "unknown device": (lambda m: World(m, device="gpu"), "unknown device 'gpu'"),
    "unknown preset": (lambda m: load_model("huge"), "neither a checkpoint folder nor a preset"),
}
if not torch.cuda.is_available():
    BAD_ARGS["cuda without CUDA"] = (lambda m: World(m, device="cuda"), "no CUDA device")
    BAD_ARGS["load_world cuda"] = (lambda m: load_world("tiny", device="cuda:0"), "no CUDA device")


@pytest.mark.parametrize("case", BAD_ARGS)
def test_bad_arguments(case):
    call, match = BAD_ARGS[case]
    with pytest.raises(ValueError, match=match):
        call(randomized("ours"))


def _checkpoint(tmp_path, edit_config=None, edit_weights=None):
    path = tmp_path / "ckpt"
    randomized("ours").save_pretrained(path)
    if edit_config:
        cfg = json.loads((path / "config.json").read_text())
        edit_config(cfg["config"])
        (path / "config.json").write_text(json.dumps(cfg))
    if edit_weights:
        weights = path / "diffusion_pytorch_model.safetensors"
        save_file(edit_weights(load_file(str(weights))), str(weights))
    return path


CHECKPOINTS = {
    "config 3 layers, weights 2": (lambda c: c.update(n_layers=3), None,
                                   "missing from the weights 20: blocks.2"),
    "config 1 layer, weights 2": (lambda c: c.update(n_layers=1), None, "not in the config's model"),
    "weight of another shape": (None, lambda w: w | {"out.bias": torch.zeros(5)}, "out.bias|shape"),
    "weight missing": (None, lambda w: {k: v for k, v in w.items() if k != "pos_embed"}, "pos_embed"),
    "frame_size '8'": (lambda c: c.update(frame_size="8"), None, "frame_size must be an int >= 1, got '8'"),
    "n_heads 0": (lambda c: c.update(n_heads=0), None, "n_heads must be an int >= 1"),
    "unknown config key": (lambda c: c.update(warp_drive=True), None, "unknown key"),
    "variant typo": (lambda c: c.update(variant="ourz"), None, "unknown variant"),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_mismatched_checkpoint(case, tmp_path):
    edit_config, edit_weights, match = CHECKPOINTS[case]
    path = _checkpoint(tmp_path, edit_config, edit_weights)
    with pytest.raises(ValueError, match=match) as e:
        load_model(path)
    assert "does not hold a matching worldmodel checkpoint" in str(e.value)


def test_truncated_weights_and_autoencoder(tmp_path):
    path = _checkpoint(tmp_path)
    weights = path / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="matching worldmodel checkpoint"):
        load_model(path)
    vae = path / "vae"
    shutil.copytree(_tiny_vae(tmp_path), vae)
    codec_weights = vae / "diffusion_pytorch_model.safetensors"
    codec_weights.write_bytes(codec_weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="autoencoder in .* is unreadable"):
        load_codec(path)


def _tiny_vae(tmp_path):
    from diffusers import AutoencoderKL

    out = tmp_path / "tiny_vae"
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2, sample_size=8)
    vae.save_pretrained(out)
    return out


# -- what valid input still gets ------------------------------------------------------------------
def test_negative_stride_frames_and_unknown_poses_are_accepted(model):
    a, b = World(model, steps=1), World(model, steps=1)
    flipped = np.ascontiguousarray(FRAMES[:, ::-1])
    assert np.array_equal(a.reset(FRAMES[:, ::-1], ACTIONS, POSES, LAYOUT),
                          b.reset(flipped, ACTIONS, POSES, LAYOUT))
    assert np.array_equal(a.step(1), b.step(1))
    unknown = POSES.copy()
    unknown[-1] = np.nan  # NaN = unknown, as episode_poses writes for frames without a pose
    a.reset(FRAMES, ACTIONS, unknown, LAYOUT.astype(bool))
    assert a.pose is None and np.isfinite(a.step(1, pose=[np.nan] * 4)).all()


def test_causal_snapshot_round_trip():
    world = World(randomized("causal"), steps=1)
    world.reset(FRAMES, ACTIONS)
    world.step(1)
    snap = world.snapshot()
    after = world.step(2)
    world.restore(snap)
    assert np.array_equal(world.step(2), after)
    with pytest.raises(ValueError, match="frames cached"):
        world.restore(snap | {"meta.frames_seen": torch.tensor(2)})


# -- episode files: bounded uploads ---------------------------------------------------------------
def _episode(n=6):
    return {"image": np.zeros((n, 64, 64, 3), np.uint8), "action": episodes.index_to_onehot([1] * (n - 1)),
            "agent_pos": np.ones((n, 2), np.float32),
            "agent_dir": np.tile([1.0, 0.0], (n, 1)).astype(np.float32)}


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _claiming(path, key, shape, dtype=np.uint8, **arrays):
    """An .npz whose member `key` claims `shape` in its .npy header but holds no data: what a
    zip bomb looks like to a reader that checks headers first (1.2 MB can unpack to gigabytes)."""
    import io
    import zipfile

    _npz(path, **arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{key}.npy", header.getvalue())
    return path


def _bytes(path, data):
    path.write_bytes(data)
    return path


EPISODES = {
    "100,000 frames": (lambda p: _claiming(p, "image", (100_000, 64, 64, 3),
                                           action=np.zeros((100_000, 6), np.uint8)),
                       "100000 frames, more than the 10000"),
    "bytes": (lambda p: _claiming(p, "image", (6, 8192, 8192, 3), action=_episode()["action"]),
              "MiB of arrays or file, more than the 256"),
    "not a zip": (lambda p: _bytes(p, b"PK\x03\x04 nothing"), "unreadable episode file"),
    "empty": (lambda p: _bytes(p, b""), "unreadable episode file"),
    "no image": (lambda p: _npz(p, action=np.zeros((3, 6), np.uint8)), r"missing key\(s\) \['image'\]"),
    "float image": (lambda p: _npz(p, **_episode() | {"image": np.zeros((6, 64, 64, 3))}), "must be uint8"),
    "frame counts": (lambda p: _npz(p, **_episode() | {"agent_pos": np.ones((5, 2), np.float32)}),
                     "5 frames"),
    "inf pose": (lambda p: _npz(p, **_episode() | {"agent_pos": np.full((6, 2), np.inf, np.float32)}),
                 "infinite"),
    "strings": (lambda p: _npz(p, **_episode() | {"image": np.array(["x"] * 6)}), "image"),
    "object member": (lambda p: _claiming(p, "image", (6, 64, 64, 3), object, action=_episode()["action"]),
                      "unreadable|object"),
}


@pytest.mark.parametrize("case", EPISODES)
def test_bad_episode_upload(case, tmp_path):
    make, match = EPISODES[case]
    path = make(tmp_path / "upload.npz")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match) as e:
        episodes.load_episode(path, max_frames=episodes.MAX_UPLOAD_FRAMES,
                              max_bytes=episodes.MAX_UPLOAD_BYTES, name="upload.npz")
    assert time.perf_counter() - t0 < 5 and str(tmp_path) not in str(e.value)
    assert str(e.value).startswith("upload.npz")


def test_episode_with_inf_pose_cannot_seed_a_world(model, reference):
    poses = POSES.copy()
    poses[1, 0] = np.inf  # what an uploaded episode with an inf pose gives World.reset
    refused(played(model), _reset(poses=poses), "finite", reference)


# -- the command line -----------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_serving_beyond_this_machine_is_said(host):
    assert "reachable from other machines" in exposure_warning(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", None])
def test_local_serving_says_nothing(host):
    assert exposure_warning(host) is None


def test_interrupt_is_one_line_not_a_traceback(monkeypatch, capsys):
    def run(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "fake_command", SimpleNamespace(add_arguments=lambda p: p, run=run))
    monkeypatch.setattr(cli, "COMMANDS", {"fake": ("fake_command", "add_arguments", "run", "a test")})
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main(["fake"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "worldmodel: interrupted\n"
