"""The invariants of ARCHITECTURE.md on the network and the streaming engine (CPU, tiny sizes)."""

import json

import numpy as np
import pytest
import torch
from helpers import clip, randomized

from worldmodel import load_world
from worldmodel.config import VARIANTS, get_preset
from worldmodel.diffusion import DiffusionSampler, FlowMatching
from worldmodel.model import WorldModel
from worldmodel.ssm import BlockMamba2
from worldmodel.world import World


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_equals_parallel(variant):
    model = randomized(variant)
    x, sigma, action = clip()
    with torch.no_grad():
        parallel, _ = model(x, sigma, action)
        state, outs = None, []
        for t in range(x.shape[1]):
            out, state = model(x[:, t:t + 1], sigma[:, t:t + 1], action[:, t:t + 1], state)
            outs.append(out)
        # and in uneven chunks (what World.reset's chunked prefill does)
        state2, chunks = None, []
        for sl in (slice(0, 3), slice(3, 4), slice(4, 7)):
            out, state2 = model(x[:, sl], sigma[:, sl], action[:, sl], state2)
            chunks.append(out)
    assert parallel.abs().mean() > 1e-2  # not trivially zero
    torch.testing.assert_close(torch.cat(outs, 1), parallel, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(chunks, 1), parallel, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant):
    model = randomized(variant)
    x, sigma, action = clip(T=6)
    t = 3
    x2, s2, a2 = x.clone(), sigma.clone(), action.clone()
    x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:])
    s2[:, t + 1:] = torch.rand_like(s2[:, t + 1:])
    a2[:, t + 1:] = (a2[:, t + 1:] + 1) % 6
    with torch.no_grad():
        y1, _ = model(x, sigma, action)
        y2, _ = model(x2, s2, a2)
    torch.testing.assert_close(y1[:, :t + 1], y2[:, :t + 1], atol=1e-6, rtol=0)
    assert (y1[:, t + 1:] - y2[:, t + 1:]).abs().max() > 1e-3  # the later frames did see the change


@pytest.mark.parametrize("block", [(1, 1), (2, 2), (2, 4), (4, 4)])
def test_ssm_block_independence(block):
    torch.manual_seed(0)
    G, T, d = 4, 5, 16
    layer = BlockMamba2(d, block, G, d_state=8, headdim=8, chunk_size=8).eval()
    x = torch.randn(1, T, G, G, d)
    x2 = x.clone()
    t, r, c = 2, 1, 2  # perturb one token
    x2[0, t, r, c] += 1.0
    with torch.no_grad():
        y1, _ = layer(x)
        y2, _ = layer(x2)
    changed = (y1 - y2).abs().amax(dim=-1)[0] > 1e-6  # (T, G, G)
    bh, bw = block
    in_block = torch.zeros(G, G, dtype=torch.bool)
    in_block[r // bh * bh:(r // bh + 1) * bh, c // bw * bw:(c // bw + 1) * bw] = True
    assert not changed[:, ~in_block].any(), "a token outside the perturbed block changed"
    assert not changed[:t].any(), "an earlier frame changed"
    assert changed[t + 1:, in_block].all(), "later frames of the same block should see the change"


def test_state_is_constant_size():
    world = World(randomized("ours"), steps=1)
    rng = np.random.default_rng(0)
    world.reset(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8), rng.integers(0, 6, 4))
    sizes = {}
    for n in range(1, 1001):
        world.step(int(rng.integers(6)))
        if n in (10, 1000):
            sizes[n] = world.state_bytes()
    assert sizes[10] == sizes[1000] > 0
    assert world.frames_seen == 1004


def test_causal_baseline_state_grows():
    world = World(randomized("causal"), steps=1)
    world.reset(np.zeros((2, 64, 64, 3), np.uint8), [0, 1])
    before = world.state_bytes()
    world.step(1)
    assert world.state_bytes() > before


