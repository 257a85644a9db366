"""A walk in the browser demo, real vs imagined, as a player sees it (issue 17).

Starts `python -m worldmodel.app` (the shipped checkpoint and the app's defaults unless told) headless,
opens it in Chromium, ticks "Real vs imagined" and presses Start (maze 9x9, seed 0: the page's
defaults), then plays a key script, holding keys as a player does, and keeps every frame the page
draws: both canvases (the real environment's view and the model's) are read back with getImageData
the moment the page has drawn them, so the frames are what the browser received and showed.

    python scripts/app_walk.py                            # the default walk, into docs/maze9x9/app_walk
    python scripts/app_walk.py --script "W*40 A*10 W*40" --out runs/walk

The script is in the action-script syntax of `worldmodel rollout` (W forward, A/D turn, WA/WD forward
while turning, . wait; KEY*COUNT repeats; it must start with one key held for 2+ frames). The default,
300 frames (164 W, 57 W+A, 56 W+D, 23 A), is a route through maze 9x9 seed 0 planned in the real
environment with a path follower over the maze's layout, so that it walks down corridors and turns at
junctions without running into walls: out of the start room, along the outer corridors on both sides,
through the start room twice more, into a dead-end room and out, and back to the start room for a
look around at the end.

Keys go to the page's own key handlers (keydown/keyup events dispatched in the page, one at a time as
a player's fingers do), switched by a hook the moment the frame before a segment's last is drawn (the
server is already making the segment's last frame then), so the timing does not depend on this
process. The actions really played are read back from the app's own recording (Save recording) and
written with the frames, with the number of frames off the script. Screenshots pause the walk
(nothing held: the world waits) at the segment ends nearest to --shots that a one-key segment of 2+
frames follows (two keys go down one at a time: from a paused world a frame could start with only
the first).

Writes into --out: walk.mp4 (real | imagined, nearest-neighbour upscaled, each frame's number and
PSNR above), walk_sheet.png (every --every-th frame, real above imagined, with frame numbers and
PSNR), screenshot_NNN.png (the whole page at frame NNN), and walk.json (per-frame PSNR of the model's
frame against the real one, the script and the actions played, the checkpoint, the frames/s shown,
the device, /proc/loadavg before and after). Needs Playwright and Debian's chromium
(`make install-dev`) and the Memory Maze env.
"""

import argparse
import base64
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from worldmodel.actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NOOP, RIGHT
from worldmodel.app.headless import CHROMIUM, CHROMIUM_ARGS, launch_app, stop_app
from worldmodel.bench import loadavg
from worldmodel.eval.media import label_strip, tile, write_image
from worldmodel.eval.rollout import parse_actions
from worldmodel.metrics import psnr

WALK = ("W*2 WD W*10 WD*5 W*8 WA*5 W WA*4 W*4 WA W*14 WA*5 W*11 WA*6 W*3 WD*6 W*2 WA*5 W*6 WD*5 W*2 WD*5 "
        "W*18 WD*5 W*10 WD*5 W*11 WA*5 W*2 WD*5 W*10 WA*9 W*3 WA*6 W*14 WA*5 W*3 A*7 WA*3 W*2 WA*3 W*2 "
        "WD*3 W*9 WD*5 W*11 WD*5 W*2 WD*5 W*4 WD A*16")
KEYS = {NOOP: ["Space"], FORWARD: ["KeyW"], LEFT: ["KeyA"], RIGHT: ["KeyD"], FORWARD_LEFT: ["KeyW", "KeyA"],
        FORWARD_RIGHT: ["KeyW", "KeyD"]}  # KeyboardEvent.code, as the page's key map (app/keymap.py)
NAMES = {NOOP: ".", FORWARD: "W", LEFT: "A", RIGHT: "D", FORWARD_LEFT: "WA", FORWARD_RIGHT: "WD"}

# Runs in the page before its own script: `window.wmShown++` (the page's count of frames drawn, bumped
# once both canvases and the status are drawn) goes through this setter, which keeps both canvases.
HOOK = """(() => {
  let shown = 0;
  const down = new Set();
  window.wmWalk = []; window.wmWalkOn = false; window.wmWalkStep = 0; window.wmWalkPlan = {};
  window.wmWalkKeys = (codes) => {  // to the page's own key handlers: releases first, then presses
    const key = (type, code) => dispatchEvent(new KeyboardEvent(type, {code}));
    for (const c of [...down]) if (!codes.includes(c)) { down.delete(c); key('keyup', c); }
    for (const c of codes) if (!down.has(c)) { down.add(c); key('keydown', c); }
  };
  const rgb = (id) => {
    const c = document.getElementById(id);
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 0; i < px.length; i += 4) s += String.fromCharCode(px[i], px[i + 1], px[i + 2]);
    return [btoa(s), c.height, c.width];
  };
  Object.defineProperty(window, 'wmShown', {configurable: true, get: () => shown, set: (v) => {
    shown = v;
    if (!window.wmWalkOn || !v) return;
    const step = window.wmWalkStep = Number(document.getElementById('wm-steps').textContent);
    window.wmWalk.push({step, t: performance.now(), imagined: rgb('wm-frame'), real: rgb('wm-real'),
                        label: document.getElementById('wm-real-label').textContent});
    if (window.wmWalkPlan[step]) window.wmWalkKeys(window.wmWalkPlan[step]);
  }});
})();"""


