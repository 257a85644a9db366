"""Pose conditioning (ModelConfig.pose_cond): the agent's (x, y, dx, dy) per frame as a further
condition, optional per frame, added to a trained model without changing it, and carried by
World / rollout the same way in streaming and in parallel."""

import numpy as np
import pytest
import torch
from helpers import clip, randomized

from worldmodel.config import get_preset
from worldmodel.diffusion import FlowMatching
from worldmodel.eval.rollout import rollout
from worldmodel.model import PoseMemory, WorldModel
from worldmodel.poses import DeadReckoning, NoPoses, TruePoses
from worldmodel.train import warm_start
from worldmodel.world import World

# the tiny preset works on 8x8x3 pixel patches: a coarse map keeps its memory state small (and fast)
SMALL_MEMORY = dict(pose_cond=True, pose_memory=True, memory_cells=10, memory_headings=4)
BLEND = SMALL_MEMORY | dict(recall_blend=1.0)  # the memory's read blended into the prediction
FINE = SMALL_MEMORY | dict(memory_cells=5, memory_resolution=2)  # two lattice points per cell


def test_pose_changes_the_prediction_and_unknown_pose_is_no_pose():
    model = randomized(pose_cond=True)
    x, sigma, a, pose = clip(T=6, pose=True)
    with torch.no_grad():
        with_pose, _ = model(x, sigma, a, pose=pose)
        none, _ = model(x, sigma, a)
        nan, _ = model(x, sigma, a, pose=torch.full_like(pose, float("nan")))
        moved = pose.clone()
        moved[:, 3, 0] += 1.0  # one frame one cell further along x
        shifted, _ = model(x, sigma, a, pose=moved)
    torch.testing.assert_close(nan, none)
    assert (with_pose - none).abs().max() > 1e-3
    # causal: a pose only affects its own frame and later ones
    torch.testing.assert_close(shifted[:, :3], with_pose[:, :3])
    assert (shifted[:, 3] - with_pose[:, 3]).abs().max() > 1e-4


@pytest.mark.parametrize("config", [dict(pose_cond=True), SMALL_MEMORY, BLEND, FINE],
                         ids=["pose", "pose_memory", "recall_blend", "memory_resolution"])
def test_streaming_with_poses_equals_parallel(config):
    model = randomized("ours", **config)
    x, sigma, a, pose = clip(T=7, pose=True)
    with torch.no_grad():
        parallel, _ = model(x, sigma, a, pose=pose)
        state, outs = None, []
        for t in range(7):
            out, state = model(x[:, t:t + 1], sigma[:, t:t + 1], a[:, t:t + 1], state, pose=pose[:, t:t + 1])
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), parallel, atol=2e-5, rtol=1e-4)


def test_warm_start_adds_pose_without_changing_the_model(tmp_path):
    source = randomized()
    source.save_pretrained(tmp_path / "src")
    torch.manual_seed(0)
    posed = WorldModel(get_preset("tiny").model.to_dict() | {"pose_cond": True})
    assert warm_start(posed, tmp_path / "src") == []
    x, sigma, a, pose = clip(T=6, pose=True)
    with torch.no_grad():
        torch.testing.assert_close(posed.eval()(x, sigma, a, pose=pose)[0], source(x, sigma, a)[0])
    # and the loss trains the new embedding (its zero output layer gets a gradient)
    posed.train()
    g = torch.Generator().manual_seed(0)
    FlowMatching(pose_drop=0.5).loss(posed, x.clamp(-1, 1), a, generator=g, pose=pose).backward()
    assert posed.pose_embed.mlp[2].weight.grad.abs().sum() > 0


