"""scripts/app_walk.py's pure parts on synthetic frames: the default walk, the page's key plan, the
contact sheet and the video frames (no app, no browser: tests/test_app.py drives those)."""

import base64
import importlib.util
from pathlib import Path

import numpy as np

from worldmodel.actions import FORWARD, FORWARD_LEFT, LEFT
from worldmodel.eval.rollout import parse_actions

_spec = importlib.util.spec_from_file_location(
    "app_walk", Path(__file__).resolve().parents[1] / "scripts" / "app_walk.py")
walk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(walk)


def test_the_default_walk_is_300_frames_that_start_with_one_key_and_round_trip():
    actions = parse_actions(walk.WALK)
    assert len(actions) == 300
    first, n = walk.runs(actions)[0]
    assert len(walk.KEYS[first]) == 1 and n >= 2  # what main() asks of any script
    assert walk.script_text(actions) == walk.WALK
    assert parse_actions(walk.script_text([1, 1, 4, 2, 2, 2, 0])) == [1, 1, 4, 2, 2, 2, 0]


def test_keys_change_one_frame_early_and_screenshots_stop_before_one_key_segments():
    actions = [FORWARD] * 4 + [FORWARD_LEFT] * 2 + [FORWARD] * 3 + [LEFT] * 3
    keys, stops, shots = walk.plan(actions, shots=[5, 12])
    # frame 5 is nearest 5 but two keys follow it at 6; frame 6 ends that segment and W*3 follows
    assert shots == {6, 12}
    assert keys == {3: ["KeyW", "KeyA"], 5: [], 8: ["KeyA"], 11: []}
    assert stops == {6: ["KeyW"], 12: []}


def test_contact_sheet_and_video_frames_put_real_above_and_left_of_the_model():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
    imagined = rng.integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
    psnrs = rng.uniform(10, 30, 60)
    sheet = walk.sheet(real, imagined, psnrs, every=25, scale=2)  # frames 1, 25, 50, 60
    assert sheet.shape == (16 + 2 * 128, 64 + 4 * 128, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[16:144:2, 64 + 128:64 + 256:2], real[24])
    np.testing.assert_array_equal(sheet[144::2, 64 + 384::2], imagined[59])
    video = walk.video_frames(real[:3], imagined[:3], psnrs[:3], numbers=[7, 8, 9], scale=2)
    assert video.shape == (3, 16 + 128, 256, 3)
    np.testing.assert_array_equal(video[1, 16::2, :128:2], real[1])
    np.testing.assert_array_equal(video[2, 16::2, 128::2], imagined[2])
    assert walk.bucket_means(list(range(1, 121))) == {"1-50": 25.5, "51-100": 75.5, "101-120": 110.5}


def test_pixels_decodes_what_the_page_hook_keeps():
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(walk.pixels([base64.b64encode(frame.tobytes()).decode(), 2, 3]), frame)