def runs(actions) -> list[tuple[int, int]]:
    """Action ids -> [(action, count)] of consecutive repeats."""
    out: list[tuple[int, int]] = []
    for a in actions:
        if out and out[-1][0] == a:
            out[-1] = (a, out[-1][1] + 1)
        else:
            out.append((a, 1))
    return out


def script_text(actions) -> str:
    """Action ids -> an action script (the inverse of parse_actions)."""
    return " ".join(NAMES[a] if n == 1 else f"{NAMES[a]}*{n}" for a, n in runs(actions))


def pixels(item) -> np.ndarray:
    """A canvas as the hook keeps it ([base64 RGB, height, width]) -> uint8 (H, W, 3)."""
    data, h, w = item
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 3)


def bucket_means(values, size: int = 50) -> dict[str, float]:
    """Means over consecutive buckets of `size` frames, keyed "1-50", "51-100", ..."""
    return {f"{i + 1}-{min(i + size, len(values))}": float(np.mean(values[i:i + size]))
            for i in range(0, len(values), size)}


def sheet(real: np.ndarray, imagined: np.ndarray, psnrs, numbers=None, every: int = 25,
          scale: int = 2) -> np.ndarray:
    """A contact sheet: the 1st, every-th, 2*every-th, ... and the last frame, real above imagined,
    each column headed by its frame number (`numbers`, default 1, 2, ...) and PSNR, and a label
    column on the left. uint8 (H, W, 3)."""
    n, (h, w) = len(real), real.shape[1:3]
    numbers = range(1, n + 1) if numbers is None else numbers
    picks = sorted({0, *range(every - 1, n, every), n - 1})
    grid = np.concatenate([np.concatenate([real[i], imagined[i]], axis=0) for i in picks], axis=1)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    head = label_strip([f"{numbers[i]}: {psnrs[i]:.1f} dB" for i in picks], w * scale, height=16)
    pad = np.zeros((h * scale - 16, 64, 3), np.uint8)
    side = np.concatenate([label_strip(["frame"], 64), label_strip(["real"], 64), pad,
                           label_strip(["model"], 64), pad], axis=0)
    return np.concatenate([side, np.concatenate([head, grid], axis=0)], axis=1)


def video_frames(real: np.ndarray, imagined: np.ndarray, psnrs, numbers=None, scale: int = 4) -> np.ndarray:
    """Real | imagined side by side, upscaled nearest-neighbour, under a strip naming each view, the
    frame number and the PSNR. uint8 (T, 16 + H*scale, 2*W*scale, 3)."""
    numbers = range(1, len(real) + 1) if numbers is None else numbers
    width = real.shape[2] * scale
    strips = [label_strip([f"real environment, frame {n}", f"model (imagined), {v:.1f} dB"], width)
              for n, v in zip(numbers, psnrs)]
    return np.concatenate([np.stack(strips), tile([real, imagined], scale)], axis=1)


def open_page(browser, url: str):
    """A tab on the app with the hook in, a world started against the real environment."""
    page = browser.new_page(viewport={"width": 1400, "height": 1050})
    page.set_default_timeout(300_000)  # a real env build under load can take a while
    page.add_init_script(HOOK)
    page.goto(url)
    page.wait_for_selector("#wm-start")
    page.check("#wm-compare input")
    page.click("#wm-start")
    page.wait_for_selector("#wm-real-fig", state="visible")  # the start frame is drawn
    page.evaluate("window.wmWalkOn = true")
    return page


