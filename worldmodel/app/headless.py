"""The demo run headless, as the browser tests and scripts/bench_browser.py drive it:
`python -m worldmodel.app` as a subprocess on a free local port, and the Chromium that works offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Debian's (`apt-get install -y chromium`): Playwright's own download needs a network
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(app_args: list[str], log: Path, env: dict | None = None, timeout: float = 180.0):
    """Starts `python -m worldmodel.app --port P *app_args` from the repo root with its output in `log` and
    waits until the page answers. Returns (process, url); RuntimeError with the log's tail if the
    app exits or does not answer within `timeout` seconds."""
    port = free_port()
    env = dict(os.environ if env is None else env, GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as out:
        command = [sys.executable, "-m", "worldmodel.app", "--port", str(port), *app_args]
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_app(proc)
            tail = Path(log).read_text()[-3000:]
            raise RuntimeError(f"the app did not come up (exit {proc.poll()}):\n{tail}")
        time.sleep(0.5)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
