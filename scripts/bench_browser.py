"""Frame rate of the browser demo as a player sees it: starts `python -m worldmodel.app` (the shipped
checkpoint unless --checkpoint), opens it in headless Chromium, starts a world from an episode
file, holds W and counts the frames the page shows.

    python scripts/bench_browser.py --episode data/maze9_val/ep_00900003.npz --hold 15

Needs Playwright and Debian's chromium (`make install-dev`). Prints device, settings and the rate.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from worldmodel.app.headless import CHROMIUM, CHROMIUM_ARGS, launch_app, stop_app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episode", required=True, help="episode .npz to start the world from")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the app's, the shipped one)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per frame (the app's default 4)")
    p.add_argument("--hold", type=float, default=15.0, help="seconds to hold W")
    p.add_argument("--chromium", default=CHROMIUM)
    p.add_argument("--screenshot", help="save the page as this PNG at the end")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    app_args = ["--steps", str(args.steps)] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
    proc, url = launch_app(app_args, Path(tempfile.gettempdir()) / "bench_browser_app.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            page.set_default_timeout(180_000)
            page.goto(url)
            with page.expect_file_chooser() as chooser:
                page.click("#wm-episode")
            chooser.value.set_files(str(Path(args.episode).resolve()))
            page.wait_for_function("() => Number(document.querySelector('#wm-frames')?.textContent) > 0")
            time.sleep(2)  # let the first frame settle

            def frames() -> int:
                return int(page.inner_text("#wm-frames"))

            start, t0 = frames(), time.time()
            page.keyboard.down("w")
            time.sleep(args.hold)
            page.keyboard.up("w")
            end, held = frames(), time.time() - t0
            if args.screenshot:
                page.screenshot(path=args.screenshot)
            browser.close()
    finally:
        stop_app(proc)
    import torch

    print(f"device: CPU, {torch.get_num_threads()} torch threads on {os.cpu_count()} cores; steps "
          f"{args.steps}; checkpoint {args.checkpoint or 'shipped'}")
    print(f"holding W for {held:.1f} s: {end - start} frames, {(end - start) / held:.2f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
