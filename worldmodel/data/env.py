"""A thin wrapper of the Memory Maze dm_env tasks: dict observations, headless rendering, and a
faster target-touch check.

memory_maze / dm_control / mujoco are imported only when a `MazeEnv` is built, so that importing
this module (for `MAZE_SIZES` ...) stays cheap. The action ids are in `worldmodel.actions`.

Coordinates (memory_maze's own, checked against the walls): `agent_pos` = (x, y) in maze cells,
`maze_layout[y, x]` with 1 = free, row 0 at the bottom; `agent_dir` is the unit heading (dx, dy)
in the same frame (turning left increases its angle; forward moves along it).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import types
import warnings

import numpy as np

MAZE_SIZES = ("9x9", "11x11", "13x13", "15x15")
# The tasks' time limits at 4 actions/s (250, 500, 750, 1000 s): the nominal episode lengths.
EPISODE_LENGTH = {"9x9": 1000, "11x11": 2000, "13x13": 3000, "15x15": 4000}

OBS_KEYS = ("image", "reward", "agent_pos", "agent_dir", "maze_layout", "targets_pos", "targets_vec",
            "target_pos", "target_vec", "target_color")

# (MUJOCO_GL value, shared libraries that provide it, Debian package to install)
_BACKENDS = (
    ("egl", ("libEGL.so.1", "libEGL.so"), "libegl1"),
    ("osmesa", ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"), "libosmesa6"),
)


def _loadable(lib: str) -> bool:
    try:
        ctypes.CDLL(lib)
        return True
    except OSError:
        return False


def select_gl_backend() -> str:
    """MuJoCo's headless renderer: MUJOCO_GL if set, else EGL, else OSMesa (whichever library
    loads). Must run before dm_control is imported: it reads MUJOCO_GL once, at import."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    for backend, libs, _ in _BACKENDS:
        if any(_loadable(lib) for lib in libs):
            os.environ["MUJOCO_GL"] = backend
            return backend
    packages = " or ".join(f"{pkg} ({backend})" for backend, _, pkg in _BACKENDS)
    raise RuntimeError(f"no headless OpenGL library for MuJoCo rendering: install {packages}, e.g. "
                       "`apt-get install -y libegl1 libosmesa6`, or set MUJOCO_GL yourself")


def _import_tasks():
    select_gl_backend()
    # memory_maze imports the old gym, which prints a deprecation notice on stderr; glfw warns
    # about the missing X display although it is never used.
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from memory_maze import tasks
    return tasks


def _fast_update_activation(self, physics):
    """Vectorised `TargetSphere._update_activation` (dm_control): same rule, same effect.

    The original loops in Python over the contacts through dm_control's per-contact wrappers,
    for every target after every physics substep: 63% of a step. Here the contact geom ids are
    compared as arrays on the raw MjData (one (ncon, 2) array: the cheapest to fetch).
    """
    if self._activated:
        return
    pairs = physics.data.ptr.contact.geom
    if self._specific_collision_geom_ids:  # then only contacts with one of these geoms count
        ids = np.asarray(list(self._specific_collision_geom_ids))
        pairs = pairs[np.isin(pairs, ids).any(axis=1)]
    if (pairs == self._geom_id).any():
        self._activated = True
        physics.bind(self._material).rgba[-1] = 0


def _persistent_camera_callable(self, physics):
    """`MJCFCamera._callable` rendering through one dm_control `Camera` per physics.

    `physics.render` builds a new Camera for every frame, and with it a new MjvScene sized for
    every geom of the maze, allocated and freed again: a step took ~1.8x as long with it. The
    scene is refilled by mjv_updateScene on every render, so reusing it gives the same frames.
    """
    from dm_control.mujoco import engine

    camera = None

    def get_observation():
        nonlocal camera
        if camera is None:  # lazily, as physics.render does: the GL context is made on first use
            camera = engine.Camera(physics, height=self._height, width=self._width,
                                   camera_id=self._mjcf_element.full_identifier)
        pixels = camera.render(scene_option=self._scene_option,
                               render_flag_overrides=self._render_flag_overrides)
        return np.atleast_3d(pixels).copy()  # a view of the camera's buffer, reused next frame

    return get_observation


