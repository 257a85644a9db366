"""`worldmodel play` (or `python -m worldmodel.app`): play inside the world model in the browser.

A Gradio Blocks page. The page's script (`_head_script`) keeps the set of held keys and buttons,
and its timer-driven loop asks the server for one frame at a time while anything is held, paced
to the target frame rate (--fps) and never more than one frame in flight per tab. So holding W
gives a steady stream of frames, a slow model lowers the rate instead of piling up requests,
and an idle tab costs the server nothing.

Each tab owns a `Session` (session.py) in a `gr.State`: its own `World` over the one model
loaded at start-up, an optional real Memory Maze env stepped alongside, and the recording.
"""
# No `from __future__ import annotations` here: Gradio finds the `gr.Request` parameters of the
# handlers by their evaluated annotations, and gradio is imported inside build_demo (it is slow
# to import, and every `worldmodel` subcommand imports this module to build its parser).

import argparse
import base64
import html
import json
import signal
import sys
from pathlib import Path

import numpy as np

from worldmodel.data.env import MAZE_SIZES  # cheap: memory_maze is only imported when an env is built

from .keymap import BUTTONS, CONTROLS, KEYS, action_for, parse_held

_CSS = """
#wm-view .wm-frames { display: flex; gap: 12px; }
#wm-view figure { margin: 0; flex: 0 1 auto; min-width: 0; }
#wm-view img { image-rendering: pixelated; display: block; border-radius: 4px; max-width: 100%;
               height: auto; }
#wm-view figcaption { font-size: 0.85em; opacity: 0.8; margin-top: 2px; }
#wm-view .wm-empty { display: flex; align-items: center; justify-content: center; background: #111;
                     color: #bbb; border-radius: 4px; text-align: center; }
#wm-status { font-variant-numeric: tabular-nums; }
kbd { border: 1px solid #8888; border-bottom-width: 2px; border-radius: 4px; padding: 0 5px;
      font-size: 0.9em; }
.wm-pad button { min-width: 0; }
"""


def _head_script(fps: float) -> str:
    """The page's game loop, built from the key map so that keymap.py is the only place keys live.

    A browser-side timer asks for the next frame (by clicking the hidden #wm-step button) when
    something is held, the previous frame has arrived and a frame period has passed. Idle tabs
    therefore send nothing: a gr.Timer would send every tick to the server, and each queued
    event costs it ~15 ms of CPU (measured: 30% of a core for one idle tab at 20 ticks/s).
    """
    buttons = {elem_id: list(dirs) for _, elem_id, dirs in BUTTONS}
    return """<script>
(() => {
  const KEYS = %s, BUTTONS = %s, PERIOD_MS = %.1f;
  const keys = new Map();      // KeyboardEvent.code -> direction, while the key is down
  let button = null;           // directions of the on-screen button being pressed
  const taps = [];             // presses released before the loop saw them: one frame each
  let pending = 0, last = -Infinity;
  const held = () => new Set([...keys.values(), ...(button || [])]);
  const typing = (el) => el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  window.addEventListener('keydown', (e) => {
    const dir = KEYS[e.code];
    if (!dir || typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    e.preventDefault();        // arrows and space would scroll the page or press a focused button
    if (!e.repeat) { keys.set(e.code, dir); taps.push([...held()]); }
  }, true);
  window.addEventListener('keyup', (e) => {
    if (keys.delete(e.code) && !typing(e.target)) e.preventDefault();
  }, true);
  // keyups are lost when focus leaves
  window.addEventListener('blur', () => { keys.clear(); button = null; });
  document.addEventListener('pointerdown', (e) => {
    const el = e.target.closest && e.target.closest('[id^="wm-btn-"]');
    if (!el || !BUTTONS[el.id]) return;
    button = BUTTONS[el.id]; taps.push([...held()]);
  });
  for (const type of ['pointerup', 'pointercancel'])
    document.addEventListener(type, () => { button = null; });
  // What the next frame should do: what is held now, else the oldest press too short to be seen
  // while held, else 'wait' (noop) if time runs without input; '' means no frame.
  const next = () => {
    const down = held();
    if (down.size) { taps.length = 0; return [...down].join(' '); }
    if (taps.length) return taps.shift().join(' ');
    const free = document.querySelector('#wm-free-run input');
    return free && free.checked ? 'wait' : '';
  };
  window.wmSent = '';
  window.wmDone = () => { pending = 0; };
  setInterval(() => {
    const now = performance.now();
    if (pending && now - pending < 10000) return;  // one frame in flight per tab (10 s: a lost reply)
    if (now - last < 0.95 * PERIOD_MS) return;
    const trigger = document.getElementById('wm-step');
    const want = trigger ? next() : '';
    if (!want) return;
    window.wmSent = want; pending = now; last = now;
    trigger.click();
  }, 5);
})();
</script>""" % (json.dumps(KEYS), json.dumps(buttons), 1000.0 / fps)


