"""Evaluation of world models, in small modules over the streaming engine (`worldmodel.world`):

- `metrics`: per-frame SSIM / PSNR / LPIPS and their aggregates (imports nothing of the model,
  so any module may use it);
- `media`: videos and contact sheets of frame sequences;
- `rollout`: rollouts from episodes, action scripts and the real environment, and
  `worldmodel rollout`;
- `protocols`: the Memory Maze protocols against trivial references, and `worldmodel eval`;
  `report` writes their tables and plots.

This file imports none of them: `from worldmodel.eval.metrics import frame_metrics`.
"""
