"""What a player sees when they look back, measured against the real environment.

As the app starts a world: the real environment looks around (21 frames) to seed each model;
then the player turns half a circle, waits 30 frames and turns a full circle. The models get the
context's poses only and dead-reckon the rest from the actions, as in the app. Prints the PSNR of
the final full turn (every view in it was last seen 40-60 frames before) and writes a contact
sheet of it: the real frames above each model's.

    python scripts/memory_demo.py --seed 1 --checkpoints checkpoints/maze9x9 --out docs/memory_demo.png
"""

import argparse

from worldmodel.eval.media import contact_sheet, write_image
from worldmodel.eval.rollout import env_context, parse_actions, rollout
from worldmodel.metrics import frame_metrics
from worldmodel.world import load_world

SCRIPT = "A*10 .*30 A*20"
TURN = 40  # the full turn starts after the half turn and the wait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="+", default=["checkpoints/maze9x9"])
    p.add_argument("--seed", type=int, default=1, help="maze seed of the real environment")
    p.add_argument("--steps", type=int, default=1, help="sampler steps per frame")
    p.add_argument("--out", default="memory_demo.png")
    args = p.parse_args()
    script = parse_actions(SCRIPT)
    frames, actions, truth, poses, layout = env_context("9x9", args.seed, 21, script)
    rows = [truth[TURN:]]
    for ckpt in args.checkpoints:
        made = rollout(load_world(ckpt, device="cpu", steps=args.steps, seed=0), frames, actions, script,
                       poses=poses[:len(frames)], layout=layout)[TURN:]
        print(f"{ckpt}: final full turn {frame_metrics(made, rows[0])['psnr'].mean():.2f} dB PSNR (maze "
              f"seed {args.seed}, script {SCRIPT!r}, {args.steps} sampler step(s), poses dead-reckoned)")
        rows.append(made)
    write_image(args.out, contact_sheet([rows], columns=10, scale=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
