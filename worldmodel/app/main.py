"""`worldmodel play` (or `python -m worldmodel.app`): play inside the world model in the browser.

A Gradio Blocks page for starting, saving and loading games, and one websocket per tab, mounted
in the same server, for the frames (stream.py): the page's script (`_head_script`) tells the
server which keys are held when that changes, and the server streams frames as fast as the model
makes them while anything is held, dropping (not queueing) frames a slow page cannot take; an
idle tab sends and costs nothing.

Each tab owns a `Session` (session.py) in a `gr.State`: its own `World` over the one model
loaded at start-up, an optional real Memory Maze env stepped alongside, and the recording.
"""
# No `from __future__ import annotations` here: Gradio finds the `gr.Request` parameters of the
# handlers by their evaluated annotations, and gradio is imported inside build_demo (it is slow
# to import, and every `worldmodel` subcommand imports this module to build its parser).

import argparse
import html
import json
import signal
import sys
from pathlib import Path

import numpy as np

from worldmodel.config import DEFAULT_FOLD_COMMIT, DEFAULT_STEPS
from worldmodel.data.env import MAZE_SIZES  # cheap: memory_maze is only imported when an env is built

from .keymap import BUTTONS, CONTROLS, KEYS
from .stream import ROUTE

_CSS = """
#wm-view .wm-frames { display: flex; gap: 12px; }
#wm-view figure { margin: 0; flex: 0 1 auto; min-width: 0; }
#wm-view canvas { image-rendering: pixelated; display: block; border-radius: 4px; max-width: 100%;
                  height: auto; background: #111; }
#wm-view figcaption { font-size: 0.85em; opacity: 0.8; margin-top: 2px; }
#wm-view .wm-empty { display: flex; align-items: center; justify-content: center; background: #111;
                     color: #bbb; border-radius: 4px; text-align: center; }
#wm-status { font-variant-numeric: tabular-nums; margin-top: 6px; }
kbd { border: 1px solid #8888; border-bottom-width: 2px; border-radius: 4px; padding: 0 5px;
      font-size: 0.9em; }
.wm-pad button { min-width: 0; }
"""


