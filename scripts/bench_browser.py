"""Frame rate of the browser demo as a player sees it: starts `python -m app` (the shipped
checkpoint unless --checkpoint), opens it in headless Chromium, starts a world from an episode
file, holds W and counts the frames the page shows.

    python scripts/bench_browser.py --episode data/maze9_val/ep_00900003.npz --hold 15

Needs Playwright and Debian's chromium (`make install-dev`). Prints device, settings and the rate.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episode", required=True, help="episode .npz to start the world from")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the app's, the shipped one)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per frame (the app's default 4)")
    p.add_argument("--hold", type=float, default=15.0, help="seconds to hold W")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--screenshot", help="save the page as this PNG at the end")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "app", "--port", str(port), "--steps", str(args.steps)]
    cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    log = open(Path(tempfile.gettempdir()) / "bench_browser_app.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"),
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the app did not come up; see {log.name}")
                time.sleep(0.5)
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
            frames = lambda: int(page.inner_text("#wm-frames"))  # noqa: E731
            start, t0 = frames(), time.time()
            page.keyboard.down("w")
            time.sleep(args.hold)
            page.keyboard.up("w")
            end, held = frames(), time.time() - t0
            if args.screenshot:
                page.screenshot(path=args.screenshot)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(15)
    import torch

    print(f"device: CPU, {torch.get_num_threads()} torch threads on {os.cpu_count()} cores; steps {args.steps}; "
          f"checkpoint {args.checkpoint or 'shipped'}")
    print(f"holding W for {held:.1f} s: {end - start} frames, {(end - start) / held:.2f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