class MazeEnv:
    """One Memory Maze (`maze` in MAZE_SIZES) with global observables; `seed` fixes the maze
    layouts of successive resets and the physics, so an episode is reproducible. `reseed(seed)`
    (or `reset(seed)`) restarts it as a fresh `MazeEnv(maze, seed)`: one env can make many
    episodes, each the same as in a fresh env, without an env build (~3 s) for each.

    `reset()` / `step(action)` return a dict: `image` (64, 64, 3) uint8, `reward` (float) and the
    global observables of OBS_KEYS. There is no time limit: the caller decides the episode
    length (EPISODE_LENGTH[maze] is the task's own). Use as a context manager, or call close().
    """

    def __init__(self, maze: str = "9x9", seed: int | None = None, fast: bool = True):
        if maze not in MAZE_SIZES:
            raise ValueError(f"unknown maze {maze!r}: one of {', '.join(MAZE_SIZES)}")
        tasks = _import_tasks()
        try:
            self._env = getattr(tasks, f"memory_maze_{maze}")(seed=seed, global_observables=True)
        except Exception as e:
            raise RuntimeError(f"could not build the Memory Maze env with MUJOCO_GL="
                               f"{os.environ.get('MUJOCO_GL')} ({type(e).__name__}: {e}); try another "
                               "backend: MUJOCO_GL=egl (libegl1) or MUJOCO_GL=osmesa (libosmesa6)") from e
        self.maze, self.seed, self.fast = maze, seed, fast
        self.length = EPISODE_LENGTH[maze]
        core = self._env
        while hasattr(core, "env"):  # memory_maze's wrappers -> composer.Environment
            core = core.env
        core._time_limit = float("inf")
        self._core, self._task = core, core.task
        camera = self._task._walker.observables.egocentric_camera
        if fast and not (camera._depth or camera._segmentation):
            camera._callable = types.MethodType(_persistent_camera_callable, camera)

    def reseed(self, seed: int) -> None:
        """Make the next reset the first one of a fresh MazeEnv(maze, seed), frame for frame.

        The random streams are put where such an env has them before its first reset
        (memory_maze.tasks._memory_maze: RandomState(seed) seeds the composer env, after one draw
        that seeds labmaze's own generator); all else is rebuilt at reset: the maze geoms, the
        targets' places, the physics and the observation buffers."""
        rng = np.random.RandomState(seed)
        maze = self._task._maze_arena.maze
        fresh = type(maze)(height=maze.height, width=maze.width, max_rooms=maze.max_rooms,
                           room_min_size=maze.room_min_size, room_max_size=maze.room_max_size,
                           max_variations=maze.max_variations, spawns_per_room=maze.spawns_per_room,
                           objects_per_room=maze.objects_per_room, simplify=True,  # as memory_maze
                           random_seed=rng.randint(2147483648))
        maze._native_maze = fresh._native_maze  # labmaze's C++ generator has no reseed
        self._core._random_state.set_state(rng.get_state())
        self.seed = seed

    def _patch_targets(self) -> None:
        # Per instance, so that fast and original envs can live in one process.
        if self.fast:
            for target in self._task._targets:
                if "_update_activation" not in vars(target):
                    target._update_activation = types.MethodType(_fast_update_activation, target)

    def _obs(self, timestep) -> dict:
        src = timestep.observation
        obs = {"image": np.array(src["image"], dtype=np.uint8),
               "reward": float(timestep.reward or 0.0)}
        for key in OBS_KEYS[2:]:
            obs[key] = np.array(src[key])
        return obs

    def reset(self, seed: int | None = None) -> dict:
        """A new episode: the next maze of this env's stream, or with `seed` the first maze of
        a fresh MazeEnv(maze, seed) (the same episode, frame for frame)."""
        if seed is not None:
            self.reseed(seed)
        self._patch_targets()
        obs = self._obs(self._env.reset())
        self._patch_targets()  # targets are rebuilt at reset when colours are randomised
        return obs

    def step(self, action: int) -> dict:
        return self._obs(self._env.step(int(action)))

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "MazeEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
