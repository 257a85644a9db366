"""One browser tab's game: its `World`, optionally a real Memory Maze env stepped alongside,
and the recording of the play-through. No Gradio in here, so it is usable (and testable) alone.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from worldmodel.data import episodes
from worldmodel.eval.media import write_video
from worldmodel.metrics import psnr
from worldmodel.world import World


class EnvsBusy(RuntimeError):
    """Every real-environment slot of the server is taken."""


class RealEnv:
    """A `MazeEnv` that lives on a thread of its own.

    dm_control's GL context belongs to the thread that created it, and Gradio runs handlers on
    whatever pool thread is free, so every call goes through this env's single-thread executor.
    Holds one of the server's `slots` (a semaphore bounding the envs alive at once, ~1.6 GB each)
    until `close()`.
    """

    def __init__(self, maze: str, seed: int, slots: threading.Semaphore):
        if not slots.acquire(blocking=False):
            raise EnvsBusy("all real-environment slots of this server are in use; try again later, "
                           "start from an episode file instead, or raise --max-envs")
        self._slots = slots
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix=f"maze-{maze}-{seed}"
        )
        try:
            from worldmodel.data.env import MazeEnv  # imports memory_maze / dm_control: only when needed

            self._env = self._pool.submit(MazeEnv, maze, seed).result()
        except BaseException:
            self._release()
            raise

    def reset(self) -> dict:
        return self._pool.submit(self._env.reset).result()

    def step_async(self, action: int) -> Future:
        return self._pool.submit(self._env.step, int(action))

    def step(self, action: int) -> dict:
        return self.step_async(action).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.submit(self._env.close)
            self._release()

    def _release(self) -> None:
        pool, self._pool = self._pool, None
        pool.shutdown(wait=False)
        self._slots.release()


class Contexts:
    """The real environment's look-around that seeds a world, kept per (maze, seed).

    Making one costs seconds (env build, reset and N turns on the CPU), and it is the same every
    time for the same maze and seed, so it is made once and kept (the last `keep`). `prefetch` makes
    one ahead on a thread of its own with one env slot of its own (the page's default maze and seed
    at server start), so that the first Start with the real env off takes no env at all.
    `make(maze, seed, slots)` returns (frames, actions, poses, layout).
    """

    def __init__(self, make: Callable, keep: int = 16):
        self._make, self._keep = make, keep
        self._done: OrderedDict = OrderedDict()
        self._making: dict[tuple, Future] = {}
        self._lock = threading.Lock()
        self._spare = threading.BoundedSemaphore(1)

    def get(self, maze: str, seed: int, slots: threading.Semaphore) -> tuple:
        key = (maze, int(seed))
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            future = self._making.get(key)
        if future is not None:  # being made ahead: wait for it
            return future.result()
        return self._store(key, self._make(maze, int(seed), slots))

    def prefetch(self, maze: str, seed: int) -> Future:
        key, future = (maze, int(seed)), Future()
        with self._lock:
            if key in self._done or key in self._making:
                future.set_result(None)
                return future
            self._making[key] = future

        def work():
            try:
                future.set_result(self._store(key, self._make(maze, int(seed), self._spare)))
            except BaseException as e:  # get() raises it
                future.set_exception(e)
            finally:
                with self._lock:
                    self._making.pop(key, None)

        threading.Thread(target=work, name=f"prefetch-{maze}-{seed}", daemon=True).start()
        return future

    def _store(self, key: tuple, context: tuple) -> tuple:
        with self._lock:
            self._done[key] = context
            while len(self._done) > self._keep:
                self._done.popitem(last=False)
        return context


@dataclass
class Step:
    frame: np.ndarray
    real: np.ndarray | None = None
    psnr: float | None = None
    index: int = 0  # the world's frame count when this frame was made (set by Session._publish)


class Session:
    """A running game: `start` it from context frames, then `step` it action by action.

    Everything that happens is recorded (up to `max_record` frames, then recording stops and
    play goes on) so that `save_recording` can write the play-through as an mp4 and as an
    episode file in the training format (`worldmodel.data.episodes`):
      - `image` holds the context frames, then the imagined ones; `context_len` says where the
        imagined part begins, as in evaluation episodes.
      - `agent_pos` / `agent_dir` are the true poses for context frames that came from the real
        env or from an episode file; for imagined frames, the pose the model was given, dead-reckoned
        from the actions (`worldmodel.odometry`), or zeros if it had none.
      - with the real env alongside, a second file `*_real.npz` holds the real trajectory under
        the same actions, with every observation key.
    """

    def __init__(self, world: World, fps: float = 10.0, max_record: int = 3000):
        self.world = world
        self.fps = fps
        self.max_record = max_record
        self.lock = threading.Lock()  # one handler at a time per tab (frames vs. save, load, close)
        self.workdir = Path(tempfile.mkdtemp(prefix="worldmodel-play-"))
        self.env: RealEnv | None = None
        self.psnrs: deque[float] = deque(maxlen=10_000)
        self._step_ms: float | None = None
        self._delivered: deque[float] = deque(maxlen=20)
        self._frames: list[np.ndarray] = []
        self._actions: list[int] = []
        self._poses: list[np.ndarray] = []  # (x, y, dx, dy) per recorded frame, zeros = unknown
        self._layout: np.ndarray | None = None
        self._real: episodes.EpisodeRecorder | None = None
        self._real_frames: list[np.ndarray] = []
        self.context_len = 0
        self.steps = 0  # steps taken since the last start or load
        self.closed = False
        self.token = secrets.token_urlsafe(16)  # names this game to the page's frame stream (stream.py)
        self.latest: Step | None = None  # the newest frame, as the stream sends it
        self._listeners: list[Callable[[Step | None], None]] = []

    # -- the frame stream ------------------------------------------------------------------------
    def listen(self, callback: Callable[[Step | None], None]) -> Callable[[], None]:
        """`callback(step)` is called (on the thread that made it) with every new frame: after start,
        step and load_state, and with None when the session closes. Returns the function that stops it."""
        self._listeners.append(callback)
        return lambda: callback in self._listeners and self._listeners.remove(callback)

    def _publish(self, step: Step | None) -> Step | None:
        if step is not None:
            step.index, self.latest = self.world.frames_seen, step
        for callback in list(self._listeners):
            callback(step)
        return step

    def play(self, action: int) -> Step | None:
        """`step` for the stream's worker threads: None (and no step) once the session is closed."""
        with self.lock:
            return None if self.closed else self.step(action)

    # -- starting ------------------------------------------------------------------------------
    def start(self, frames: np.ndarray, actions, poses: np.ndarray | None = None, env: RealEnv | None = None,
              env_obs: list[dict] | None = None, layout: np.ndarray | None = None) -> Step:
        """Seed the world with context frames (and their (T, 4) poses and the maze's layout, which
        let a pose-conditioned model dead-reckon its pose, and so recall, as it plays); `env` (already
        at the last context frame) and its observations `env_obs` make this a side-by-side game
        against the real environment, which the model never sees."""
        frame = self.world.reset(frames, actions, poses, layout)
        self._set_env(env)
        self._frames = list(np.asarray(frames))
        self._actions = [int(a) for a in actions]
        self._poses = (
            list(np.nan_to_num(poses)) if poses is not None else [np.zeros(4, np.float32)] * len(frames)
        )
        self._layout = layout
        self.context_len = len(frames)
        self._real, self._real_frames = None, []
        if env is not None:
            self._real = episodes.EpisodeRecorder(env_obs[0])
            for a, o in zip(self._actions[1:], env_obs[1:]):
                self._real.add(a, o)
            self._real_frames = [o["image"] for o in env_obs]
        self.psnrs.clear()
        self.steps = 0
        return self._publish(Step(frame, env_obs[-1]["image"] if env is not None else None))

    @classmethod
    def episode_context(
        cls, path: str | Path, frames: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The first `frames` frames of an episode file, their actions and poses, and the maze's
        layout (ValueError if unreadable or too large: its headers are read first; messages name the
        file, not the server's temporary path)."""
        ep = episodes.load_episode(path, max_frames=episodes.MAX_UPLOAD_FRAMES,
                                   max_bytes=episodes.MAX_UPLOAD_BYTES, name=Path(path).name)
        n = min(frames, len(ep["image"]))
        poses = episodes.episode_poses(ep)
        layout = ep["maze_layout"][n - 1] if "maze_layout" in ep else None
        poses = None if poses is None else poses[:n]
        return ep["image"][:n], episodes.actions_to_index(ep["action"][:n]), poses, layout

    def _set_env(self, env: RealEnv | None) -> None:
        if self.env is not None and self.env is not env:
            self.env.close()
        self.env = env

    # -- playing -------------------------------------------------------------------------------
    @property
    def compare(self) -> bool:
        return self.env is not None

    @property
    def recording(self) -> bool:
        return len(self._frames) < self.max_record

    def step(self, action: int) -> Step:
        # runs alongside the model
        real_future = self.env.step_async(action) if self.env is not None else None
        t0 = time.perf_counter()
        frame = self.world.step(action)
        self.steps += 1
        ms = (time.perf_counter() - t0) * 1000
        self._step_ms = ms if self._step_ms is None else 0.8 * self._step_ms + 0.2 * ms
        out = Step(frame)
        if real_future is not None:
            obs = real_future.result()
            out.real, out.psnr = obs["image"], psnr(frame, obs["image"])
            self.psnrs.append(out.psnr)
        if self.recording:
            self._frames.append(frame)
            self._actions.append(int(action))
            self._poses.append(np.zeros(4, np.float32) if self.world.pose is None else self.world.pose.copy())
            if real_future is not None:
                self._real.add(action, obs)
                self._real_frames.append(obs["image"])
        self._delivered.append(time.perf_counter())
        return self._publish(out)

    def status(self) -> dict:
        now = time.perf_counter()
        d = self._delivered
        # Frames per second as this tab receives them, over the recent burst of frames only.
        fps = (len(d) - 1) / (d[-1] - d[0]) if len(d) > 2 and now - d[-1] < 1.0 and d[-1] > d[0] else None
        pose = self.world.pose
        return {
            "frames": self.world.frames_seen,
            "steps": self.steps,
            "ms_per_frame": self._step_ms,
            "fps": fps,
            "state_bytes": self.world.state_bytes(),
            "device": str(self.world.device),
            "recorded": len(self._frames),
            "max_record": self.max_record,
            "compare": self.compare,
            "mean_psnr": float(np.mean(self.psnrs)) if self.psnrs else None,
            "pose": pose.tolist() if pose is not None and np.isfinite(pose).all() else None,
        }

    # -- save / load ---------------------------------------------------------------------------
    def save_state(self) -> Path:
        path = self.workdir / f"world-frame{self.world.frames_seen}.safetensors"
        self.world.save_state(path)
        return path

    def load_state(self, path: str | Path) -> Step:
        """Continue from a saved state; on any failure the running world is kept and a
        ValueError says why. The real env cannot follow a loaded state, so it is let go, and
        the recording restarts at the loaded frame."""
        backup = self.world.snapshot()
        try:
            self.world.load_state(path)
        except Exception as e:
            self.world.restore(backup)
            name = Path(path).name
            why = str(e).replace(str(path), name)  # uploads sit under long temporary paths
            if not isinstance(e, ValueError):
                why = f"{name} is not a world snapshot of this model: {type(e).__name__}: {why}"
            raise ValueError(why) from e
        self._set_env(None)
        frame = self.world.last_frame
        self._frames, self._actions = [frame], [0]
        self._poses = [
            np.nan_to_num(self.world.pose) if self.world.pose is not None else np.zeros(4, np.float32)
        ]
        self._layout = self.world.layout
        self.context_len = 1
        self._real, self._real_frames = None, []
        self.psnrs.clear()
        self.steps = 0
        return self._publish(Step(frame))

    def save_recording(self) -> list[Path]:
        """mp4 (model | real side by side when compared) and the episode file(s) of the play-through."""
        if not self._frames:
            raise ValueError("nothing recorded yet: start a world first")
        stem = self.workdir / f"play-{len(self._frames) - self.context_len}steps"
        rows = [np.stack(self._frames)] + ([np.stack(self._real_frames)] if self._real is not None else [])
        video = write_video(stem.with_suffix(".mp4"), rows, fps=max(1, round(self.fps)), scale=4)
        episode = {
            "image": np.stack(self._frames),
            "action": episodes.index_to_onehot(self._actions[1:]),
            "agent_pos": np.stack(self._poses)[:, :2],
            "agent_dir": np.stack(self._poses)[:, 2:],
            "context_len": np.int64(self.context_len),
        }
        if self._layout is not None:  # so that a recording can seed a world again, with dead reckoning
            episode["maze_layout"] = np.repeat(
                np.asarray(self._layout, np.uint8)[None], len(self._frames), axis=0
            )
        paths = [video, episodes.save_episode(stem.with_suffix(".npz"), episode)]
        if self._real is not None:
            real = dict(self._real.episode(), context_len=np.int64(self.context_len))
            paths.append(episodes.save_episode(stem.with_name(stem.name + "_real.npz"), real))
        return paths

    def close(self) -> None:
        """Free the env, the recording and the files; safe to call more than once, from any thread."""
        with self.lock:  # waits for a frame in progress
            if self.closed:
                return
            self.closed = True
            self._set_env(None)
            self._frames, self._real, self._real_frames = [], None, []
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._publish(None)  # ends the stream


class Sessions:
    """The server's live sessions by browser-session id, and the real-env slots they share.

    A tab's state also lives in its gr.State, but Gradio keeps a closed tab's state for an hour;
    this registry lets the tab's unload event free its world and env at once.
    """

    def __init__(self, max_envs: int):
        self.env_slots = threading.BoundedSemaphore(max_envs)
        self._live: dict[str, Session] = {}
        self._lock = threading.Lock()

    def adopt(self, key: str, session: Session) -> None:
        """`session` is now tab `key`'s game; the one it replaces is closed."""
        with self._lock:
            old, self._live[key] = self._live.get(key), session
        if old is not None and old is not session:
            old.close()

    def by_token(self, token: str) -> Session | None:
        """The live session whose stream token is `token` (stream.py), or None."""
        with self._lock:
            return next((s for s in self._live.values() if secrets.compare_digest(s.token, token)), None)

    def close(self, key: str) -> None:
        with self._lock:
            session = self._live.pop(key, None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        with self._lock:
            sessions, self._live = list(self._live.values()), {}
        for session in sessions:
            session.close()

    def __len__(self) -> int:
        return len(self._live)