# The page's side of the frame stream (stream.py); %s: the key map, the on-screen buttons, the route.
_PAGE_JS = r"""<script>
(() => {
  const KEYS = %s, BUTTONS = %s, ROUTE = %s;
  const keys = new Map();      // KeyboardEvent.code -> direction, while the key is down
  let button = null;           // directions of the on-screen button being pressed
  let ws = null, token = null, sentHeld = '';
  const shownAt = [];
  window.wmShown = 0;          // frames drawn (benchmarks and tests read it)
  const held = () => [...new Set([...keys.values(), ...(button || [])])].join(' ');
  const typing = (el) => el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  const freeRun = () => {
    const el = document.querySelector('#wm-free-run input');
    return !!(el && el.checked);
  };
  const queued = [];           // what the page said while its socket was still connecting
  const send = (msg) => {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg));
    else if (ws && ws.readyState === 0) queued.push(msg);
  };
  const changed = (press) => {  // a press is one frame even if released before the model gets to it
    const now = held();
    if (press) send({held: now, press: now}); else if (now !== sentHeld) send({held: now});
    sentHeld = now;
  };
  window.addEventListener('keydown', (e) => {
    const dir = KEYS[e.code];
    if (!dir || typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    e.preventDefault();        // arrows and space would scroll the page or press a focused button
    if (!e.repeat) { keys.set(e.code, dir); changed(true); }
  }, true);
  window.addEventListener('keyup', (e) => {
    if (keys.delete(e.code)) { if (!typing(e.target)) e.preventDefault(); changed(false); }
  }, true);
  window.addEventListener('blur', () => { keys.clear(); button = null; changed(false); });  // keyups get lost
  document.addEventListener('pointerdown', (e) => {
    const el = e.target.closest && e.target.closest('[id^="wm-btn-"]');
    if (el && BUTTONS[el.id]) { button = BUTTONS[el.id]; changed(true); }
  });
  for (const type of ['pointerup', 'pointercancel'])
    document.addEventListener(type, () => { if (button) { button = null; changed(false); } });
  document.addEventListener('change', (e) => {
    if (e.target.closest && e.target.closest('#wm-free-run')) send({free: freeRun()});
  });
  const draw = (id, bytes, w, h) => {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    const ctx = canvas.getContext('2d'), img = ctx.createImageData(w, h), px = img.data;
    for (let i = 0, j = 0; i < bytes.length; i += 3, j += 4) {
      px[j] = bytes[i]; px[j + 1] = bytes[i + 1]; px[j + 2] = bytes[i + 2]; px[j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  };
  const show = (data) => {
    const n = new DataView(data).getUint32(0);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
    const [h, w] = head.shape, size = h * w * 3;
    draw('wm-frame', new Uint8Array(data, 4 + n, size), w, h);
    const real = document.getElementById('wm-real-fig');
    if (real) real.style.display = head.real === null ? 'none' : '';
    if (head.real !== null) {
      draw('wm-real', new Uint8Array(data, 4 + n + size, size), w, h);
      document.getElementById('wm-real-label').textContent = head.real;
    }
    const status = document.getElementById('wm-status'), plot = document.getElementById('wm-plot');
    if (status) status.innerHTML = head.status;
    if (plot) plot.innerHTML = head.plot;
    const now = performance.now();
    shownAt.push(now); if (shownAt.length > 20) shownAt.shift();
    const fps = document.getElementById('wm-shown-fps');
    if (fps && shownAt.length > 2 && now - shownAt[0] > 0)
      fps.textContent = ((shownAt.length - 1) * 1000 / (now - shownAt[0])).toFixed(1);
    window.wmShown++;
    send({ack: head.seq});
  };
  const connect = (t) => {
    if (ws) ws.close();
    token = t; sentHeld = ''; shownAt.length = 0;
    if (!t) { ws = null; return; }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const base = location.pathname.replace(/\/$/, '');
    ws = new WebSocket(`${proto}//${location.host}${base}${ROUTE}?token=${encodeURIComponent(t)}`);
    ws.binaryType = 'arraybuffer';
    queued.length = 0;
    ws.onopen = () => {
      for (const msg of queued.splice(0)) send(msg);
      send({held: held(), free: freeRun()}); sentHeld = held();
    };
    ws.onmessage = (e) => show(e.data);
  };
  new MutationObserver(() => {  // a new game (Start, episode) renders a new token into the view
    const el = document.querySelector('#wm-view [data-token]');
    const t = el ? el.dataset.token : null;
    if (t !== token) connect(t);
  }).observe(document.documentElement, {subtree: true, childList: true});
})();
</script>"""