def test_world_step_equals_parallel_forward():
    """World.step's denoising passes see exactly what the parallel forward sees for that frame."""
    model = randomized("ours")
    world = World(model, steps=2, seed=3)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, 6, 5)
    world.reset(frames, actions)
    gen_state = world.generator.get_state()
    out = world.step(2)
    # replay: clean context + the sampler's frame at its noise levels, all in one parallel call
    g = torch.Generator().set_state(gen_state)
    x = torch.randn((1, 1, 64, 64, 3), generator=g)
    ctx = torch.from_numpy(frames).float()[None] / 127.5 - 1
    a = torch.tensor(np.append(actions, 2))[None]
    sigmas = DiffusionSampler(2).sigmas  # 1, 0.5, 0: two Euler steps
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            sig = torch.cat([torch.zeros(1, 5), s.reshape(1, 1)], 1)
            x0, _ = model(torch.cat([ctx, x], 1), sig, a)
            x = x + (s_next - s) * FlowMatching.velocity(x, x0[:, -1:], s)
    expected = ((x[0, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_next_frame_is_conditioned_on_the_frame_shown():
    """After each step the previous-frame input is the frame step() returned, encoded as a real
    frame is, not the sampler's own latent (fed back, that drifts off the autoencoder's latents)."""
    from worldmodel.vae import FrameCodec, build_autoencoder

    torch.manual_seed(0)
    codec = FrameCodec(build_autoencoder("tiny"))
    world = World(randomized("ours", frame_size=8, in_channels=4, patch_size=2), steps=1, seed=0, codec=codec)
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    world.reset(frames, [0, 1, 3])
    for action in (1, 4):
        out = world.step(action)
        snap = world.snapshot()
        assert np.array_equal(snap["meta.last_frame"].numpy(), out)
        torch.testing.assert_close(snap["state.prev"][0, 0], world.encode(torch.from_numpy(out)))


def test_compiled_step_matches_eager():
    """World(compile=True) runs step()'s model pass, decode and re-encode through torch.compile with
    the weights frozen in: the same frames and state as eager, up to float rounding, with and
    without a pose (an unknown pose goes in as NaN, which the model reads as None)."""
    from worldmodel.vae import FrameCodec, build_autoencoder

    torch.manual_seed(0)
    codec = FrameCodec(build_autoencoder("tiny"))
    model = randomized("ours", frame_size=8, in_channels=4, patch_size=2, pose_cond=True, pose_memory=True)
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    poses = np.array([[2.5, 3.5, 1.0, 0.0]] * 3, np.float32)
    eager, compiled = (World(model, steps=1, seed=0, codec=codec, compile=c) for c in (False, True))
    for world in (eager, compiled):
        world.reset(frames, [0, 1, 3], context_poses=poses)
    for action, pose in ((1, None), (4, np.array([3.0, 3.5, 0.0, 1.0], np.float32)), (2, None)):
        a, b = eager.step(action, pose), compiled.step(action, pose)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    sa, sb = eager.snapshot(), compiled.snapshot()
    for key in sa:
        if sa[key].is_floating_point():
            torch.testing.assert_close(sb[key], sa[key], atol=1e-3, rtol=1e-3, equal_nan=True, msg=key)
    with pytest.raises(ValueError, match="compile"):
        World(model, compile="yes")


def test_save_load_round_trip(tmp_path):
    model = randomized("ours")
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "diffusion_pytorch_model.safetensors").exists()
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    loaded = WorldModel.from_pretrained(tmp_path / "ckpt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    outs = []
    for source in (model, loaded):
        world = World(source, steps=2, seed=7)
        world.reset(frames, [0, 1, 3])
        outs.append([world.step(a) for a in (1, 4, 5)])
    # bitwise-equal weights; the frames may differ by one level where a value rounds at .5
    assert np.abs(np.stack(outs[0]).astype(int) - np.stack(outs[1])).max() <= 1
    world = load_world(tmp_path / "ckpt", device="cpu", steps=2, seed=7)
    world.reset(frames, [0, 1, 3])
    assert np.abs(world.step(1).astype(int) - outs[0][0]).max() <= 1


def test_snapshot_restore_continues_identically(tmp_path):
    world = World(randomized("ours"), steps=1, seed=1)
    world.reset(np.zeros((3, 64, 64, 3), np.uint8), [0, 1, 1])
    world.step(1)
    world.save_state(tmp_path / "s.safetensors")
    a = [world.step(x) for x in (2, 3, 1)]
    world.load_state(tmp_path / "s.safetensors")
    b = [world.step(x) for x in (2, 3, 1)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_bad_input_raises_value_error(tmp_path):
    world = World(randomized("ours"), steps=1)
    good = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        world.reset(good.astype(np.float32), [0, 1, 2])
    with pytest.raises(ValueError, match=r"\(T, 64, 64, 3\)"):
        world.reset(np.zeros((3, 32, 32, 3), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="context_actions"):
        world.reset(good, [0, 1])
    with pytest.raises(ValueError, match="0..5"):
        world.reset(good, [0, 1, 6])
    world.reset(good, np.eye(6, dtype=np.uint8)[[0, 1, 2]])  # one-hot rows are fine
    for bad in (6, -1, 1.5, "w", [1, 1, 0, 0, 0, 0]):
        with pytest.raises(ValueError, match="action"):
            world.step(bad)
    world.step(np.eye(6, dtype=int)[5])
    # a snapshot of another model
    other = World(randomized("mamba2"), steps=1)
    other.reset(good, [0, 1, 2])
    with pytest.raises(ValueError, match="does not match"):
        world.restore(other.snapshot())
    (tmp_path / "junk.safetensors").write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="not a readable world snapshot"):
        world.load_state(tmp_path / "junk.safetensors")
    # a checkpoint whose config does not match its weights
    randomized("ours").save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["config"]["d_model"] = 48
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="matching worldmodel checkpoint"):
        load_world(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="preset"):
        load_world("no-such-preset")
    with pytest.raises(ValueError, match="latents but has no autoencoder"):
        load_world("tiny-latent")  # a latent preset alone cannot take or return frames
    with pytest.raises(ValueError, match="known presets"):
        get_preset("no-such-preset")


def test_tiny_loss_falls_on_moving_pattern():
    """A moving sinusoid whose speed is set by the action: learnable in a few hundred tiny steps."""
    torch.manual_seed(0)
    model = WorldModel(get_preset("tiny").model.to_dict())
    flow = FlowMatching()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")

    def batch(g):
        a = torch.randint(0, 6, (4, 8), generator=g)
        phase = torch.cumsum(a.float() * 3, dim=1) + torch.rand(4, 1, generator=g) * 64
        img = torch.sin((xx[None, None] + phase[..., None, None]) / 5) * 0.5 + 0.3 * torch.cos(yy / 7)
        return torch.stack([img, -img, img * 0.5], dim=-1), a

    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(200):
        x, a = batch(g)
        loss = flow.loss(model, x, a, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.85 * np.mean(losses[:10])


def test_fresh_model_repeats_the_previous_frame_and_streams_it_clean():
    """The network predicts the change from the previous clean frame: with a zero output layer it
    predicts that frame, and World.step conditions the next frame on the clean frame it returned."""
    model = randomized("ours")
    torch.nn.init.zeros_(model.out.weight)
    torch.nn.init.zeros_(model.out.bias)
    world = World(model, steps=2, seed=0)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(world.reset(frames, rng.integers(0, 6, 4)), frames[-1])
    assert np.array_equal(world.step(1), frames[-1])  # nothing learned: nothing moves
    model.out.bias.data.fill_(0.1)
    out = world.step(1)
    assert np.abs(out.astype(int) - np.clip(frames[-1] + 12.75, 0, 255).round()).max() <= 1
    committed = world.snapshot()["state.prev"][0, 0]
    torch.testing.assert_close(committed, torch.from_numpy(out).float() / 127.5 - 1, atol=1 / 127, rtol=0)


def test_configs_of_older_checkpoints_load():
    """Older config.json files hold action_dim: 0 (a removed option): dropped on load, other values
    refused."""
    cfg = get_preset("tiny").model.to_dict()
    assert WorldModel(cfg | {"action_dim": 0}).cfg == WorldModel(cfg).cfg
    assert "action_dim" not in WorldModel(cfg | {"action_dim": 0}).config["config"]
    with pytest.raises(ValueError, match="action_dim=2 is no longer supported"):
        WorldModel(cfg | {"action_dim": 2})


def test_fold_commit_keeps_the_last_denoising_pass_as_the_commit():
    """With fold_commit, World.step runs `steps` model passes instead of steps + 1 and its state is
    that of the last denoising pass (the frame seen at level 1/steps); the first frame is the same."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, 6, 5)
    calls, firsts, worlds = {}, {}, {}
    for fold in (False, True):
        world = worlds[fold] = World(randomized("ours"), steps=2, seed=4, fold_commit=fold)
        world.reset(frames, actions)
        calls[fold] = 0
        handle = world.model.register_forward_hook(lambda *_, f=fold: calls.__setitem__(f, calls[f] + 1))
        firsts[fold] = world.step(3)
        handle.remove()
    assert calls == {False: 3, True: 2}
    assert np.array_equal(firsts[False], firsts[True])
    # the folded state: the last pass (x at 0.5 after one Euler step) from the state before the step
    world = World(randomized("ours"), steps=2, seed=4)
    world.reset(frames, actions)
    before, g = world._state, torch.Generator().set_state(world.generator.get_state())
    model, a = world.model, torch.tensor([[3]])
    with torch.no_grad():
        x = torch.randn((1, 1, 64, 64, 3), generator=g)
        x0, _ = model(x, torch.ones(1, 1), a, before)
        x = x + (0.5 - 1.0) * FlowMatching.velocity(x, x0, torch.tensor(1.0))
        _, expected = model(x, torch.full((1, 1), 0.5), a, before)
    got = worlds[True].snapshot()
    compared = 0
    for key in [k for k in got if k.startswith("state.") and k != "state.prev"]:
        ref = expected
        for part in key[len("state."):].split("."):
            ref = ref[part]
        torch.testing.assert_close(got[key], ref)
        compared += 1
    assert compared >= 4  # every layer's SSM and attention state
    # at 1 step the folded state is that of the only pass, at pure noise: one pass per frame
    world = World(randomized("ours"), steps=1, seed=4, fold_commit=True)
    world.reset(frames, actions)
    counted = []
    handle = world.model.register_forward_hook(lambda *_: counted.append(1))
    world.step(3)
    handle.remove()
    assert len(counted) == 1