def plan(actions, shots) -> tuple[dict, dict, set]:
    """What the page does as frames are drawn: {frame: key codes to hold from then on}; the stops
    {frame: key codes to resume with, [] at the end}; the frames to screenshot. Keys change when the
    frame before a segment's last is drawn: the server is already making that last frame then. A stop
    releases them there instead: at the end, and at the segment ends nearest to `shots` that a one-key
    segment of 2+ frames follows (two keys go down one at a time: from a paused world a frame could
    start with only the first)."""
    segments = runs(actions)
    ends = np.cumsum([n for _, n in segments]).tolist()
    after = segments[1:] + [(None, 0)]
    can = [e for e, (a, n) in zip(ends, after) if a is None or (len(KEYS[a]) == 1 and n >= 2)]
    shot_at = {min(can, key=lambda e: abs(e - s)) for s in shots}
    stops = {e: [] if a is None else KEYS[a] for e, (a, _) in zip(ends, after) if e in shot_at | {ends[-1]}}
    keys = {e - 1: [] if e in stops else KEYS[a] for e, (a, _) in zip(ends, after)}
    return keys, stops, shot_at


def walk(page, actions, shots, out: Path, bar) -> tuple[list, list, float]:
    """Plays `actions` with the page's own key handlers, the keys changed by the hook as frames are
    drawn (no round trip to this process); pauses for screenshots (see `plan`). Returns (the captured
    frames, the screenshots, the seconds spent paused)."""
    keys, stops, shot_at = plan(actions, shots)
    captured, taken, paused = [], [], 0.0

    def wait_for(step: int, patience: float = 300.0) -> None:
        last = time.perf_counter()
        while not captured or captured[-1]["step"] < step:
            time.sleep(0.2)
            new = page.evaluate("window.wmWalk.splice(0)")
            captured.extend(new)
            bar.update(len(new))
            if new:
                last = time.perf_counter()
            elif time.perf_counter() - last > patience:
                raise RuntimeError(f"no frame drawn for {patience:.0f} s, waiting for frame {step}")

    page.evaluate("plan => { window.wmWalkPlan = plan; }", {str(k): v for k, v in keys.items()})
    page.evaluate("codes => window.wmWalkKeys(codes)", KEYS[actions[0]])
    for stop in sorted(stops):
        wait_for(stop)
        if stop in shot_at:
            t0 = time.perf_counter()
            path = out / f"screenshot_{stop:03d}.png"
            page.screenshot(path=str(path), full_page=True)
            taken.append({"frame": stop, "file": path.name})
            paused += time.perf_counter() - t0
        if stops[stop]:
            page.evaluate("codes => window.wmWalkKeys(codes)", stops[stop])
    time.sleep(0.5)  # anything still on its way
    captured.extend(page.evaluate("window.wmWalk.splice(0)"))
    return captured, taken, paused


def recording(page, tmp: Path) -> dict:
    """The app's own recording of the game (Save recording): its actions and both sets of frames,
    from the first generated frame on."""
    from worldmodel.data.episodes import load_episode

    page.click("#wm-record")
    links = page.locator('#wm-downloads a[data-testid="download-link"][href$=".npz"]')
    links.nth(1).wait_for(state="attached")
    eps = {}
    for href in [links.nth(i).get_attribute("href") for i in range(links.count())]:
        path = tmp / ("real.npz" if href.endswith("_real.npz") else "model.npz")
        path.write_bytes(page.request.get(href).body())
        eps[path.stem] = load_episode(path)
    c = int(eps["model"]["context_len"])
    return {"actions": eps["model"]["action"][c:].argmax(-1).tolist(),  # row t: the action into frame t
            "imagined": eps["model"]["image"][c:], "real": eps["real"]["image"][c:]}


def frames_per_second(captured: list, pauses: set) -> float:
    """Frames shown per second while keys were held: page timestamps, leaving out the gaps that hold
    a screenshot pause (the frame after each paused frame)."""
    gaps = [b["t"] - a["t"] for a, b in zip(captured, captured[1:]) if a["step"] not in pauses]
    return 1000 * len(gaps) / sum(gaps)


