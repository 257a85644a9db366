"""Frame rate of the browser demo as a player sees it: starts `python -m worldmodel.app` (the shipped
checkpoint and the app's defaults unless told), opens it in headless Chromium, presses Start (the real
environment's look-around seeds the world; --compare keeps the env stepping alongside; --episode
starts from a file instead), holds W and counts the frames the page draws.

    python scripts/bench_browser.py --runs 3 --hold 10              # median of 3, env off
    python scripts/bench_browser.py --runs 3 --hold 10 --compare    # env on
    python scripts/bench_browser.py --tabs 8 --hold 20              # 8 tabs holding W at once

Also measures the server's start (process start to the page answering: loading, compiling and the
warm-up game), Start to first frame (click to the first frame drawn) for every start, and what an idle
tab costs the server: its CPU over --idle seconds with the tabs started and nothing held, against
the same server with no tab at all (measured first). Prints
the figures with the device and /proc/loadavg before and after; --json writes them.
Needs Playwright and Debian's chromium (`make install-dev`).
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from worldmodel.app.headless import CHROMIUM, CHROMIUM_ARGS, launch_app, stop_app
from worldmodel.bench import loadavg


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_pct(pid: int, seconds: float) -> float:
    """Percent of one core that process `pid` uses over the next `seconds`."""
    c0, t0 = cpu_seconds(pid), time.time()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.time() - t0)


def start(page, episode: str | None, compare: bool) -> float:
    """Starts a world in `page`; returns seconds from the click to the first frame drawn."""
    shown = page.evaluate("window.wmShown")
    if compare:
        page.check("#wm-compare input")
    t0 = time.perf_counter()
    if episode:
        with page.expect_file_chooser() as chooser:
            page.click("#wm-episode")
        chooser.value.set_files(str(Path(episode).resolve()))
    else:
        page.click("#wm-start")
    page.wait_for_function("n => window.wmShown > n", arg=shown, polling=10)
    return time.perf_counter() - t0


def hold_w(pages, seconds: float) -> list[dict]:
    """Holds W in every page at once; frames drawn and made per second, per page."""
    def counts():
        return [(p.evaluate("window.wmShown"), int(p.inner_text("#wm-frames"))) for p in pages]

    before, t0 = counts(), time.time()
    for p in pages:
        p.keyboard.down("w")
    time.sleep(seconds)
    after, held = counts(), time.time() - t0
    for p in pages:
        p.keyboard.up("w")
    return [{"fps_shown": (a[0] - b[0]) / held, "fps_made": (a[1] - b[1]) / held, "held_s": held}
            for a, b in zip(after, before)]


def run(args, proc_pid: int, url: str, pw) -> dict:
    browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
    out: dict = {"runs": [], "start_s": []}
    try:
        if args.idle:  # the server alone, no tab: what an idle tab adds is measured against this
            out["no_tab_core_pct"] = core_pct(proc_pid, args.idle)
        for _ in range(args.runs):
            pages = [browser.new_page(viewport={"width": 1400, "height": 1050}) for _ in range(args.tabs)]
            for page in pages:
                page.set_default_timeout(300_000)
                page.goto(url)
                page.wait_for_selector("#wm-start")
                out["start_s"].append(start(page, args.episode, args.compare))
            time.sleep(1.0)  # let the first frames settle
            out["runs"].append(hold_w(pages, args.hold))
            if args.screenshot:
                pages[0].screenshot(path=args.screenshot)
            if args.idle:
                time.sleep(1.0)
                out.setdefault("idle_core_pct", []).append(core_pct(proc_pid, args.idle))
            for page in pages:
                page.close()
    finally:
        browser.close()
    return out


def summary(out: dict, args) -> dict:
    per_run = [statistics.mean(t["fps_shown"] for t in tabs) for tabs in out["runs"]]
    s = {"fps_shown_median": statistics.median(per_run), "fps_shown_runs": per_run,
         "start_s_median": statistics.median(out["start_s"]), "start_s": out["start_s"]}
    if args.tabs > 1:
        s["fps_shown_per_tab_min"] = min(t["fps_shown"] for tabs in out["runs"] for t in tabs)
    if "idle_core_pct" in out:
        s["idle_core_pct"] = statistics.median(out["idle_core_pct"])
        s["no_tab_core_pct"] = out["no_tab_core_pct"]
        s["idle_tab_adds_core_pct"] = s["idle_core_pct"] - s["no_tab_core_pct"]
    return s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episode", help="start from this episode .npz instead of the Start button")
    p.add_argument("--compare", action="store_true", help="step the real environment alongside")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the app's, the shipped one)")
    p.add_argument("--app-args", default="", help="more arguments for the app, e.g. '--steps 1'")
    p.add_argument("--runs", type=int, default=3, help="runs (the median is reported; default 3)")
    p.add_argument("--tabs", type=int, default=1, help="tabs holding W at once (default 1)")
    p.add_argument("--hold", type=float, default=10.0, help="seconds to hold W per run")
    p.add_argument("--idle", type=float, default=0.0, help="seconds to measure the server with idle tabs")
    p.add_argument("--chromium", default=CHROMIUM)
    p.add_argument("--screenshot", help="save the page as this PNG after holding W")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    app_args = (["--checkpoint", args.checkpoint] if args.checkpoint else []) + args.app_args.split()
    load = [loadavg()]
    t0 = time.perf_counter()
    proc, url = launch_app(app_args, Path(tempfile.gettempdir()) / "bench_browser_app.log", timeout=600)
    server_start_s = time.perf_counter() - t0  # process start to the page answering: load, compile, warm-up
    try:
        with sync_playwright() as pw:
            out = run(args, proc.pid, url, pw)
    finally:
        stop_app(proc)
    load.append(loadavg())
    result = {"device": f"CPU, {os.cpu_count()} cores (app: --threads 1 per frame unless --app-args)",
              "app_args": app_args, "compare": args.compare, "tabs": args.tabs, "hold_s": args.hold,
              "start": "episode file" if args.episode else "Start button", "loadavg_before_after": load,
              "server_start_s": server_start_s,
              **summary(out, args), "raw": out}
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
