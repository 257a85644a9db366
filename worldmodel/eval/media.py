"""Frames to look at: sequences side by side as a video (mp4 or gif) and contact sheets."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def tile(rows: list[np.ndarray], scale: int = 4) -> np.ndarray:
    """Place equally long frame sequences side by side, upscaled nearest-neighbour: (T, H*s, W*s*len, 3)."""
    t = min(len(r) for r in rows)
    wide = np.concatenate([r[:t] for r in rows], axis=2)
    return wide.repeat(scale, axis=1).repeat(scale, axis=2)


def contact_sheet(
    episodes: list[list[np.ndarray]], columns: int = 12, scale: int = 2, gap: int = 4
) -> np.ndarray:
    """One still image to look at: per episode one row per sequence (ground truth, then each model),
    `columns` evenly spaced frames across the horizon, a white gap between episodes. uint8 (H, W, 3)."""
    blocks = []
    for rows in episodes:
        t = min(len(r) for r in rows)
        pick = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
        block = np.concatenate([np.concatenate(list(r[pick]), axis=1) for r in rows], axis=0)
        blocks += [block, np.full((gap, block.shape[1], 3), 255, np.uint8)]
    sheet = np.concatenate(blocks[:-1], axis=0)
    return sheet.repeat(scale, axis=0).repeat(scale, axis=1)


def label_strip(labels: Sequence[str], width: int, height: int = 16) -> np.ndarray:
    """A black strip (height, width*len(labels), 3) uint8 with one white label per column."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=height - 4)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    columns = []
    for text in labels:
        img = Image.new("RGB", (width, height))
        ImageDraw.Draw(img).text((3, 1), text, fill=(255, 255, 255), font=font)
        columns.append(np.asarray(img))
    return np.concatenate(columns, axis=1)


def write_video(path: str | Path, rows: list[np.ndarray], fps: int = 8, scale: int = 4,
                labels: Sequence[str] | None = None) -> Path:
    """mp4 (or gif, by suffix) of sequences shown side by side, with an optional label row on top."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = tile(rows, scale)
    if labels is not None:
        if len(labels) != len(rows):
            raise ValueError(f"got {len(labels)} labels for {len(rows)} columns")
        strip = label_strip(labels, rows[0].shape[2] * scale, height=2 * max(6, 2 * scale))
        frames = np.concatenate([np.broadcast_to(strip, (len(frames), *strip.shape)), frames], axis=1)
    if path.suffix == ".gif":
        iio.imwrite(path, frames, duration=1000 / fps, loop=0)
    else:
        iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """A still image (png by suffix), e.g. a contact sheet."""
    import imageio.v3 as iio

    iio.imwrite(path, image)
    return Path(path)
