"""Memory Maze evaluation of one or more checkpoints: same as `worldmodel eval`.

    python scripts/eval.py --checkpoints ours=checkpoints/maze9x9 causal=checkpoints/causal \
        --episodes data/maze9_revisit --limit 10 --out runs/eval-retrieval

Writes results.json, results.md, psnr.png and side-by-side videos into --out; see
`python scripts/eval.py --help` and worldmodel/eval/protocols.py.
"""

import sys

from worldmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
