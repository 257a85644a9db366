"""Training clips: fixed-length windows of episode files, as torch tensors.

Episodes are read and checked once, at construction, and kept decoded in memory (~12 MB per
1001-frame Memory Maze episode): training draws many random clips, and re-reading compressed
files for each would cost more than the model step on a CPU.

A clip of `clip_len` frames taken every `frame_skip` frames from `start` covers frames
start, start+skip, ..., and `actions[i]` is the action that led to `frames[i]` (the episode's
own action at that frame; 0 for an episode's first frame).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .episodes import actions_to_index, load_episode


def episode_files(root_or_files) -> list[Path]:
    """The episode files (*.npz) of a folder, or a file, or a list of files, as paths."""
    if isinstance(root_or_files, (str, Path)):
        root = Path(root_or_files)
        if root.is_dir():
            files = sorted(root.glob("*.npz"))
            if not files:
                raise ValueError(f"no episode files (*.npz) in {root}")
            return files
        return [root]
    return [Path(f) for f in root_or_files]


class ClipDataset(torch.utils.data.Dataset):
    """Clips of Memory Maze episode files (a folder of *.npz, or a list of files). Items:
    frames (L, 64, 64, 3) uint8, actions (L,) int64, agent_pos and agent_dir (L, 2) float32
    (zeros when the file has no poses), episode (index into `files`), start (first frame).
    An unreadable file is a ValueError naming it, or with `skip_corrupt` a warning and a skip.
    Without `samples_per_epoch`, index i is the i-th clip (episode by episode, start by start);
    with it, the dataset has that many items, each a clip drawn at random from (seed, epoch,
    index): reproducible, and new draws after set_epoch."""

    def __init__(self, root_or_files, clip_len: int, frame_skip: int = 1,
                 samples_per_epoch: int | None = None, seed: int = 0, skip_corrupt: bool = False):
        if clip_len < 1 or frame_skip < 1:
            raise ValueError("clip_len and frame_skip must be >= 1")
        self.clip_len, self.frame_skip = clip_len, frame_skip
        self.span = (clip_len - 1) * frame_skip + 1  # frames one clip covers
        self.samples_per_epoch, self.seed, self.epoch = samples_per_epoch, seed, 0
        self.files: list[Path] = []
        self.episodes: list[dict] = []
        for path in episode_files(root_or_files):
            try:
                ep = self._load(path)
            except ValueError as e:
                if not skip_corrupt:
                    raise
                warnings.warn(f"skipping {e}")
                continue
            if len(ep["frames"]) < self.span:
                warnings.warn(f"skipping {path}: {len(ep['frames'])} frames, "
                              f"shorter than a clip ({self.span})")
                continue
            self.files.append(path)
            self.episodes.append(ep)
        counts = np.array([len(ep["frames"]) - self.span + 1 for ep in self.episodes], dtype=np.int64)
        if not counts.sum():
            raise ValueError(f"no clips of {clip_len} frames (frame_skip {frame_skip}) in {root_or_files}")
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self.num_clips = int(self._offsets[-1])

    def _load(self, path: Path) -> dict:
        ep = load_episode(path)
        zeros = np.zeros((len(ep["image"]), 2), np.float32)
        return {"frames": ep["image"], "actions": actions_to_index(ep["action"]),
                "agent_pos": ep.get("agent_pos", zeros).astype(np.float32),
                "agent_dir": ep.get("agent_dir", zeros).astype(np.float32)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_clips if self.samples_per_epoch is None else int(self.samples_per_epoch)

    def clip_at(self, index: int) -> tuple[int, int]:
        """(episode, start) of the index-th clip."""
        episode = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return episode, int(index - self._offsets[episode])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        if self.samples_per_epoch is not None:
            index = int(np.random.default_rng([self.seed, self.epoch, index]).integers(self.num_clips))
        episode, start = self.clip_at(index)
        window = slice(start, start + self.span, self.frame_skip)
        episode_arrays = self.episodes[episode].items()
        item = {k: torch.from_numpy(np.ascontiguousarray(v[window])) for k, v in episode_arrays}
        return dict(item, episode=episode, start=start)
