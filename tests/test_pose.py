"""Pose conditioning (ModelConfig.pose_cond): the agent's (x, y, dx, dy) per frame as a further
condition, optional per frame, added to a trained model without changing it, and carried by
World / rollout the same way in streaming and in parallel."""

import numpy as np
import pytest
import torch

from worldmodel.config import get_preset
from worldmodel.diffusion import FlowMatching
from worldmodel.evaluate import rollout
from worldmodel.model import WorldModel
from worldmodel.train import warm_start
from worldmodel.world import World

from helpers import clip, randomized


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


def test_streaming_with_poses_equals_parallel():
    model = randomized("ours", pose_cond=True)
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
    FlowMatching(pose_drop=0.5).loss(posed, x.clamp(-1, 1), a, generator=torch.Generator().manual_seed(0), pose=pose).backward()
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
    np.testing.assert_array_equal(rollout(World(plain, steps=2, seed=3), frames, actions, [1, 3], poses=poses[:7]),
                                  rollout(World(plain, steps=2, seed=3), frames, actions, [1, 3]))


def test_memory_gaps_noise_the_frames_after_the_prefix_and_hide_them_from_the_next():
    flow = FlowMatching(prefix_prob=1.0, gap_prob=1.0, gap_max=4)
    g = torch.Generator().manual_seed(0)
    sigma, scored = flow.training_sigmas(64, 16, generator=g)
    prefix = (sigma == 0).int().argmin(dim=1)  # the first noised frame
    assert (prefix >= 9).all() and (sigma[torch.arange(64), prefix] >= 0.7).all()
    assert (~scored).sum(1).eq(prefix).all()  # the prefix is not scored, the gap is
    plain, _ = FlowMatching(prefix_prob=1.0).training_sigmas(64, 16, generator=torch.Generator().manual_seed(0))
    first = plain[torch.arange(64), (plain == 0).int().argmin(dim=1)]
    assert (first < 0.7).any()  # without gaps the first noised frame's level is uniform
    late, _ = FlowMatching(prefix_prob=1.0, prefix_min=0.75).training_sigmas(64, 16, generator=g)
    prefix = (late == 0).int().argmin(dim=1)
    assert (prefix >= 13).all() and (prefix <= 15).all() and len(prefix.unique()) == 3  # > 12 clean frames

    seen = {}

    def spy(x, sigma, action, prev=None, pose=None):
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