def test_world_and_rollout_take_poses():
    model = randomized(pose_cond=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    actions = np.array([0, 1, 1, 2, 1])
    poses = np.concatenate([rng.random((8, 2)) * 9, np.tile([[1.0, 0.0]], (8, 1))], 1).astype(np.float32)
    world = lambda: World(model, steps=2, seed=3)  # noqa: E731
    with_pose = rollout(world(), frames, actions, [1, 3, 4], poses=poses)
    again = rollout(world(), frames, actions, [1, 3, 4], poses=poses)
    without = rollout(world(), frames, actions, [1, 3, 4])
    np.testing.assert_array_equal(with_pose, again)
    assert np.abs(with_pose.astype(int) - without).max() > 0
    with pytest.raises(ValueError, match="poses of shape"):
        world().reset(frames, actions, poses[:4])
    with pytest.raises(ValueError, match="poses of shape"):
        w = world()
        w.reset(frames, actions)
        w.step(1, pose=[1.0, 2.0])
    # a model without pose input ignores them
    plain = randomized()
    given = rollout(World(plain, steps=2, seed=3), frames, actions, [1, 3], poses=poses[:7])
    np.testing.assert_array_equal(given, rollout(World(plain, steps=2, seed=3), frames, actions, [1, 3]))


def test_memory_gaps_noise_the_frames_after_the_prefix_and_hide_them_from_the_next():
    flow = FlowMatching(prefix_prob=1.0, gap_prob=1.0, gap_max=4)
    g = torch.Generator().manual_seed(0)
    sigma, scored = flow.training_sigmas(64, 16, generator=g)
    prefix = (sigma == 0).int().argmin(dim=1)  # the first noised frame
    assert (prefix >= 9).all() and (sigma[torch.arange(64), prefix] >= 0.7).all()
    assert (~scored).sum(1).eq(prefix).all()  # the prefix is not scored, the gap is
    g = torch.Generator().manual_seed(0)
    plain, _ = FlowMatching(prefix_prob=1.0).training_sigmas(64, 16, generator=g)
    first = plain[torch.arange(64), (plain == 0).int().argmin(dim=1)]
    assert (first < 0.7).any()  # without gaps the first noised frame's level is uniform
    late, _ = FlowMatching(prefix_prob=1.0, prefix_min=0.75).training_sigmas(64, 16, generator=g)
    prefix = (late == 0).int().argmin(dim=1)
    assert (prefix >= 13).all() and (prefix <= 15).all() and len(prefix.unique()) == 3  # > 12 clean frames

    seen = {}

    def spy(x, sigma, action, prev=None, pose=None, state_out="new"):
        seen.update(x=x, prev=prev)
        return x, None

    flow = FlowMatching(prefix_prob=1.0, gap_prob=1.0, gap_max=4, prev_noise=0.0)
    x0 = torch.randn(8, 16, 4, 4, 2)
    flow.loss(spy, x0, torch.zeros(8, 16, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    sigma, _ = flow.training_sigmas(8, 16, generator=torch.Generator().manual_seed(1))
    after_noisy = torch.cat([torch.zeros(8, 1, dtype=torch.bool), sigma[:, :-1] >= 0.7], dim=1)
    assert after_noisy.any()
    # a frame after a heavily noised one sees that frame noised (as a stream would), the others the clean one
    torch.testing.assert_close(seen["prev"][:, 1:][after_noisy[:, 1:]], seen["x"][:, :-1][after_noisy[:, 1:]])
    clean = ~after_noisy
    clean[:, 0] = False
    torch.testing.assert_close(seen["prev"][:, 1:][clean[:, 1:]], x0[:, :-1][clean[:, 1:]])


# -- pose-keyed memory (ModelConfig.pose_memory) --------------------------------------------------

def poses(rows):
    """(x, y, heading in degrees) rows -> (1, T, 4) poses."""
    r = torch.tensor(rows, dtype=torch.float32)
    rad = torch.deg2rad(r[:, 2])
    return torch.stack([r[:, 0], r[:, 1], rad.cos(), rad.sin()], dim=-1)[None]


def test_memory_keys_are_tent_weights_and_unknown_is_zero():
    memory = PoseMemory(cells=10, headings=20)
    keys = memory.keys(poses([[3, 4, 0], [3.25, 4.5, 9], [8.9, 0.2, 350], [3, 4, 18]]))
    torch.testing.assert_close(keys.sum(-1), torch.ones(1, 4))  # a partition of unity
    assert (keys[0, 0] > 0).sum() == 1 and keys[0, 0].max() == 1  # on a lattice point and a bin
    assert (keys[0, 1] > 0).sum() == 8  # between points and bins: 2 x 2 x 2 tents
    assert (keys[0, 0] * keys[0, 3]).sum() == 0  # one 18-degree turn apart: disjoint
    assert memory.keys(torch.full((1, 2, 4), float("nan"))).abs().sum() == 0


def test_a_finer_memory_lattice_tells_apart_poses_half_a_cell_apart():
    coarse, fine = PoseMemory(cells=10, headings=20), PoseMemory(cells=10, headings=20, resolution=2)
    assert fine.n_keys == 4 * coarse.n_keys
    here, near = poses([[3, 4, 0]]), poses([[3.5, 4, 0]])
    for memory in (coarse, fine):
        torch.testing.assert_close(memory.keys(poses([[3.25, 4.5, 9]])).sum(-1), torch.ones(1, 1))
    assert (fine.keys(near) > 0).sum() == 1  # a half-cell point is on the fine lattice
    assert (coarse.keys(here) * coarse.keys(near)).sum() == 0.5
    assert (fine.keys(here) * fine.keys(near)).sum() == 0  # disjoint: neither read gets the other's view


def test_state_out_in_place_or_none_gives_the_same_frames_without_copying_the_map():
    model = randomized("ours", **FINE)
    x, sigma, a, pose = clip(T=5, pose=True)
    with torch.no_grad():
        _, state = model(x[:, :4], sigma[:, :4], a[:, :4], pose=pose[:, :4])
        kept = state["memory"].clone()
        copied, new = model(x[:, 4:], sigma[:, 4:], a[:, 4:], state, pose=pose[:, 4:])
        torch.testing.assert_close(state["memory"], kept, rtol=0, atol=0)  # not in place: untouched
        discarded, none = model(x[:, 4:], sigma[:, 4:], a[:, 4:], state, pose=pose[:, 4:], state_out="none")
        torch.testing.assert_close(state["memory"], kept, rtol=0, atol=0)
        spent, new_inplace = model(x[:, 4:], sigma[:, 4:], a[:, 4:], state, pose=pose[:, 4:],
                                   state_out="inplace")
    assert none is None
    torch.testing.assert_close(discarded, copied, rtol=0, atol=0)
    assert new_inplace["memory"] is state["memory"]  # no copy of the map
    torch.testing.assert_close(spent, copied, rtol=0, atol=0)
    torch.testing.assert_close(new_inplace["memory"], new["memory"], rtol=0, atol=0)
    assert not torch.equal(new["memory"], kept)
    with pytest.raises(ValueError, match="state_out"):
        model(x[:, 4:], sigma[:, 4:], a[:, 4:], new, pose=pose[:, 4:], state_out="in place")


def test_memory_recalls_what_was_seen_at_a_pose_however_long_ago():
    memory = PoseMemory(cells=10, headings=20)
    T, N, V = 300, 4, 3
    values = torch.randn(1, T, N, V)
    written = poses([[2, 2, 0]] + [[5 + (t % 3), 6, 90 + 18 * (t % 5)] for t in range(1, T)])
    read = written.clone()
    read[0, -1] = torch.tensor([2.0, 2.0, 1.0, 0.0])  # back where frame 0 was seen, 299 frames later
    written[0, 7] = float("nan")  # an unknown pose is not written
    mean, conf, state = memory(values, written, read)
    torch.testing.assert_close(mean[0, -1], values[0, 0])
    torch.testing.assert_close(conf[0, -1], torch.full((N, 1), 1 / (1 + memory.EPS)))
    # the read at a pose never written is empty
    _, empty, _ = memory(values[:, :2], written[:, :2], poses([[7, 7, 180], [7, 7, 180]]))
    assert empty.abs().sum() == 0
    # streaming in pieces gives the same reads and state
    m1, c1, s1 = memory(values[:, :100], written[:, :100], read[:, :100])
    m2, c2, s2 = memory(values[:, 100:], written[:, 100:], read[:, 100:], s1)
    torch.testing.assert_close(torch.cat([m1, m2], 1), mean)
    torch.testing.assert_close(torch.cat([c1, c2], 1), conf)
    torch.testing.assert_close(s2, state)


def test_pose_memory_model_recalls_through_the_world():
    model = randomized("ours", **SMALL_MEMORY)
    # the frame made at a pose depends on what was seen there long before (beyond the attention
    # window and the SSM's reach is not needed for this) -- and on nothing else of that frame
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 64, 64, 3), dtype=np.uint8)
    other = frames.copy()
    other[0] = 255 - frames[0]
    actions = np.zeros(40, dtype=np.int64)
    track = np.concatenate([np.tile([[2.0, 2.0, 1.0, 0.0]], (1, 1)),
                            np.tile([[6.0, 6.0, 0.0, 1.0]], (39, 1))]).astype(np.float32)
    made = []
    for context in (frames, other):
        world = World(model, steps=1, seed=0)
        world.reset(context, actions, track)
        made.append(world.step(0, pose=[2.0, 2.0, 1.0, 0.0]))
    assert np.abs(made[0].astype(int) - made[1]).max() > 0
    # the memory is state of a fixed size, and a snapshot carries it
    world = World(model, steps=1, seed=0)
    world.reset(frames, actions, track)
    size = world.state_bytes()
    snap = world.snapshot()
    first = world.step(0, pose=[2.0, 2.0, 1.0, 0.0])
    world.step(0, pose=[3.0, 2.0, 1.0, 0.0])
    assert world.state_bytes() == size
    world.restore(snap)
    np.testing.assert_array_equal(world.step(0, pose=[2.0, 2.0, 1.0, 0.0]), first)
    # the stream updates its memory in place: restoring copies the snapshot, so it can be restored again
    again = [world.step(0, pose=[2.0, 2.0, 1.0, 0.0]) for _ in range(3)]
    world.restore(snap)
    world.step(0, pose=[2.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(np.stack([world.step(0, pose=[2.0, 2.0, 1.0, 0.0]) for _ in range(3)]),
                                  np.stack(again))


def test_recall_blend_takes_the_read_in_proportion_to_its_confidence():
    plain = randomized("ours", **SMALL_MEMORY)
    blended = WorldModel(plain.cfg.to_dict() | {"recall_blend": 1.0}).eval()
    blended.load_state_dict(plain.state_dict())
    x, sigma, a = clip(B=1, T=3)
    track = poses([[2, 2, 0], [6, 6, 90], [2, 2, 0]])  # frame 2 stands where frame 0 was seen
    with torch.no_grad():
        before, _ = plain(x, sigma, a, pose=track)
        after, _ = blended(x, sigma, a, pose=track)
    # frames 0 and 1 stand where nothing was seen: unchanged; frame 2 reads frame 0 at confidence 1/1.1
    torch.testing.assert_close(after[:, :2], before[:, :2])
    torch.testing.assert_close(after[:, 2], torch.lerp(before[:, 2], x[:, 0], 1 / (1 + PoseMemory.EPS)))
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="recall_blend must be a number in"):
        WorldModel(plain.cfg.to_dict() | {"recall_blend": 1.5})
    with pytest.raises(ValueError, match="recall_blend needs pose_memory"):
        WorldModel(get_preset("tiny").model.to_dict() | {"recall_blend": 0.5})


def test_warm_start_adds_pose_memory_without_changing_the_model(tmp_path):
    source = randomized(pose_cond=True)
    source.save_pretrained(tmp_path / "src")
    memory = WorldModel(source.cfg.to_dict() | SMALL_MEMORY)
    assert warm_start(memory, tmp_path / "src") == ["patch_embed.weight"]
    x, sigma, a, pose = clip(T=6, pose=True)
    with torch.no_grad():
        grown = memory.eval()(x, sigma, a, pose=pose)[0]
        torch.testing.assert_close(grown, source(x, sigma, a, pose=pose)[0])
    with pytest.raises(ValueError, match="pose_memory needs"):
        WorldModel(get_preset("tiny").model.to_dict() | {"pose_memory": True})


def test_world_dead_reckons_the_pose_of_steps_taken_without_one():
    model = randomized(**SMALL_MEMORY)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    angles = np.radians(18.5 * np.arange(5))  # turning left on the spot, as the app's context does
    context_poses = np.stack([np.full(5, 3.5), np.full(5, 4.5), np.cos(angles), np.sin(angles)], 1)
    context_poses = context_poses.astype(np.float32)
    actions = np.array([0, 2, 2, 2, 2])
    world = World(model, steps=1, seed=0)
    world.reset(frames, actions, context_poses, layout=np.ones((9, 9)))
    snap = world.snapshot()
    made = [world.step(2) for _ in range(10)]
    np.testing.assert_allclose(world.pose[:2], [3.5, 4.5], atol=1e-6)
    turned = np.degrees(np.arctan2(world.pose[3], world.pose[2]) - angles[-1]) % 360
    assert abs(turned - 185) < 2, turned  # ten more 18.5-degree turns
    # the dead-reckoned poses are what the model was given: passing them explicitly changes nothing
    world.restore(snap)
    given = World(model, steps=1, seed=0)
    given.reset(frames, actions, context_poses)
    for frame in made:
        world.step(2)
        np.testing.assert_array_equal(given.step(2, pose=world.pose), frame)
    # and walking into the outer wall stops there
    world.restore(snap)
    for _ in range(60):
        world.step(1)
    assert 0 < world.pose[0] < 9 and 0 < world.pose[1] < 9


def test_world_takes_its_poses_from_a_pose_source():
    """Dead reckoning is the default of a pose-conditioned World; TruePoses uses only the poses given,
    NoPoses none: the same frames as a World never given any."""
    model = randomized(**SMALL_MEMORY)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    actions = np.array([0, 2, 2, 1])
    poses = np.tile(np.array([[3.5, 4.5, 1.0, 0.0]], np.float32), (4, 1))
    plain = World(model, steps=1, seed=0)
    assert isinstance(plain.poses, DeadReckoning)
    plain.reset(frames, actions)
    true = World(model, steps=1, seed=0, poses=TruePoses())
    true.reset(frames, actions, poses)
    true.step(1)
    assert true.pose is None  # a step without a pose: unknown, not dead-reckoned
    true.step(1, pose=poses[0])
    np.testing.assert_array_equal(true.pose, poses[0])
    blind = World(model, steps=1, seed=0, poses=NoPoses())
    blind.reset(frames, actions, poses)
    np.testing.assert_array_equal(blind.step(1), plain.step(1))
