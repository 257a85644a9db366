"""The frame stream between a tab's page and its `Session`: a websocket route mounted in the app's
Gradio (FastAPI) server, one connection per tab, at ``/wm/stream?token=...``.

  page -> server  JSON, only when something changes: ``{"held": "forward left"}`` (the held
                  directions), ``{"press": "forward"}`` (a key went down: one frame even if it is
                  released before the model gets to it), ``{"free": true}`` (time runs without
                  input), and ``{"ack": n}`` when frame message n has been drawn.
  server -> page  one binary message per frame: a 4-byte big-endian header length, the header
                  (JSON: frame number, the status and plot HTML, the real-env caption), then the
                  model's frame as raw 64x64 RGB bytes (and the real env's after it), which the page
                  draws on a canvas scaled up by CSS (`image-rendering: pixelated`): no image
                  encoding on either side.

Pipelined: while a key is held the tab's stepper asks its worker for the next frame as soon as the
last one is made, so the next frame is being computed while the last one travels and is drawn.
Back-pressure (`Pacer`): at most `window` frames are on their way to the page; a frame made while
the window is full waits in a one-frame slot, and a newer one replaces it (dropped, counted). A
slow page therefore skips frames and never builds a backlog. With nothing held the stepper sleeps
on an event: an idle tab sends nothing and costs nothing.

Why a websocket and not Gradio's generator outputs: `scripts/bench_transport.py` (BENCHMARKS.md)
measured both at under 2.5 ms of server CPU a frame, so per-frame cost did not decide; a generator
gets no word back from the page, so it can neither drop frames for a slow page nor hear key changes
except through more queued events (each ~15 ms of server CPU, measured for the old loop).
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from .keymap import action_for, parse_held

ROUTE = "/wm/stream"


class Controls:
    """What one tab's player is doing, as its page reports changes, and the action of the next frame."""

    def __init__(self):
        self.held: set[str] = set()
        self.presses: deque[set[str]] = deque(maxlen=16)  # presses not yet seen while held
        self.free_run = False

    def update(self, message: dict) -> None:
        if "held" in message:
            self.held = parse_held(message["held"])
        if "press" in message:
            self.presses.append(parse_held(message["press"]))
        if "free" in message:
            self.free_run = bool(message["free"])

    def next_action(self) -> int | None:
        """What is held now, else the oldest press released before a frame saw it, else noop if time
        runs without input; None: no frame (the tab is idle)."""
        if self.held:
            self.presses.clear()
            return action_for(self.held)
        if self.presses:
            return action_for(self.presses.popleft())
        return action_for(()) if self.free_run else None


class Pacer:
    """Back-pressure of one tab's stream: at most `window` frames sent and not yet acknowledged; a
    frame offered while the window is full waits in a one-frame slot, and a newer frame replaces it
    (`dropped` counts those). Memory is bounded whatever the page does."""

    def __init__(self, window: int = 2):
        self.window = window
        self.in_flight = 0
        self.waiting = None
        self.sent = self.dropped = 0

    def offer(self, item):
        """`item` if it may be sent now, else None (it waits in the slot)."""
        if self.in_flight < self.window:
            return self._send(item)
        if self.waiting is not None:
            self.dropped += 1
        self.waiting = item
        return None

    def ack(self):
        """The page drew a frame: the waiting item, if any, to send now."""
        self.in_flight = max(self.in_flight - 1, 0)
        if self.waiting is None or self.in_flight >= self.window:
            return None
        item, self.waiting = self.waiting, None
        return self._send(item)

    def _send(self, item):
        self.in_flight += 1
        self.sent += 1
        return item


def _report(task: asyncio.Task) -> None:
    """A stream task that failed says why on the server's stderr (the page just stops getting frames)."""
    if not task.cancelled() and task.exception() is not None:
        traceback.print_exception(task.exception(), file=sys.stderr)


def frame_message(seq: int, header: dict, frames: list[np.ndarray]) -> bytes:
    """One binary stream message: header length, JSON header (with `seq`), raw RGB frames."""
    head = json.dumps(dict(header, seq=seq, shape=list(frames[0].shape))).encode()
    return struct.pack(">I", len(head)) + head + b"".join(np.ascontiguousarray(f).tobytes() for f in frames)


class Streams:
    """The websocket endpoint of every tab. `lookup(token)` finds a tab's Session, `header(session,
    step)` is the status that goes with a frame; frames of all tabs are computed on one pool of
    `workers` threads (at most that many at once, in the order asked: tabs take turns)."""

    def __init__(self, lookup: Callable, header: Callable, workers: int = 2, window: int = 2,
                 max_fps: float = 0.0):
        self.lookup, self.header, self.window = lookup, header, window
        self.period = 1.0 / max_fps if max_fps else 0.0
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="world")

    def mount(self, app) -> None:
        """Adds the route to a running Gradio app's FastAPI `app` (demo.app after launch)."""
        from fastapi import WebSocket

        async def stream(ws):
            await self.serve(ws)

        stream.__annotations__["ws"] = WebSocket  # FastAPI passes the socket by this annotation
        app.add_api_websocket_route(ROUTE, stream)

    async def serve(self, ws) -> None:
        from starlette.websockets import WebSocketDisconnect

        session = self.lookup(ws.query_params.get("token", ""))
        await ws.accept()
        if session is None:
            await ws.close(code=4404, reason="no such game: press Start again")
            return
        loop = asyncio.get_running_loop()
        controls, pacer, wake, outbox = Controls(), Pacer(self.window), asyncio.Event(), asyncio.Queue()

        def offer(step) -> None:  # on the event loop; None: the session closed
            item = None if step is None else pacer.offer(self._encode(session, step))
            if item is not None or step is None:
                outbox.put_nowait(item)

        stop_listening = session.listen(lambda step: loop.call_soon_threadsafe(offer, step))
        if session.latest is not None:
            offer(session.latest)
        tasks = [asyncio.ensure_future(c) for c in
                 (self._send(ws, outbox), self._step(session, controls, wake))]
        for task in tasks:
            task.add_done_callback(_report)
        try:
            while True:
                message = await ws.receive_json()
                if "ack" in message:
                    item = pacer.ack()
                    if item is not None:
                        outbox.put_nowait(item)
                else:
                    controls.update(message)
                    wake.set()
        except (WebSocketDisconnect, RuntimeError, ValueError):
            pass
        finally:
            stop_listening()
            for task in tasks:
                task.cancel()

    def _encode(self, session, step) -> bytes:
        frames = [step.frame] + ([step.real] if step.real is not None else [])
        return frame_message(step.index, self.header(session, step), frames)

    @staticmethod
    async def _send(ws, outbox: asyncio.Queue) -> None:
        while True:
            item = await outbox.get()
            if item is None:  # the session closed
                await ws.close(code=1000)
                return
            await ws.send_bytes(item)

    async def _step(self, session, controls: Controls, wake: asyncio.Event) -> None:
        """Makes frames while something is held (one at a time, so each uses the newest keys),
        sleeps on `wake` otherwise."""
        loop, last = asyncio.get_running_loop(), -1e9
        while True:
            wake.clear()
            action = controls.next_action()
            if action is None:
                await wake.wait()
                continue
            if self.period:
                await asyncio.sleep(max(last + self.period - loop.time(), 0.0))
                last = loop.time()
            if await loop.run_in_executor(self.pool, session.play, action) is None:
                return  # closed