# The hidden step button's event: replace the keys textbox's value by what the loop asked for.
_STEP_JS = "(...args) => [args[0], window.wmSent]"
_DONE_JS = "() => { window.wmDone && window.wmDone(); }"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder or preset name (default: the shipped checkpoints/maze9x9; a "
                        "preset name gives untrained weights, e.g. 'tiny' for tests)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per frame (default 4)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                        "the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--fps", type=float, default=10.0,
                   help="target frame rate while a key is held (default 10)")
    p.add_argument("--context", type=int, default=21,
                   help="context frames that seed a world: the real env's start frame plus N-1 left turns "
                        "(20 turns are about one full look around), or the first N frames of an episode file")
    p.add_argument("--scale", type=int, default=6,
                   help="frames are shown upscaled nearest-neighbour by this factor (default 6: 64 -> 384 "
                        "pixels)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="frames computed at once over all tabs (default 2)")
    p.add_argument("--queue-size", type=int, default=32, help="pending events before new ones are refused")
    p.add_argument("--max-envs", type=int, default=2,
                   help="real Memory Maze envs alive at once over all tabs (~1.6 GB each; default 2)")
    p.add_argument("--max-record", type=int, default=3000,
                   help="frames recorded per tab before recording stops")


# -- rendering -----------------------------------------------------------------------------------
def _png(frame: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))  # cv2 wants BGR
    if not ok:
        raise RuntimeError(f"could not encode a frame of shape {frame.shape} as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _view_html(step, size: int) -> str:
    """The model's frame, and the real env's beside it when comparing.

    Frames travel at their own 64x64 size as data URIs (no temporary file per frame) and the
    browser upscales them nearest-neighbour (`image-rendering: pixelated`) to `size` pixels:
    ~16 KB a frame instead of ~135 KB for a PNG upscaled 6x on the server.
    """
    if step is None:
        return (f'<div class="wm-frames"><div class="wm-empty" style="width:{size}px;height:{size}px">'
                "Start a world: pick a maze and seed and press Start,<br>or start from an episode "
                "file.</div></div>")
    figs = [f'<figure><img id="wm-frame" src="{_png(step.frame)}" width="{size}" height="{size}" '
            f'alt="imagined frame"><figcaption>model (imagined)</figcaption></figure>']
    if step.real is not None:
        label = "real environment" + (f" · PSNR {step.psnr:.1f} dB" if step.psnr is not None else "")
        figs.append(f'<figure><img id="wm-real" src="{_png(step.real)}" width="{size}" height="{size}" '
                    f'alt="real frame"><figcaption>{label}</figcaption></figure>')
    return '<div class="wm-frames">' + "".join(figs) + "</div>"


def _status_html(session) -> str:
    if session is None:
        return '<div id="wm-status">no world yet</div>'
    s = session.status()
    ms = "–" if s["ms_per_frame"] is None else f"{s['ms_per_frame']:.1f}"
    fps = "–" if s["fps"] is None else f"{s['fps']:.1f}"
    full = "" if s["recorded"] < s["max_record"] else " (full: save it)"
    rec = f"{s['recorded']}/{s['max_record']}{full}"
    parts = [
        f'frame <b id="wm-frames">{s["frames"]}</b> (generated <b id="wm-steps">{s["steps"]}</b>)',
        f'<b id="wm-ms">{ms}</b> ms/frame',
        f'<b id="wm-fps">{fps}</b> fps',
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
    return '<div id="wm-status">' + " · ".join(parts) + "</div>"


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
def _start_handlers(world, sessions, args: argparse.Namespace, render):
    """The handlers that start a tab's game: from the real environment, or from an episode file.
    Every tab gets its own `World` over `world`'s model (shared: its forward is stateless)."""
    import gradio as gr

    from worldmodel.eval.rollout import look_around, observation_poses
    from worldmodel.world import World

    from .session import EnvsBusy, RealEnv, Session

    # shared read-only; each session its own state
    model, device, codec = world.model, world.device, world.codec

    def new_session(seed: int) -> Session:
        return Session(World(model, steps=args.steps, device=device, seed=seed, codec=codec), fps=args.fps,
                       max_record=args.max_record)

    def start_env(maze, seed, compare, request: gr.Request):
        seed = int(seed or 0)
        try:
            env = RealEnv(maze, seed, sessions.env_slots)
        except EnvsBusy as e:
            raise gr.Error(str(e)) from e
        except Exception as e:  # a missing GL backend or a broken memory_maze install: say what happened
            raise gr.Error(f"could not build the real environment: {e}") from e
        session = None
        try:
            obs, actions = look_around(env, args.context)
            session = new_session(seed)
            step = session.start(np.stack([o["image"] for o in obs]), actions, poses=observation_poses(obs),
                                 env=env if compare else None, env_obs=obs if compare else None,
                                 layout=obs[-1]["maze_layout"])
        except Exception as e:
            env.close()
            if session is not None:
                session.close()
            raise gr.Error(f"could not start the world: {e}") from e
        if not compare:
            env.close()
        sessions.adopt(request.session_hash, session)
        return session, *render(session, step)

    def start_episode(path, request: gr.Request):
        if not path:
            return (gr.skip(),) * 4
        session = new_session(0)
        try:
            frames, actions, poses, layout = Session.episode_context(path, args.context)
            step = session.start(frames, actions, poses, layout=layout)
        except ValueError as e:
            session.close()
            raise gr.Error(f"could not start from {Path(path).name}: {e}") from e
        sessions.adopt(request.session_hash, session)
        return session, *render(session, step)

    return start_env, start_episode


def _play_handlers(render):
    """The handlers of a running game: a frame per tick, save and load states, save the recording."""
    import gradio as gr

    def skip3():  # no change to the three frame outputs
        return gr.skip(), gr.skip(), gr.skip()

    def tick(session, keys):
        held = parse_held(keys)
        if session is None or not held or not session.lock.acquire(blocking=False):
            return skip3()
        try:
            if session.closed:
                return skip3()
            step = session.step(action_for(held))
        finally:
            session.lock.release()
        return render(session, step)

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
            return skip3()
        with session.lock:
            was_comparing = session.compare
            try:
                step = session.load_state(path)
            except ValueError as e:
                gr.Warning(f"Could not load {Path(path).name}: {e} — the running world is kept.")
                return skip3()
        if was_comparing:
            gr.Info("Loaded. The real environment cannot follow a loaded state, so the side-by-side "
                    "view is off.")
        return render(session, step)

    def save_recording(session):
        if not running(session):
            gr.Warning("Start a world first: nothing is recorded yet.")
            return gr.skip()
        with session.lock:
            return [str(p) for p in session.save_recording()]

    return tick, save_state, load_state, save_recording


def _side_panel(args: argparse.Namespace) -> dict:
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
        f"steps per frame, target {args.fps:g} fps. Recordings keep the context and the imagined frames "
        "(`context_len` marks where imagination starts); imagined frames carry the pose the "
        "model was given, dead-reckoned from the actions (the model never sees the real environment).")
    return c


def build_demo(world, sessions, args: argparse.Namespace):
    """The Blocks page. Every tab's game is kept in `sessions` (session.Sessions) until the tab closes."""
    import gradio as gr

    size = world.frame_shape[0] * args.scale

    def unload(request: gr.Request) -> None:
        sessions.close(request.session_hash)

    def render(session, step):
        return _view_html(step, size), _status_html(session), _plot_html(session)

    start_env, start_episode = _start_handlers(world, sessions, args, render)
    tick, save_state, load_state, save_recording = _play_handlers(render)
    with gr.Blocks(title="worldmodel · play", fill_width=True, delete_cache=(600, 3600)) as demo:
        session = gr.State(None, delete_callback=lambda s: s is not None and s.close())
        keys = gr.Textbox(visible=False)  # filled in by _STEP_JS for each frame
        step_trigger = gr.Button("step", visible="hidden", elem_id="wm-step")  # clicked by the page's loop
        gr.Markdown("## worldmodel · play inside the model\n" + CONTROLS)
        with gr.Row():
            with gr.Column(scale=2):
                view = gr.HTML(_view_html(None, size), elem_id="wm-view", js_on_load=None)
                status = gr.HTML(_status_html(None), js_on_load=None)
                plot = gr.HTML("", js_on_load=None)
                for row in (BUTTONS[:3], BUTTONS[3:]):
                    with gr.Row(elem_classes="wm-pad"):
                        for label, elem_id, _ in row:
                            # pressed and held through the page script
                            gr.Button(label, elem_id=elem_id, size="md")
                gr.Checkbox(False, label="Time runs without input (noop frames when nothing is held)",
                            elem_id="wm-free-run")  # read by the page's loop
            with gr.Column(scale=1, min_width=320):
                c = _side_panel(args)

        frame_outputs = [view, status, plot]
        c["start"].click(start_env, [c["maze"], c["seed"], c["compare"]], [session, *frame_outputs],
                         concurrency_id="setup", concurrency_limit=1, api_visibility="private")
        c["episode"].upload(start_episode, [c["episode"]], [session, *frame_outputs],
                            api_visibility="private")
        step_trigger.click(tick, [session, keys], frame_outputs, js=_STEP_JS, trigger_mode="once",
                           show_progress="hidden", api_visibility="private").then(None, js=_DONE_JS)
        c["save"].click(save_state, [session], [c["downloads"]], api_visibility="private")
        c["load"].upload(load_state, [session, c["load"]], frame_outputs, api_visibility="private")
        c["record"].click(save_recording, [session], [c["downloads"]], api_visibility="private")
        demo.unload(unload)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    return demo


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the server like Ctrl+C, so the cleanup below runs


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from worldmodel.world import load_world

    from .session import Sessions

    try:
        world = load_world(args.checkpoint, device=args.device, steps=args.steps)
    except ValueError as e:
        print(f"worldmodel play: {e}", file=sys.stderr)
        return 2
    sessions = Sessions(args.max_envs)
    demo = build_demo(world, sessions, args)
    try:
        demo.launch(server_name=args.host, server_port=args.port, head=_head_script(args.fps), css=_CSS,
                    show_error=True, inbrowser=False, quiet=True, prevent_thread_lock=True)
    except OSError as e:  # typically: the port is taken
        print(f"worldmodel play: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
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
