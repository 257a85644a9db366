"""`worldmodel`: the command line of the world model (see `worldmodel COMMAND --help`)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

# subcommand -> (module, its add-arguments function, its run function, one-line help)
COMMANDS = {
    "play": ("worldmodel.app.main", "add_arguments", "run",
             "play inside the world model in the browser (Gradio, keyboard)"),
    "generate-data": ("worldmodel.data.generate", "add_arguments", "run",
                      "generate Memory Maze episodes from the real environment"),
    "train": ("worldmodel.train", "add_arguments", "run",
              "train a world model with accelerate (CPU, one GPU or several)"),
    "train-vae": ("worldmodel.vae", "add_arguments", "run",
                  "train the frame autoencoder (diffusers AutoencoderKL) the latent world model works in"),
    "export": ("worldmodel.train", "add_export_arguments", "run_export",
               "copy a training run's EMA weights into a shippable checkpoint folder"),
    "rollout": ("worldmodel.eval.rollout", "add_arguments", "run",
                "video of a model replaying an episode or an action script (W/A/D keys), optionally beside "
                "ground truth"),
    "eval": ("worldmodel.eval.protocols", "add_arguments", "run",
             "Memory Maze spatial retrieval / reasoning metrics (SSIM, PSNR, LPIPS) of checkpoints vs "
             "references"),
    "bench": ("worldmodel.bench", "add_arguments", "run",
              "latency, memory, kernel and training-step benchmarks, ours vs full attention"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worldmodel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, add_fn, run_fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_run=(module, run_fn))
        getattr(importlib.import_module(module), add_fn)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Ctrl+C (or SIGINT to the process group, as `make` passes it on) ends the command with one
    line and status 130, not a traceback; a second one while it winds down is ignored."""
    try:
        args = build_parser().parse_args(argv)
        module, run_fn = args._run
        return getattr(importlib.import_module(module), run_fn)(args) or 0
    except KeyboardInterrupt:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to ignore
            pass
        print("worldmodel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
