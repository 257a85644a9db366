"""Shared test helpers."""

import torch

from worldmodel.config import get_preset
from worldmodel.model import WorldModel


def randomized(variant: str = "ours", seed: int = 0, **overrides) -> WorldModel:
    """A tiny model with every weight random: adaLN-Zero and the zero-initialised output layer
    would otherwise make an untrained model print one constant frame, and invariants or
    "the frame changed" checks would hold (or fail) trivially."""
    cfg = get_preset("tiny").model.to_dict() | {"variant": variant} | overrides
    torch.manual_seed(seed)
    model = WorldModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def clip(B=2, T=7, seed=1, pose=False):
    """Random inputs of a tiny model: frames (B, T, 64, 64, 3), noise levels, actions, and with
    `pose` the agent's poses (B, T, 4): x, y in a 9x9 maze and a unit heading."""
    g = torch.Generator().manual_seed(seed)
    out = (torch.randn(B, T, 64, 64, 3, generator=g), torch.rand(B, T, generator=g),
           torch.randint(0, 6, (B, T), generator=g))
    if pose:
        heading = torch.nn.functional.normalize(torch.randn(B, T, 2, generator=g), dim=-1)
        out += (torch.cat([torch.rand(B, T, 2, generator=g) * 9, heading], dim=-1),)
    return out
