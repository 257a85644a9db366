"""Rollouts and video output shared by training samples, `worldmodel rollout` and `worldmodel eval`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .world import World


def rollout_episode(world: World, frames: np.ndarray, actions: np.ndarray, context: int, horizon: int) -> np.ndarray:
    """Seed `world` with the first `context` frames, then replay the episode's next `horizon`
    actions. Returns the generated frames (horizon, H, W, 3) uint8, aligned with
    frames[context:context + horizon]."""
    horizon = min(horizon, len(frames) - context)
    world.reset(frames[:context], actions[:context])
    return np.stack([world.step(int(actions[context + i])) for i in range(horizon)])


def tile(rows: list[np.ndarray], scale: int = 4) -> np.ndarray:
    """Place equally long frame sequences side by side, upscaled nearest-neighbour: (T, H*s, W*s*len, 3)."""
    t = min(len(r) for r in rows)
    wide = np.concatenate([r[:t] for r in rows], axis=2)
    return wide.repeat(scale, axis=1).repeat(scale, axis=2)


def write_video(path: str | Path, rows: list[np.ndarray], fps: int = 8, scale: int = 4) -> Path:
    """mp4 (or gif, by suffix) of sequences shown side by side."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = tile(rows, scale)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path
