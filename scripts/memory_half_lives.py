"""How far each SSM head of a checkpoint remembers: its state's half-life in frames.

    python scripts/memory_half_lives.py checkpoints/maze9x9 data/maze9_lookback/ep_00810000.npz

A head's state s_t = exp(dt_t A) s_{t-1} + ...; the mean of dt_t A over a real episode (per frame,
i.e. over the block's bh*bw scan steps) gives the half-life -ln 2 / mean. What a head held is down
to 1/8 after three half-lives, so a model whose longest half-life is 20 frames cannot recall a
view from 200 frames ago, whatever its state size.
"""

import argparse

import torch

from worldmodel.data.episodes import actions_to_index, episode_poses, load_episode
from worldmodel.train import memory_half_lives
from worldmodel.world import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint folder")
    parser.add_argument("episode", help="episode .npz to measure on (its own actions and poses)")
    parser.add_argument("--frames", type=int, default=256, help="first N frames of the episode")
    args = parser.parse_args()

    world = load_world(args.checkpoint, device="cpu")
    model = world.model
    ep = load_episode(args.episode)
    n = min(args.frames, len(ep["image"]))
    with torch.no_grad():  # the model's input exactly as World.reset builds it
        x = world._encode(torch.from_numpy(ep["image"][:n]))[None]
        actions = torch.from_numpy(actions_to_index(ep["action"])[:n])[None]
        poses = episode_poses(ep)
        lives = memory_half_lives(model, x, actions, None if poses is None else world._pose(poses[:n], n))
    print(f"{args.checkpoint} ({model.cfg.variant}) on {args.episode}, {x.shape[1]} frames")
    print("layer | block | half-lives of its heads in frames, slowest last")
    for i, heads in lives.items():
        bh, bw = model.blocks[i].ssm.block
        print(f"{i} | {bh}x{bw} | " + " ".join(f"{v:.1f}" for v in heads))


if __name__ == "__main__":
    main()
