"""Evaluation of world models, in small modules over the streaming engine (`worldmodel.world`):

- `media`: videos and contact sheets of frame sequences;
- `rollout`: rollouts from episodes, action scripts and the real environment, and
  `worldmodel rollout`;
- `protocols`: the Memory Maze protocols against trivial references, and `worldmodel eval`;
  `report` writes their tables and plots.

The metrics they score with (SSIM / PSNR / LPIPS per frame) are `worldmodel.metrics`, low in the
library, which the autoencoder's training uses too. This file imports none of them:
`from worldmodel.eval.protocols import run`.
"""
