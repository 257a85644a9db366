"""The browser demo (worldmodel/app/): the key map, the per-tab Session and the stream's pacing
directly, then the real page in a headless Chromium driven by Playwright against
`python -m worldmodel.app` over a tiny model with random weights.

The browser tests need Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`;
Playwright's own browser download does not work offline) and skip without it. A screenshot of
the page is left at artifacts/app.png.
"""

import asyncio
import base64
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import randomized

from worldmodel.actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, LEFT, NOOP, RIGHT
from worldmodel.app.headless import CHROMIUM, CHROMIUM_ARGS, REPO, launch_app, stop_app
from worldmodel.app.keymap import action_for, parse_held
from worldmodel.app.stream import Controls, Pacer, Streams
from worldmodel.data.episodes import index_to_onehot, load_episode, save_episode

CONTEXT = 6  # context frames the test server seeds worlds with (a short look-around keeps the env cheap)

needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` to run the browser tests")


# -- without a browser ---------------------------------------------------------------------------
def test_key_map():
    assert action_for(set()) == NOOP and action_for({"wait"}) == NOOP
    assert action_for({"forward"}) == FORWARD
    assert action_for({"left"}) == LEFT and action_for({"right"}) == RIGHT
    assert action_for({"forward", "left"}) == FORWARD_LEFT
    assert action_for({"forward", "right"}) == FORWARD_RIGHT
    assert action_for({"left", "right"}) == NOOP and action_for({"forward", "left", "right"}) == FORWARD
    assert parse_held("forward left junk") == {"forward", "left"} and parse_held(None) == set()


def _episode(path: Path, frames: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return save_episode(path, {
        "image": rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8),
        "action": index_to_onehot(rng.integers(0, 6, frames - 1)),
        "agent_pos": np.zeros((frames, 2), np.float32),
        "agent_dir": np.zeros((frames, 2), np.float32),
    })


def test_session_plays_saves_and_records(tmp_path):
    from worldmodel.app.session import Session
    from worldmodel.world import load_world

    session = Session(load_world("tiny", device="cpu"), fps=5)
    try:
        frames, actions, poses, layout = Session.episode_context(_episode(tmp_path / "ep.npz"), CONTEXT)
        assert np.isnan(poses).all() and layout is None  # zero headings: no pose known
        session.start(frames, actions, poses, layout=layout)
        bytes0 = session.world.state_bytes()
        for a in (FORWARD, LEFT, FORWARD_RIGHT):
            assert session.step(a).frame.shape == (64, 64, 3)
        assert session.status()["frames"] == CONTEXT + 3 and session.world.state_bytes() == bytes0
        saved = session.save_state()
        session.step(FORWARD)

        corrupt = tmp_path / "corrupt.safetensors"
        corrupt.write_bytes(b"\x00" * 64)
        with pytest.raises(ValueError, match="corrupt.safetensors"):
            session.load_state(corrupt)
        assert session.world.frames_seen == CONTEXT + 4  # the running world is kept ...
        session.step(NOOP)  # ... and still runs

        session.load_state(saved)
        assert session.world.frames_seen == CONTEXT + 3
        session.step(RIGHT)
        video, npz = session.save_recording()
        assert video.suffix == ".mp4" and video.stat().st_size > 0
        ep = load_episode(npz)
        assert ep["image"].shape == (2, 64, 64, 3) and int(ep["context_len"]) == 1  # restarted at the load
        assert ep["action"][1].argmax() == RIGHT and not ep["agent_pos"][1].any()
    finally:
        session.close()
    assert not session.workdir.exists()


def test_sessions_registry_closes_replaced_and_unloaded_sessions():
    from worldmodel.app.session import Session, Sessions
    from worldmodel.world import load_world

    world = load_world("tiny", device="cpu")
    sessions = Sessions(max_envs=1)
    first, second, other = (Session(world) for _ in range(3))
    sessions.adopt("tab", first)
    sessions.adopt("tab", second)  # a new world in the same tab replaces the old one
    sessions.adopt("other tab", other)
    assert first.closed and not second.closed and len(sessions) == 2
    sessions.close("tab")  # the tab was closed
    assert second.closed and not other.closed
    sessions.close_all()
    assert other.closed and len(sessions) == 0


def test_pacer_drops_frames_a_slow_page_cannot_take_instead_of_queueing():
    pacer = Pacer(window=2)
    sent = [f for f in range(10) if pacer.offer(f) is not None]  # a page that acknowledges nothing
    assert sent == [0, 1] and pacer.in_flight == 2  # two on the way ...
    assert pacer.waiting == 9 and pacer.dropped == 7  # ... one waiting (the newest), the rest dropped
    assert pacer.ack() == 9 and pacer.ack() is None  # each ack lets the newest through, no backlog
    assert pacer.ack() is None and pacer.in_flight == 0
    assert [pacer.offer(f) for f in (10, 11)] == [10, 11]  # a page that keeps up gets every frame
    assert pacer.sent == 5 and pacer.dropped == 7


def test_controls_hold_press_and_idle():
    c = Controls()
    assert c.next_action() is None  # nothing held: no frame
    c.update({"held": "forward", "press": "forward"})
    assert [c.next_action() for _ in range(3)] == [FORWARD] * 3  # held: a frame after each frame
    c.update({"held": ""})
    assert c.next_action() is None
    c.update({"held": "left", "press": "left"})
    c.update({"held": ""})  # released before a frame saw it: still one frame
    assert (c.next_action(), c.next_action()) == (LEFT, None)
    c.update({"free": True})
    assert c.next_action() == NOOP


class _CountingSession:
    def __init__(self):
        self.played = []

    def play(self, action):
        self.played.append(action)
        time.sleep(0.01)
        return object()


def test_idle_tab_makes_no_frames_and_held_keys_make_them_back_to_back():
    async def scenario():
        streams, session, controls, wake = Streams(None, None, workers=1), _CountingSession(), Controls(), \
            asyncio.Event()
        task = asyncio.ensure_future(streams._step(session, controls, wake))
        await asyncio.sleep(0.3)
        idle = len(session.played)  # nothing held: the stepper sleeps on its event
        controls.update({"held": "forward"})
        wake.set()
        await asyncio.sleep(0.3)
        controls.update({"held": ""})
        wake.set()
        await asyncio.sleep(0.05)
        held = len(session.played)
        await asyncio.sleep(0.2)
        task.cancel()
        streams.pool.shutdown()
        return idle, held, len(session.played)

    idle, held, later = asyncio.run(scenario())
    assert idle == 0 and held >= 10 and later == held  # ~25 frames of 10 ms in 0.3 s; none after release


# -- in the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = dict(os.environ, GRADIO_HEARTBEAT_INTERVAL="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    # --max-envs 1: a second tab cannot build a real env until the first tab has been closed.
    # random weights: an untrained model's zero output layer would show one constant frame
    # --no-compile: tabs' frames are compared bit for bit with an eager World (test_model checks
    # the compiled step against eager)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "tiny-random"
    randomized().save_pretrained(checkpoint)
    try:
        proc, url = launch_app(
            ["--checkpoint", str(checkpoint), "--context", str(CONTEXT), "--max-envs", "1", "--no-compile"],
            tmp_path_factory.mktemp("app") / "server.log",
            env,
            timeout=300,  # under load the warm-up game and the env prefetch slow the start
        )
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url, checkpoint
    finally:
        stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, server):
    url = server[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1050})
    page.set_default_timeout(120_000)  # a real env build under load can take a while
    page.goto(url)
    page.wait_for_selector("#wm-start")
    return page


def _pixels(page, canvas: str = "wm-frame") -> np.ndarray:
    """The frame a canvas shows, as uint8 RGB (the page draws it opaque: exact)."""
    url = page.evaluate("id => document.getElementById(id).toDataURL('image/png')", canvas)
    png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_COLOR)[..., ::-1]


def _frames(page) -> int:
    return int(page.inner_text("#wm-frames"))


def _wait_frames(page, n: int, timeout: float = 20_000) -> None:
    page.wait_for_function("n => Number(document.querySelector('#wm-frames')?.textContent) >= n", arg=n,
                           timeout=timeout)


def _tap(page, key: str) -> int:
    """Press and release `key`: at least one frame (two if the release comes after the first frame
    is made: frames come at the model's speed). Returns the frame count once they have landed."""
    n = _frames(page)
    page.keyboard.press(key)
    _wait_frames(page, n + 1)
    time.sleep(0.2)
    return _frames(page)


def _upload(page, button: str, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(button)
    chooser.value.set_files(str(path))


def _toast(page, text: str):
    toast = page.get_by_test_id("toast-text").filter(has_text=text)
    toast.first.wait_for(state="visible")
    return toast.first.inner_text()


def _download(page, suffix: str, dest: Path) -> Path:
    link = page.locator(f'#wm-downloads a[data-testid="download-link"][href$="{suffix}"]').first
    link.wait_for(state="attached")
    dest.write_bytes(page.request.get(link.get_attribute("href")).body())
    return dest


def _start_from_episode(page, path: Path) -> None:
    shown = page.evaluate("window.wmShown")
    _upload(page, "#wm-episode", path)
    page.wait_for_function("n => window.wmShown > n", arg=shown)  # the stream's first frame
    assert _frames(page) == CONTEXT


@needs_browser
def test_keyboard_and_buttons_drive_the_world(server, browser, tmp_path):
    page = _open(browser, server)
    _start_from_episode(page, _episode(tmp_path / "ep.npz"))
    first, n = _pixels(page), CONTEXT
    for _ in range(3):  # taps: a frame each
        n = _tap(page, "w")
    assert n >= CONTEXT + 3 and (_pixels(page) != first).any()
    page.click("#wm-btn-forward-left")
    _wait_frames(page, n + 1)

    # Held keys keep the world moving at a steady rate, with no further key events.
    start, t0 = _frames(page), time.time()
    page.keyboard.down("w")
    time.sleep(0.8)
    middle = _frames(page)
    time.sleep(0.8)
    page.keyboard.up("w")
    end, held_s = _frames(page), time.time() - t0
    assert start < middle < end and end - start >= 4, (start, middle, end)
    print(f"\nbrowser frame rate holding W (tiny preset): {(end - start) / held_s:.1f} fps")
    time.sleep(0.3)  # nothing held: the world pauses, and nothing is sent ...
    paused, shown = _frames(page), page.evaluate("window.wmShown")
    time.sleep(0.5)
    assert (_frames(page), page.evaluate("window.wmShown")) == (paused, shown)
    page.check("#wm-free-run input")  # ... unless time runs without input (noop frames)
    _wait_frames(page, paused + 3)
    page.uncheck("#wm-free-run input")
    page.close()


@needs_browser
def test_two_tabs_keep_separate_worlds(server, browser, tmp_path):
    a, b = _open(browser, server), _open(browser, server)
    episode = _episode(tmp_path / "ep.npz")
    _start_from_episode(a, episode)
    _start_from_episode(b, episode)
    for _ in range(3):
        n_a = _tap(a, "d")
    n_b = _tap(b, "w")
    time.sleep(0.3)
    assert (_frames(a), _frames(b)) == (n_a, n_b) and n_a >= n_b + 1  # each tab its own count
    assert (_pixels(a) != _pixels(b)).any()
    a.close()
    b.close()


@needs_browser
def test_tabs_streaming_at_once_show_the_frames_a_lone_world_makes(server, browser, tmp_path):
    """Three tabs hold different keys at the same time. Each tab's frames -- all it made (its
    recording) and the one its canvas shows last -- are those of a World replayed alone with the
    same seed and actions."""
    from worldmodel.app.session import Session
    from worldmodel.config import DEFAULT_STEPS
    from worldmodel.world import World, load_world

    pages = [_open(browser, server) for _ in range(3)]
    episodes = [_episode(tmp_path / f"ep{i}.npz", seed=i) for i in range(3)]
    for page, episode in zip(pages, episodes):
        _start_from_episode(page, episode)
    for page, key in zip(pages, "wad"):
        page.keyboard.down(key)
    time.sleep(1.5)
    for page, key in zip(pages, "wad"):
        page.keyboard.up(key)
    time.sleep(0.5)
    template = load_world(server[1], device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server computes (--threads 1): the same sums in the same order
    try:
        for i, (page, episode) in enumerate(zip(pages, episodes)):
            page.click("#wm-record")
            recorded = load_episode(_download(page, ".npz", tmp_path / f"play{i}.npz"))
            n = len(recorded["image"])
            assert n == _frames(page) and n > CONTEXT + 3, (n, _frames(page))
            world = World(template.model, steps=DEFAULT_STEPS, device="cpu", seed=0, codec=template.codec)
            world.reset(*Session.episode_context(episode, CONTEXT))
            replay = np.stack([world.step(a) for a in recorded["action"][CONTEXT:].argmax(-1)])
            np.testing.assert_array_equal(recorded["image"][CONTEXT:], replay)
            np.testing.assert_array_equal(_pixels(page), replay[-1])
            page.close()
    finally:
        torch.set_num_threads(threads)


@needs_browser
def test_snapshots_and_recording(server, browser, tmp_path):
    page = _open(browser, server)
    _start_from_episode(page, _episode(tmp_path / "ep.npz"))
    n = _tap(page, "w")

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(os.urandom(200))
    _upload(page, "#wm-load", corrupt)
    assert "running world is kept" in _toast(page, "Could not load corrupt.safetensors")
    saved_at = _tap(page, "w")  # the world still runs
    assert saved_at > n

    page.click("#wm-save")
    saved = _download(page, ".safetensors", tmp_path / "saved.safetensors")
    for _ in range(2):
        _tap(page, "a")
    _upload(page, "#wm-load", saved)  # its frame comes through the stream
    page.wait_for_function(f"() => document.querySelector('#wm-frames')?.textContent === '{saved_at}'")
    end = _tap(page, "w")

    page.click("#wm-record")
    video = _download(page, ".mp4", tmp_path / "play.mp4")
    ep = load_episode(_download(page, ".npz", tmp_path / "play.npz"))
    assert video.stat().st_size > 0
    assert ep["image"].shape == (end - saved_at + 1, 64, 64, 3) and int(ep["context_len"]) == 1
    page.close()


@needs_browser
def test_real_vs_imagined_and_closing_a_tab_frees_its_env(server, browser, tmp_path):
    a = _open(browser, server)
    a.check("#wm-compare input")
    a.click("#wm-start")  # the real env looks around, then plays alongside
    a.wait_for_selector("#wm-real-fig", state="visible")
    _wait_frames(a, CONTEXT)
    for _ in range(2):
        _tap(a, "w")
    assert "PSNR" in a.inner_text("#wm-view") and a.locator("#wm-psnr polyline").count() == 1
    start = _frames(a)
    a.keyboard.down("w")  # a few more frames, for a PSNR curve in the screenshot
    time.sleep(1.0)
    a.keyboard.up("w")
    assert _frames(a) > start
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    a.screenshot(path=str(artifacts / "app.png"), full_page=True)

    # The server allows one real env (--max-envs 1): another tab that wants one alongside gets a
    # clear refusal ...
    b = _open(browser, server)
    b.check("#wm-compare input")
    b.click("#wm-start")
    assert "slots" in _toast(b, "real-environment slots")
    # ... until the first tab is closed, which frees its world and env (within a heartbeat: 1 s here).
    a.close()
    for _ in range(5):
        toasts = b.get_by_test_id("toast-text").count()
        b.click("#wm-start")
        b.wait_for_function("n => document.querySelector('#wm-frame') || "
                            "document.querySelectorAll('[data-testid=toast-text]').length > n", arg=toasts)
        if b.locator("#wm-frame").count():
            break
        time.sleep(1.0)
    else:
        pytest.fail("closing the first tab did not free its real env")
    b.close()
