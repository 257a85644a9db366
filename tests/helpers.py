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
