"""The key map of the browser demo: which keys (and on-screen buttons) mean which action.

The page's script only reports *which directions are held* ("forward", "left", "right", "wait");
turning those into a Memory Maze action happens here, in one place. Keys are matched by
`KeyboardEvent.code` (the physical key), so W/A/D sit under the same fingers on any layout.
The action ids are those of `worldmodel.actions`.
"""

from __future__ import annotations

from typing import Iterable

from worldmodel.actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NOOP, RIGHT

DIRECTIONS = ("forward", "left", "right", "wait")

# KeyboardEvent.code -> direction.
KEYS = {
    "KeyW": "forward", "ArrowUp": "forward",
    "KeyA": "left", "ArrowLeft": "left",
    "KeyD": "right", "ArrowRight": "right",
    "Space": "wait",
}

# On-screen buttons: (label, elem_id, directions it holds). Laid out in two rows of three.
BUTTONS = (
    ("↖ forward+left", "wm-btn-forward-left", ("forward", "left")),
    ("↑ forward", "wm-btn-forward", ("forward",)),
    ("↗ forward+right", "wm-btn-forward-right", ("forward", "right")),
    ("← turn left", "wm-btn-left", ("left",)),
    ("· wait", "wm-btn-wait", ("wait",)),
    ("→ turn right", "wm-btn-right", ("right",)),
)

CONTROLS = (
    "<kbd>W</kbd> / <kbd>↑</kbd> forward · <kbd>A</kbd> / <kbd>←</kbd> turn left · <kbd>D</kbd> / "
    "<kbd>→</kbd> turn right · <kbd>W</kbd>+<kbd>A</kbd>, <kbd>W</kbd>+<kbd>D</kbd> forward while turning · "
    "<kbd>Space</kbd> wait one frame (noop). Hold keys (or the buttons) to keep moving; with nothing held "
    "the world pauses, unless *Time runs without input* is ticked, which steps noop frames."
)


def parse_held(text: str | None) -> set[str]:
    """The page's report ("forward left") -> the set of known directions held."""
    return {d for d in (text or "").split() if d in DIRECTIONS}


def action_for(held: Iterable[str]) -> int:
    """Held directions -> action id. Nothing (or only "wait") held is noop; left and right
    together cancel out."""
    held = set(held)
    forward = "forward" in held
    turn = ("left" in held) - ("right" in held)
    if forward:
        return {0: FORWARD, 1: FORWARD_LEFT, -1: FORWARD_RIGHT}[turn]
    return {0: NOOP, 1: LEFT, -1: RIGHT}[turn]