def _head_script() -> str:
    """The page's side of the frame stream (stream.py), built from the key map so that keymap.py is
    the only place keys live. It tells the server the held directions when they change (not per
    frame), draws each frame message on the canvases and acknowledges it; the server paces itself."""
    buttons = {elem_id: list(dirs) for _, elem_id, dirs in BUTTONS}
    return _PAGE_JS % (json.dumps(KEYS), json.dumps(buttons), json.dumps(ROUTE))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder or preset name (default: the shipped checkpoints/maze9x9; a "
                        "preset name gives untrained weights, e.g. 'tiny' for tests)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"denoising steps per frame (default {DEFAULT_STEPS})")
    p.add_argument("--fold-commit", action=argparse.BooleanOptionalAction,
                   default=DEFAULT_FOLD_COMMIT,
                   help="keep the state of the last denoising pass instead of running a commit pass: "
                   "one model pass per frame fewer (default: on; BENCHMARKS.md, 'Sampler "
                   "steps', has what each does to quality)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="compile each frame's model pass and autoencoder with torch.compile (default: on; "
                   "~20%% less time a frame on a 2-core CPU; the server compiles before it serves: ~100 s on "
                   "2 cores the first time, ~50 s once inductor's disk cache holds parts of it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                        "the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-fps", type=float, default=0.0,
                   help="cap on each tab's frame rate while a key is held (default 0: as fast as the model)")
    p.add_argument("--context", type=int, default=21,
                   help="context frames that seed a world: the real env's start frame plus N-1 left turns "
                        "(20 turns are about one full look around), or the first N frames of an episode file")
    p.add_argument("--scale", type=int, default=6,
                   help="frames are shown upscaled nearest-neighbour by this factor (default 6: 64 -> 384 "
                        "pixels)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="frames computed at once over all tabs (worker threads; default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per frame (default 1: on 2 busy cores 2 threads per world "
                        "measured several times slower)")
    p.add_argument("--queue-size", type=int, default=32, help="pending page events before new ones are "
                                                               "refused")
    p.add_argument("--max-envs", type=int, default=2,
                   help="real Memory Maze envs alive at once over all tabs (~1.6 GB each; default 2)")
    p.add_argument("--max-record", type=int, default=3000,
                   help="frames recorded per tab before recording stops")


# -- rendering -----------------------------------------------------------------------------------
def _view_html(session, size: int) -> str:
    """The canvases the stream draws on (the model's frame, and the real env's beside it when
    comparing), the status line and the PSNR plot. Frames travel at their own size as raw bytes
    (stream.py) and the browser upscales them nearest-neighbour (`image-rendering: pixelated`) to
    `size` pixels. `data-token` names the game to the stream; a new one makes the page reconnect."""
    if session is None:
        return (f'<div class="wm-frames"><div class="wm-empty" style="width:{size}px;height:{size}px">'
                "Start a world: pick a maze and seed and press Start,<br>or start from an episode "
                'file.</div></div><div id="wm-status">no world yet</div>')
    h, w, _ = session.world.frame_shape

    def canvas(elem_id: str) -> str:
        return f'<canvas id="{elem_id}" width="{w}" height="{h}" style="width:{size}px"></canvas>'

    return (f'<div class="wm-frames" data-token="{session.token}">'
            f'<figure>{canvas("wm-frame")}<figcaption>model (imagined)</figcaption></figure>'
            f'<figure id="wm-real-fig" style="display:none">{canvas("wm-real")}'
            '<figcaption id="wm-real-label">real environment</figcaption></figure></div>'
            f'<div id="wm-status">{_status_html(session)}</div><div id="wm-plot"></div>')


def _frame_header(session, step) -> dict:
    """What travels with each frame on the stream besides its pixels."""
    real = None
    if step.real is not None:
        real = "real environment" + (f" · PSNR {step.psnr:.1f} dB" if step.psnr is not None else "")
    return {"status": _status_html(session), "plot": _plot_html(session), "real": real}


def _status_html(session) -> str:
    s = session.status()
    ms = "–" if s["ms_per_frame"] is None else f"{s['ms_per_frame']:.1f}"
    fps = "–" if s["fps"] is None else f"{s['fps']:.1f}"
    full = "" if s["recorded"] < s["max_record"] else " (full: save it)"
    rec = f"{s['recorded']}/{s['max_record']}{full}"
    parts = [
        f'frame <b id="wm-frames">{s["frames"]}</b> (generated <b id="wm-steps">{s["steps"]}</b>)',
        f'<b id="wm-ms">{ms}</b> ms/frame',
        f'<b id="wm-fps">{fps}</b> fps made, <b id="wm-shown-fps">–</b> shown',
        f'state <b id="wm-state">{s["state_bytes"]:,}</b> bytes (constant)',
        f'device <b>{html.escape(s["device"])}</b>',
        f"recorded {rec}",
    ]
    if s["pose"] is not None:  # what the model's memory is read at
        x, y, dx, dy = s["pose"]
        parts.append(f'pose <b id="wm-pose">{x:.1f}, {y:.1f}, '
                     f'{np.degrees(np.arctan2(dy, dx)) % 360:.0f}&deg;</b>')
    if s["compare"] and s["mean_psnr"] is not None:
        parts.append(f"mean PSNR <b>{s['mean_psnr']:.1f}</b> dB")
    return " · ".join(parts)


def _plot_html(session, width: int = 384, height: int = 110, last: int = 300) -> str:
    """A running PSNR plot as inline SVG (cheap to send every frame, unlike a plot component)."""
    if session is None or not session.compare:
        return ""
    values = list(session.psnrs)[-last:]
    top = max(40.0, max(values, default=0.0))
    pad, span = 24, max(50, len(values))  # the x axis grows with the game up to `last` frames

    def x(i: int) -> float:
        return pad + i * (width - pad) / (span - 1)

    def y(db: float) -> float:
        return height - 14 - db / top * (height - 24)

    grid = "".join(f'<line x1="{pad}" x2="{width}" y1="{y(db):.1f}" y2="{y(db):.1f}" stroke="#8884"/>'
                   f'<text x="0" y="{y(db) + 4:.1f}" font-size="10" fill="currentColor">{db}</text>'
                   for db in range(0, int(top) + 1, 10))
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    return (f'<svg id="wm-psnr" width="{width}" height="{height}" role="img" '
            f'aria-label="PSNR per frame">{grid}'
            f'<polyline fill="none" stroke="#e8743b" stroke-width="1.5" points="{points}"/>'
            f'<text x="{pad}" y="{height - 1}" font-size="10" fill="currentColor">'
            f'PSNR (dB) of the model frame against the real one, last {span} frames</text></svg>')


# -- the app -------------------------------------------------------------------------------------
def _make_context(args: argparse.Namespace):
    """(maze, seed, slots) -> the real env's look-around that seeds a world (session.Contexts)."""
    from worldmodel.eval.rollout import look_around, observation_poses

    from .session import RealEnv

    def make(maze: str, seed: int, slots) -> tuple:
        env = RealEnv(maze, seed, slots)
        try:
            obs, actions = look_around(env, args.context)
        finally:
            env.close()
        return np.stack([o["image"] for o in obs]), actions, observation_poses(obs), obs[-1]["maze_layout"]

    return make


def _start_handlers(world, sessions, contexts, args: argparse.Namespace, view):
    """The handlers that start a tab's game: from the real environment, or from an episode file.
    Every tab gets its own `World` over `world`'s model (shared: its forward is stateless)."""
    import gradio as gr

    from worldmodel.eval.rollout import look_around, observation_poses
    from worldmodel.world import World

    from .session import EnvsBusy, RealEnv, Session

    # shared read-only; each session its own state
    model, device, codec = world.model, world.device, world.codec

    def new_session(seed: int) -> Session:
        return Session(World(model, steps=args.steps, device=device, seed=seed, codec=codec,
                             fold_commit=args.fold_commit, compile=args.compile),
                       max_record=args.max_record)

    def with_env(maze: str, seed: int) -> Session:
        """A side-by-side game: the env stays alive, at the last context frame."""
        env = RealEnv(maze, seed, sessions.env_slots)
        session = None
        try:
            obs, actions = look_around(env, args.context)
            session = new_session(seed)
            session.start(np.stack([o["image"] for o in obs]), actions, poses=observation_poses(obs),
                          env=env, env_obs=obs, layout=obs[-1]["maze_layout"])
            return session
        except BaseException:
            env.close()
            if session is not None:
                session.close()
            raise

    def start_env(maze, seed, compare, request: gr.Request):
        seed = int(seed or 0)
        try:
            if compare:
                session = with_env(maze, seed)
            else:  # the look-around is kept per maze and seed: no env at all after the first time
                frames, actions, poses, layout = contexts.get(maze, seed, sessions.env_slots)
                session = new_session(seed)
                session.start(frames, actions, poses=poses, layout=layout)
        except EnvsBusy as e:
            raise gr.Error(str(e)) from e
        except Exception as e:  # a missing GL backend or a broken memory_maze install: say what happened
            raise gr.Error(f"could not start the world from the real environment: {e}") from e
        sessions.adopt(request.session_hash, session)
        return session, view(session)

    def start_episode(path, request: gr.Request):
        if not path:
            return gr.skip(), gr.skip()
        session = new_session(0)
        try:
            frames, actions, poses, layout = Session.episode_context(path, args.context)
            session.start(frames, actions, poses, layout=layout)
        except ValueError as e:
            session.close()
            raise gr.Error(f"could not start from {Path(path).name}: {e}") from e
        sessions.adopt(request.session_hash, session)
        return session, view(session)

    return start_env, start_episode


def _play_handlers():
    """Save and load states, save the recording (the frames themselves come through stream.py)."""
    import gradio as gr

    def running(session) -> bool:
        return session is not None and not session.closed

    def save_state(session):
        if not running(session):
            gr.Warning("Start a world first: there is no state to save yet.")
            return gr.skip()
        with session.lock:
            return [str(session.save_state())]

    def load_state(session, path):
        if not running(session) or not path:
            gr.Warning("Start a world first, then load a saved state into it.")
            return
        with session.lock:
            was_comparing = session.compare
            try:
                session.load_state(path)  # its frame goes to the page through the stream
            except ValueError as e:
                gr.Warning(f"Could not load {Path(path).name}: {e} — the running world is kept.")
                return
        if was_comparing:
            gr.Info("Loaded. The real environment cannot follow a loaded state, so the side-by-side "
                    "view is off.")

    def save_recording(session):
        if not running(session):
            gr.Warning("Start a world first: nothing is recorded yet.")
            return gr.skip()
        with session.lock:
            return [str(p) for p in session.save_recording()]

    return save_state, load_state, save_recording


def _side_panel(args: argparse.Namespace, rate: str) -> dict:
    """The right-hand column: start a world, save and load. Returns its interactive components."""
    import gradio as gr

    c = {}
    gr.Markdown("### Start a world")
    c["maze"] = gr.Dropdown(list(MAZE_SIZES), value="9x9", label="maze size")
    c["seed"] = gr.Number(0, precision=0, label="seed")
    c["compare"] = gr.Checkbox(False, label="Real vs imagined: step the real environment alongside",
                               elem_id="wm-compare")
    c["start"] = gr.Button("Start", variant="primary", elem_id="wm-start")
    gr.Markdown(f"The real environment looks around ({args.context} frames) to seed the model; from "
                "then on the model dead-reckons where you are from your keys, and a pose-keyed "
                "memory shows what it saw there (turn around on the spot to see it).")
    c["episode"] = gr.UploadButton("Start from an episode file (.npz)", file_types=[".npz"],
                                   elem_id="wm-episode")
    gr.Markdown("### Save and load")
    with gr.Row():
        c["save"] = gr.Button("Save state", elem_id="wm-save")
        c["load"] = gr.UploadButton("Load state (.safetensors)", file_types=[".safetensors"],
                                    elem_id="wm-load")
    c["record"] = gr.Button("Save recording (mp4 + episode .npz)", elem_id="wm-record")
    c["downloads"] = gr.File(label="downloads", file_count="multiple", interactive=False, height=150,
                             elem_id="wm-downloads")
    gr.Markdown(
        f"Model: `{html.escape(str(args.checkpoint or 'checkpoints/maze9x9'))}`, {args.steps} denoising "
        f"step{'s' * (args.steps != 1)} per frame; {rate} Recordings keep the context and the imagined "
        "frames (`context_len` marks where imagination starts); imagined frames carry the pose the "
        "model was given, dead-reckoned from the actions (the model never sees the real environment).")
    return c


# The frame rate at the app's defaults as measured (BENCHMARKS.md, "The demo at the model's speed").
MEASURED_RATE = ("frames come as fast as the model makes them: measured at these defaults (1 step, one "
                 "model pass a frame, compiled) in headless Chromium on a quiet 2-core CPU, 17.0 and 19.5 "
                 "frames/s holding W (two sets, median of 3 runs each; 16.2 with the real environment "
                 "alongside), less while other jobs load it (BENCHMARKS.md).")


def build_demo(world, sessions, contexts, args: argparse.Namespace):
    """The Blocks page. Every tab's game is kept in `sessions` (session.Sessions) until the tab closes."""
    import gradio as gr

    size = world.frame_shape[0] * args.scale

    def unload(request: gr.Request) -> None:
        sessions.close(request.session_hash)

    def view(session) -> str:
        return _view_html(session, size)

    start_env, start_episode = _start_handlers(world, sessions, contexts, args, view)
    save_state, load_state, save_recording = _play_handlers()
    with gr.Blocks(title="worldmodel · play", fill_width=True, delete_cache=(600, 3600)) as demo:
        session = gr.State(None, delete_callback=lambda s: s is not None and s.close())
        gr.Markdown("## worldmodel · play inside the model\n" + CONTROLS)
        with gr.Row():
            with gr.Column(scale=2):
                screen = gr.HTML(view(None), elem_id="wm-view", js_on_load=None)
                for row in (BUTTONS[:3], BUTTONS[3:]):
                    with gr.Row(elem_classes="wm-pad"):
                        for label, elem_id, _ in row:
                            # pressed and held through the page script
                            gr.Button(label, elem_id=elem_id, size="md")
                gr.Checkbox(False, label="Time runs without input (noop frames when nothing is held)",
                            elem_id="wm-free-run")  # read by the page's script
            with gr.Column(scale=1, min_width=320):
                c = _side_panel(args, MEASURED_RATE)

        c["start"].click(start_env, [c["maze"], c["seed"], c["compare"]], [session, screen],
                         concurrency_id="setup", concurrency_limit=1, api_visibility="private")
        c["episode"].upload(start_episode, [c["episode"]], [session, screen], api_visibility="private")
        c["save"].click(save_state, [session], [c["downloads"]], api_visibility="private")
        c["load"].upload(load_state, [session, c["load"]], None, api_visibility="private")
        c["record"].click(save_recording, [session], [c["downloads"]], api_visibility="private")
        demo.unload(unload)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    return demo


def _warm_up(world, args: argparse.Namespace) -> None:
    """One short game before serving: the first frames of a process pay one-time costs (allocator,
    kernels' first calls: seconds under load; the compile) that would otherwise fall on the first
    player."""
    from worldmodel.world import World

    warm = World(world.model, steps=args.steps, device=world.device, codec=world.codec,
                 fold_commit=args.fold_commit, compile=args.compile)
    warm.reset(np.zeros((args.context, *warm.frame_shape), np.uint8), np.zeros(args.context, np.int64))
    for _ in range(2):
        warm.step(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl+C, so the cleanup below runs


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str | None) -> str | None:
    """What to tell someone who serves the demo beyond this machine (`--host 0.0.0.0`)."""
    if host is None or host in LOCAL_HOSTS:
        return None
    return (f"worldmodel play: warning: --host {host} makes the demo reachable from other machines on "
            "the network, without a password; anyone who reaches the port can play and upload files "
            "(use the default 127.0.0.1 to keep it on this machine)")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    warning = exposure_warning(args.host)
    if warning:  # both `worldmodel play` and `python -m worldmodel.app` come through here
        print(warning, file=sys.stderr, flush=True)
    import torch

    from worldmodel.world import load_world

    from .session import Contexts, Sessions
    from .stream import Streams

    torch.set_num_threads(args.threads)
    try:
        world = load_world(args.checkpoint, device=args.device, steps=args.steps,
                           fold_commit=args.fold_commit)
    except ValueError as e:
        print(f"worldmodel play: {e}", file=sys.stderr)
        return 2
    sessions, contexts = Sessions(args.max_envs), Contexts(_make_context(args))
    contexts.prefetch("9x9", 0)  # the page's default: its first Start needs no env
    if args.compile:
        print("worldmodel play: compiling the model for this CPU (~100 s on 2 cores the first time, "
              "~50 s after; --no-compile skips it)", flush=True)
    _warm_up(world, args)
    demo = build_demo(world, sessions, contexts, args)
    streams = Streams(sessions.by_token, _frame_header, workers=args.concurrency, max_fps=args.max_fps)
    try:
        demo.launch(server_name=args.host, server_port=args.port, head=_head_script(), css=_CSS,
                    show_error=True, inbrowser=False, quiet=True, prevent_thread_lock=True)
    except OSError as e:  # typically: the port is taken
        print(f"worldmodel play: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    streams.mount(demo.app)
    print(f"worldmodel play: serving on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.block_thread()  # returns on Ctrl+C or SIGTERM, after closing the server
    finally:
        sessions.close_all()  # real envs and the tabs' temporary files
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worldmodel.app",
                                     description="Play inside the world model in the browser.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
