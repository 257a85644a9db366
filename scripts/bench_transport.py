"""How much one frame costs to deliver to the page, model aside: the measurement that chose the app's
transport (issue 18). A synthetic source hands out ready 64x64 frames as fast as the page takes them,
over two transports served by one Gradio app:

  gradio  a generator event (Gradio's streaming outputs): each frame a 64x64 PNG data URI in a gr.HTML
  ws      a websocket route mounted in the same Gradio app (FastAPI): raw RGB bytes drawn on a canvas,
          the page acknowledging each frame, at most two in flight (the app's transport)

For each: frames per second shown by headless Chromium over --seconds, and the server's CPU
milliseconds per frame delivered (this process's CPU time; the browser runs apart).

    python scripts/bench_transport.py --seconds 5
"""

import argparse
import base64
import json
import os
import threading
import time

import numpy as np
from fastapi import WebSocket

from worldmodel.app.headless import CHROMIUM, CHROMIUM_ARGS, free_port
from worldmodel.bench import loadavg

FRAMES = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)

_PAGE_JS = """<script>
window.wmShown = 0;
window.wmWs = () => {
  const ws = new WebSocket(`ws://${location.host}/bench/ws`); ws.binaryType = 'arraybuffer';
  ws.onmessage = (e) => {
    const c = document.getElementById('cv'), ctx = c.getContext('2d');
    const rgb = new Uint8Array(e.data), img = ctx.createImageData(64, 64);
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
      img.data[j] = rgb[i]; img.data[j + 1] = rgb[i + 1]; img.data[j + 2] = rgb[i + 2]; img.data[j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0); window.wmShown++; ws.send('ack');
  };
};
let lastI = null;
new MutationObserver(() => {
  const img = document.querySelector('#gr-view img');
  if (img && img.src !== lastI) { lastI = img.src; window.wmShown++; }
})
  .observe(document.documentElement, {subtree: true, childList: true, attributes: true});
</script>"""


def _png(frame) -> str:
    import cv2

    return "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", frame)[1].tobytes()).decode()


def build(stop: threading.Event, period: float):
    import gradio as gr

    def stream():
        i = 0
        while not stop.is_set():
            i += 1
            time.sleep(period)  # unpaced, the generator floods the queue and the page shows ~1 frame
            yield f'<img src="{_png(FRAMES[i % len(FRAMES)])}" width="384" height="384">'

    with gr.Blocks() as demo:
        view = gr.HTML("", elem_id="gr-view")
        gr.HTML('<canvas id="cv" width="64" height="64" style="width:384px;image-rendering:pixelated">')
        go = gr.Button("go", elem_id="go")
        go.click(stream, None, view, show_progress="hidden")
    return demo


async def ws_route(ws: WebSocket):
    await ws.accept()
    i, in_flight = 0, 0
    try:
        while True:
            while in_flight < 2:
                i += 1
                await ws.send_bytes(FRAMES[i % len(FRAMES)].tobytes())
                in_flight += 1
            await ws.receive_text()
            in_flight -= 1
    except Exception:  # the page went away
        return


def measure(page, start, seconds: float) -> dict:
    start(page)
    time.sleep(1.0)
    n0, t0, c0 = page.evaluate("window.wmShown"), time.time(), time.process_time()
    time.sleep(seconds)
    n1, t1, c1 = page.evaluate("window.wmShown"), time.time(), time.process_time()
    return {"fps": (n1 - n0) / (t1 - t0), "server_cpu_ms_per_frame": 1e3 * (c1 - c0) / max(n1 - n0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--gradio-period", type=float, default=0.02,
                   help="seconds between the generator's frames (default 0.02: at most 50 fps)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    stop = threading.Event()
    demo = build(stop, args.gradio_period)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, head=_PAGE_JS, prevent_thread_lock=True,
                quiet=True)
    demo.app.add_api_websocket_route("/bench/ws", ws_route)
    load = [loadavg()]
    results = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        starts = (("ws", lambda page: page.evaluate("window.wmWs()")),
                  ("gradio", lambda page: page.click("#go")))
        for name, start in starts:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#go")
            results[name] = measure(page, start, args.seconds)
            page.close()
        stop.set()
        browser.close()
    demo.close()
    load.append(loadavg())
    out = {"results": results, "loadavg_before_after": load, "cpus": os.cpu_count()}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
