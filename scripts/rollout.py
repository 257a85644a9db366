"""A rollout video from a checkpoint: same as `worldmodel rollout`.

    python scripts/rollout.py --episode data/maze9_revisit/ep_00800000.npz --horizon 200 \
        --side-by-side --out roll.mp4
    python scripts/rollout.py --actions "W*8 A*5 WD W*4 ." --maze 9x9 --seed 3 --side-by-side --gif \
        --out script.mp4

See `python scripts/rollout.py --help` and worldmodel/eval/rollout.py.
"""

import sys

from worldmodel.cli import main

if __name__ == "__main__":
    sys.exit(main(["rollout", *sys.argv[1:]]))
