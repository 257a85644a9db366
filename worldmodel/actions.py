"""The action vocabulary of Memory Maze: the one list of names and ids every module imports.

Ids follow the dataset and the environment: 0 noop, 1 forward, 2 left, 3 right, 4 forward+left,
5 forward+right. Turning left raises the heading angle; forward moves along the heading.
"""

from __future__ import annotations

import numpy as np

NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = range(6)
ACTION_NAMES = ("noop", "forward", "left", "right", "forward+left", "forward+right")
NUM_ACTIONS = len(ACTION_NAMES)
ACTION_IDS = {name: i for i, name in enumerate(ACTION_NAMES)}

MOVES_FORWARD = frozenset({FORWARD, FORWARD_LEFT, FORWARD_RIGHT})
TURNS_LEFT = frozenset({LEFT, FORWARD_LEFT})
TURNS_RIGHT = frozenset({RIGHT, FORWARD_RIGHT})


def turn_direction(action: int) -> int:
    """+1 for a left turn (the heading angle grows), -1 for a right turn, 0 otherwise."""
    return 1 if action in TURNS_LEFT else -1 if action in TURNS_RIGHT else 0


def action_index(action) -> int:
    """An action as an int 0..5 or a one-hot row of 6; anything else is a ValueError."""
    a = np.asarray(action)
    if a.ndim == 0 and np.issubdtype(a.dtype, np.integer):
        if not 0 <= int(a) < NUM_ACTIONS:
            raise ValueError(f"action {int(a)} is out of range: expected an int in 0..{NUM_ACTIONS - 1} "
                             f"({', '.join(ACTION_NAMES)})")
        return int(a)
    if a.shape == (NUM_ACTIONS,) and np.isin(a, (0, 1)).all() and a.sum() <= 1:
        return int(a.argmax()) if a.sum() else 0
    raise ValueError(f"expected an action as an int in 0..{NUM_ACTIONS - 1} or a one-hot row of "
                     f"{NUM_ACTIONS}, got {action!r}")


def action_indices(actions, length: int) -> np.ndarray:
    """`length` actions as int64 ids, from ints (length,) or one-hot rows (length, 6)."""
    a = np.asarray(actions)
    if a.ndim == 2 and a.shape == (length, NUM_ACTIONS):
        return np.array([action_index(row) for row in a], dtype=np.int64)
    if a.ndim == 1 and np.issubdtype(a.dtype, np.integer) and len(a) == length:
        bad = (a < 0) | (a >= NUM_ACTIONS)
        if bad.any():
            raise ValueError(f"context action {int(a[bad][0])} is out of range: "
                             f"expected ints in 0..{NUM_ACTIONS - 1}")
        return a.astype(np.int64)
    raise ValueError(f"expected context_actions of shape ({length},) ints or ({length}, {NUM_ACTIONS}) "
                     f"one-hot, got shape {a.shape} dtype {a.dtype}")