def play(args, actions, out: Path) -> dict:
    """Runs the app and the browser through the walk; returns the frames and what was measured."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    app_args = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + args.app_args.split()
    tmp = Path(tempfile.mkdtemp(prefix="app_walk-"))
    log = tmp / "app.log"
    load = [loadavg()]
    proc, url = launch_app(app_args, log, timeout=300)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = open_page(browser, url)
                t0 = time.perf_counter()
                with tqdm(total=len(actions), unit="frame", desc="walk") as bar:
                    captured, shots, paused = walk(page, actions, args.shots, out, bar)
                wall = time.perf_counter() - t0 - paused
                status = page.inner_text("#wm-status")
                rec = recording(page, tmp)
            finally:
                browser.close()
    except PlaywrightError as e:
        raise SystemExit(f"the browser side failed: {e}\n(the app's log: {log})") from e
    finally:
        stop_app(proc)
    load.append(loadavg())
    device = re.search(r"device (\S+)", status)
    return {"captured": captured, "shots": shots, "recording": rec, "app_args": app_args,
            "status": status, "device": device.group(1) if device else "unknown", "loadavg": load,
            "wall_s": wall, "fps": frames_per_second(captured, {s["frame"] for s in shots})}


def report(args, actions, run: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """walk.json's contents, and the real and imagined frames shown; checks the frames drawn against
    the app's own recording."""
    cap, rec = run["captured"], run["recording"]
    steps = [c["step"] for c in cap]
    real, imagined = (np.stack([pixels(c[k]) for c in cap]) for k in ("real", "imagined"))
    psnrs = [psnr(m, r) for m, r in zip(imagined, real)]
    labels = [re.search(r"PSNR ([\d.]+) dB", c["label"]) for c in cap]  # the page's own readout, 1 decimal
    app_diff = [abs(float(m.group(1)) - v) for m, v in zip(labels, psnrs) if m]
    same = [np.array_equal(m, rec["imagined"][s - 1]) and np.array_equal(r, rec["real"][s - 1])
            for m, r, s in zip(imagined, real, steps)]
    played = rec["actions"][:len(actions)]
    return {
        "command": shlex.join(["python", "scripts/app_walk.py", *args.argv]), "checkpoint": args.checkpoint or
        "checkpoints/maze9x9 (the app's default)", "app_args": run["app_args"], "maze": "9x9", "seed": 0,
        "script": args.script, "played": script_text(played),
        "frames_off_script": int(sum(a != b for a, b in zip(played, actions))),
        "frames_generated": len(rec["actions"]), "frames_shown": len(cap),
        "frames_not_shown": sorted(set(range(1, len(actions) + 1)) - set(steps)),
        "frames_equal_to_recording": int(sum(same)),
        "fps_shown": run["fps"], "walk_wall_s": run["wall_s"], "device": run["device"],
        "host": f"{os.cpu_count()} CPU cores", "loadavg_before_after": run["loadavg"],
        "mean_psnr": float(np.mean(psnrs)), "median_psnr": float(statistics.median(psnrs)),
        "psnr_per_50_frames": bucket_means(psnrs), "screenshots": run["shots"],
        "page_psnr_readout_max_abs_diff": max(app_diff, default=None),
        "status_at_end": run["status"], "frame_steps": steps, "psnr": [round(p, 3) for p in psnrs],
    }, real, imagined


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--script", default=WALK, help="the keys to play, one action per frame (default: the "
                   "300-frame walk through maze 9x9 seed 0 described below)")
    p.add_argument("--out", default="docs/maze9x9/app_walk", help="output folder (default %(default)s)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the app's, checkpoints/maze9x9)")
    p.add_argument("--app-args", default="", help="more arguments for the app, e.g. '--steps 4' (the "
                   "app's default is 1 denoising step, the commit folded into it)")
    p.add_argument("--shots", type=int, nargs="*", default=[1, 150, 300],
                   help="full-page screenshots at the segment ends nearest these frames (default 1 150 300)")
    p.add_argument("--every", type=int, default=25, help="contact-sheet spacing in frames (default 25)")
    p.add_argument("--fps", type=int, default=8, help="frame rate of walk.mp4 (default 8)")
    p.add_argument("--scale", type=int, default=4, help="walk.mp4's nearest-neighbour upscale (default 4)")
    p.add_argument("--quality", type=float, default=3, help="walk.mp4's quality, 0-10 (imageio-ffmpeg; "
                   "default 3: a few hundred KB for 300 frames)")
    p.add_argument("--chromium", default=CHROMIUM, help="Chromium binary (default %(default)s)")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    try:
        actions = parse_actions(args.script)
        first, n = runs(actions)[0]
        if len(KEYS[first]) > 1 or n < 2:
            raise ValueError("the script must start with one key held for 2+ frames, e.g. W*2 (the keys "
                             "change as frames are drawn, and none is drawn before the first)")
        import playwright  # noqa: F401
    except (ValueError, ImportError) as e:
        p.error(str(e) if isinstance(e, ValueError) else "needs Playwright: make install-dev")
    if not Path(args.chromium).exists():
        p.error(f"no Chromium at {args.chromium} (apt-get install chromium, or --chromium PATH)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result, real, imagined = report(args, actions, play(args, actions, out))
    video = video_frames(real, imagined, result["psnr"], result["frame_steps"], args.scale)
    iio.imwrite(out / "walk.mp4", video, fps=args.fps, codec="libx264", macro_block_size=1,
                quality=args.quality)
    write_image(out / "walk_sheet.png",
                sheet(real, imagined, result["psnr"], result["frame_steps"], args.every))
    (out / "walk.json").write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k not in ("psnr", "frame_steps", "status_at_end", "script")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
