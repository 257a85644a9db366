"""Tests of `worldmodel eval` / `worldmodel rollout` and their metrics (worldmodel/eval/).

End to end on the `tiny` preset over two short real revisit episodes, generated once for the
module (each environment build costs a few seconds on a CPU).
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from worldmodel.actions import LEFT
from worldmodel.cli import main
from worldmodel.data.episodes import actions_to_index, load_episode
from worldmodel.data.generate import generate_episodes
from worldmodel.eval.protocols import REFERENCES, reference_frames
from worldmodel.eval.rollout import parse_actions, read_actions_file
from worldmodel.metrics import LPIPS, PSNR_CAP_DB, frame_metrics

LENGTH = 80
HORIZON = 12


@pytest.fixture(scope="module")
def revisit(tmp_path_factory):
    """Two real 80-step revisit episodes (with context_len and a manifest of kind revisit)."""
    out = tmp_path_factory.mktemp("maze") / "revisit"
    paths = generate_episodes(out, maze="9x9", episodes=2, length=LENGTH, workers=1, seed=11,
                              kind="revisit", progress=False)
    return out, paths


def _frames(seed: int, n: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_frame_metrics():
    a, b = _frames(0), _frames(1)
    same = frame_metrics(a, a)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert (same["psnr"] == PSNR_CAP_DB).all()  # identical frames: capped, not inf
    assert same["lpips"] is None
    one_lsb = a.copy()
    one_lsb[0, 0, 0, 0] ^= 1
    one_lsb_db = 10 * np.log10(255.0 ** 2 * a[0].size)
    assert frame_metrics(one_lsb[:1], a[:1])["psnr"][0] == pytest.approx(one_lsb_db)
    diff = frame_metrics(a, b)
    mse = ((a / 255.0 - b / 255.0) ** 2).reshape(len(a), -1).mean(1)
    # per frame, not batch-averaged
    np.testing.assert_allclose(diff["psnr"], 10 * np.log10(1 / mse), rtol=1e-4)
    assert diff["ssim"].shape == (5,) and (diff["ssim"] < 0.1).all()
    assert frame_metrics(a[:0], a[:0])["psnr"].shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        frame_metrics(a, b[:3])


def test_references():
    context = _frames(2, 4)
    refs = reference_frames(context, 3)
    assert list(refs) == ["repeat last frame", "mean frame"]  # no poses, no closest view
    repeat = refs["repeat last frame"]
    assert (repeat == context[-1]).all() and repeat.shape == (3, 64, 64, 3)
    assert (refs["mean frame"] == context.mean(0).round().astype(np.uint8)).all()
    # Closest context view: by place (cells) plus heading (half-turns).
    poses = np.array([[1.5, 1.5, 1, 0], [1.5, 1.5, 0, 1],  # context: facing +x, then +y
                      [1.5, 1.6, 0.9, 0.1], [1.6, 1.5, 0.1, 0.9], [1.5, 1.5, -1, 0]], dtype=np.float64)
    context = context[:2]
    refs = reference_frames(context, 3, poses)
    assert list(refs) == list(REFERENCES)
    closest = refs["closest context view"]
    assert (closest[0] == context[0]).all() and (closest[1] == context[1]).all()
    assert (closest[2] == context[1]).all()  # facing -x: 90 degrees from +y, 180 from +x


def test_action_scripts(tmp_path):
    assert parse_actions("W A D WA aw wd DW . N 0 5") == [1, 2, 3, 4, 4, 5, 5, 0, 0, 0, 5]
    assert parse_actions("W*3, A*2") == [1, 1, 1, 2, 2]
    assert parse_actions(["W", 3, "."]) == [1, 3, 0]
    with pytest.raises(ValueError, match="unknown action key 'S'"):
        parse_actions("W W S")
    with pytest.raises(ValueError, match="unknown action key 7"):
        parse_actions([1, 7])
    with pytest.raises(ValueError, match="repeat count"):
        parse_actions("W*x")
    with pytest.raises(ValueError, match="empty"):
        parse_actions("  ")
    (tmp_path / "a.txt").write_text("W*2 A  # turn\nWD .\n")
    assert read_actions_file(tmp_path / "a.txt") == [1, 1, 2, 5, 0]
    (tmp_path / "a.json").write_text(json.dumps({"actions": ["W", 2, "DW"]}))
    assert read_actions_file(tmp_path / "a.json") == [1, 2, 5]


def test_lpips_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no such file"):
        LPIPS.from_file(tmp_path / "missing.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "lins_only.pth")
    with pytest.raises(ValueError, match="no AlexNet backbone"):
        LPIPS.from_file(tmp_path / "lins_only.pth")
    # Arbitrary backbone numbers stand in for the ImageNet AlexNet (not available here): this
    # checks the loading and the arithmetic against torchmetrics' own LPIPS code.
    torch.manual_seed(0)
    backbone = {f"features.{k}": v for k, v in LPIPS().features.state_dict().items()}
    torch.save(backbone, tmp_path / "alexnet.pth")
    ours = LPIPS.from_file(tmp_path / "alexnet.pth")
    slice_of = {"0": 1, "3": 2, "6": 3, "8": 4, "10": 5}  # conv index -> LPIPS slice
    as_module = {f"net.slice{slice_of[k.split('.')[1]]}.{k.split('.', 1)[1]}": v for k, v in backbone.items()}
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS.CHANNELS)}
    full = LPIPS.from_file(_save(tmp_path / "module.pth", {**as_module, **lins}))
    assert torch.equal(full.features[3].weight, ours.features[3].weight)
    assert torch.equal(full.lins[4].weight, lins["lin4.model.1.weight"])

    import torchmetrics.functional.image.lpips as tm

    monkeypatch.setattr(tm, "_get_tv_model_features", lambda net, pretrained=False: ours.features)
    reference = tm._LPIPS(pretrained=True, net="alex").eval()  # its bundled v0.1 linear layers
    a, b = (torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255 for f in (_frames(3), _frames(4)))
    with torch.no_grad():
        expected = reference(2 * a - 1, 2 * b - 1).flatten()
    torch.testing.assert_close(ours(a, b), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours(a, a), torch.zeros(len(a)))
    scores = frame_metrics(_frames(3), _frames(4), ours)["lpips"]
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=1e-6)


def _save(path, state):
    torch.save(state, path)
    return path


def test_eval_end_to_end(revisit, tmp_path):
    folder, paths = revisit
    out = tmp_path / "eval"
    args = ["eval", "--checkpoints", "tiny", "other=tiny", "--episodes", str(folder), "--horizon",
            str(HORIZON),
            "--scale", "1", "--no-progress"]
    assert main([*args, "--videos", "1", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "psnr.png", "rollouts.png",
                                               "videos"}
    assert [p.name for p in (out / "videos").iterdir()] == [paths[0].stem + ".mp4"]
    assert iio.imread(out / "videos" / (paths[0].stem + ".mp4")).shape[:1] == (HORIZON,)
    sheet = iio.imread(out / "rollouts.png")  # ground truth, tiny, other; frames across, upscaled x2
    assert sheet.shape == (3 * 128, min(12, HORIZON) * 128, 3)
    context = int(np.load(paths[0])["context_len"])
    assert np.array_equal(sheet[:128:2, :128:2], load_episode(paths[0])["image"][context])
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"] == "retrieval"  # from the manifest's kind
    assert [m["name"] for m in res["models"]] == ["tiny", "other"] and res["models"][0]["params"] > 0
    assert res["settings"]["episode_seeds"] == [0, 1] and res["device"]["type"] == "cpu"
    names = ["tiny", "other", *REFERENCES]
    for ep, path in zip(res["episodes"], paths):
        truth = load_episode(path)
        assert ep["context"] == int(truth["context_len"]) and ep["horizon"] == HORIZON
        assert len(ep["recall_distance"]) == HORIZON
        for name in names:
            m = ep["metrics"][name]
            assert len(m["ssim"]) == len(m["psnr"]) == HORIZON and m["lpips"] is None
            assert np.isfinite(m["ssim"] + m["psnr"]).all()
        c = ep["context"]
        ref = frame_metrics(np.repeat(truth["image"][c - 1:c], HORIZON, 0), truth["image"][c:c + HORIZON])
        np.testing.assert_allclose(ep["metrics"]["repeat last frame"]["psnr"], ref["psnr"])
    seen = np.array([d >= 0 for ep in res["episodes"] for d in ep["recall_distance"]])
    for name in names:
        s = res["summary"]["all"][name]
        assert s["frames"] == 2 * HORIZON and s["lpips"] is None and np.isfinite([s["ssim"], s["psnr"]]).all()
        # recall frames and the views the context never showed split the frames, each scored alone
        psnr = np.concatenate([ep["metrics"][name]["psnr"] for ep in res["episodes"]])
        for section, mask in (("recall", seen), ("unseen", ~seen)):
            part = res["summary"][section][name]
            assert part["frames"] == mask.sum()
            if mask.any():
                assert part["psnr"] == pytest.approx(psnr[mask].mean())
    assert set(res["psnr_by_frame"]) == set(names) and len(res["psnr_by_frame"]["tiny"]) == HORIZON
    table = (out / "results.md").read_text()
    assert "| tiny |" in table and "*repeat last frame* (reference)" in table and "LPIPS n/a" in table
    assert f"## Unseen frames (views the context never showed): {(~seen).sum()} frames" in table

    # Deterministic by seed, and an episode's result does not depend on the others.
    again = tmp_path / "again"
    assert main([*args, "--limit", "1", "--videos", "0", "--out", str(again)]) == 0
    first = json.loads((again / "results.json").read_text())["episodes"]
    assert len(first) == 1 and first[0]["metrics"] == res["episodes"][0]["metrics"]

    # A context override under the reasoning protocol.
    other = tmp_path / "reasoning"
    assert main(["eval", "--checkpoint", "tiny", "--episodes", str(folder), "--protocol", "reasoning",
                 "--context", "10", "--horizon", "3", "--videos", "0", "--no-progress", "--out",
                 str(other)]) == 0
    res = json.loads((other / "results.json").read_text())
    assert res["protocol"] == "reasoning" and [e["context"] for e in res["episodes"]] == [10, 10]
    assert res["summary"]["all"]["tiny"]["frames"] == 6

    # Lookback: the context ends where the closing look-around (the trailing left turns) begins.
    back = tmp_path / "lookback"
    assert main(["eval", "--checkpoint", "tiny", "--episodes", str(folder), "--protocol", "lookback",
                 "--videos", "0",
                 "--no-progress", "--out", str(back)]) == 0
    res = json.loads((back / "results.json").read_text())
    for ep, path in zip(res["episodes"], paths):
        actions = actions_to_index(load_episode(path)["action"])
        c, h = ep["context"], ep["horizon"]
        assert c + h == len(actions) and (actions[c:] == LEFT).all() and actions[c - 1] != LEFT
    assert "closest context view" in res["summary"]["all"]


def test_rollout_episode(revisit, tmp_path):
    _, paths = revisit
    out = tmp_path / "roll.mp4"
    assert main(["rollout", "--checkpoint", "tiny", "--episode", str(paths[0]), "--context", "8",
                 "--horizon", "6",
                 "--side-by-side", "--scale", "2", "--gif", "--out", str(out)]) == 0
    video = iio.imread(out)
    assert video.shape[0] == 6 and video.shape[2:] == (2 * 2 * 64, 3)
    assert video.shape[1] > 2 * 64  # the label row on top
    assert iio.imread(out.with_suffix(".gif")).shape[0] == 6
    with pytest.raises(ValueError, match="needs ground truth"):
        main(["rollout", "--checkpoint", "tiny", "--episode", str(paths[0]), "--actions", "W W",
              "--side-by-side", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(ValueError, match="--episode"):
        main(["rollout", "--checkpoint", "tiny", "--out", str(tmp_path / "x.mp4")])


def test_rollout_action_script_from_the_env(tmp_path):
    out = tmp_path / "script.gif"
    assert main(["rollout", "--checkpoint", "tiny", "--actions", "W*3 A WD .", "--context", "3", "--seed",
                 "1",
                 "--side-by-side", "--scale", "1", "--out", str(out)]) == 0
    frames = iio.imread(out)
    assert frames.shape[0] == 6 and frames.shape[2] == 2 * 64
    truth = frames[:, -64:, :64].astype(int)
    assert np.abs(np.diff(truth, axis=0)).mean() > 1.0  # the real env moved: ground truth changes


def test_eval_of_a_latent_model_scores_its_autoencoder_as_a_reference(revisit, tmp_path):
    """A checkpoint folder with vae/ streams through its autoencoder, and eval adds that
    autoencoder's reconstruction of the true frames (the latent model's ceiling) as a reference."""
    from worldmodel.config import get_preset
    from worldmodel.eval.protocols import AE_REFERENCE
    from worldmodel.model import WorldModel
    from worldmodel.vae import FrameCodec, build_autoencoder
    from worldmodel.world import frames_from_model, frames_to_model

    folder, paths = revisit
    ckpt = tmp_path / "latent"
    torch.manual_seed(0)
    WorldModel(get_preset("tiny-latent").model.to_dict()).save_pretrained(ckpt)
    build_autoencoder("tiny").save_pretrained(ckpt / "vae")
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoints", f"latent={ckpt}", "--episodes", str(folder), "--limit", "1",
                 "--horizon", "3",
                 "--videos", "0", "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert AE_REFERENCE in res["references"] and AE_REFERENCE in res["summary"]["all"]
    truth = load_episode(paths[0])
    c = int(truth["context_len"])
    codec = FrameCodec.from_pretrained(ckpt / "vae")
    x = frames_to_model(torch.from_numpy(truth["image"][c:c + 3]))
    recon = frames_from_model(codec.decode(codec.encode(x))).numpy()
    expected = frame_metrics(recon, truth["image"][c:c + 3])
    np.testing.assert_allclose(res["episodes"][0]["metrics"][AE_REFERENCE]["psnr"], expected["psnr"],
                               rtol=1e-5)


def test_shipped_checkpoint_streams_real_frames_through_its_autoencoder(revisit):
    """The model the install ships: it loads with its autoencoder, which reconstructs real maze
    frames well (29-30 dB measured on held-out episodes), and streams 64x64 frames."""
    from worldmodel import load_world
    from worldmodel.world import frames_from_model, frames_to_model

    world = load_world(device="cpu", steps=1)
    assert world.codec is not None and world.frame_shape == (64, 64, 3)
    ep = load_episode(revisit[1][0])
    frames, actions = ep["image"][:12], actions_to_index(ep["action"][:12])
    x = frames_to_model(torch.from_numpy(frames))
    recon = frames_from_model(world.codec.decode(world.codec.encode(x))).numpy()
    assert frame_metrics(recon, frames)["psnr"].mean() > 25.0
    world.reset(frames[:8], actions[:8])
    for a in actions[8:]:
        frame = world.step(int(a))
    # a picture, not a flat colour
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5


@pytest.mark.parametrize("variant", ["mamba2_local", "causal_window"])
def test_shipped_baselines_share_the_shipped_latent_space(variant):
    """The memory comparison is rerunnable from the install: each baseline ships beside the model,
    is the architecture its name says, and works in the shipped model's latent space (the same
    autoencoder weights), so their PSNRs are comparable."""
    from worldmodel.world import DEFAULT_CHECKPOINT, load_codec, load_model

    folder = DEFAULT_CHECKPOINT.parent / f"{DEFAULT_CHECKPOINT.name}-{variant}"
    model = load_model(folder)
    assert model.cfg.variant == variant
    assert load_codec(folder).fingerprint == load_codec().fingerprint
    ours = load_model()
    shape_keys = ("d_model", "n_layers", "frame_size", "patch_size")
    assert all(getattr(model.cfg, k) == getattr(ours.cfg, k) for k in shape_keys)


def test_eval_gives_a_pose_model_the_episodes_poses(revisit, tmp_path):
    """The paper's protocol: a pose-conditioned model is given the episode's true poses (context and
    generated frames); --no-pose withholds them; --dead-reckon gives the context's and lets the world
    dead-reckon the rest, as the app does."""
    from helpers import randomized

    folder, _ = revisit
    ckpt = tmp_path / "posed"
    randomized(pose_cond=True).save_pretrained(ckpt)
    results = {}
    for flag in ("", "--no-pose", "--dead-reckon"):
        out = tmp_path / f"eval{flag}"
        assert main(["eval", "--checkpoints", f"posed={ckpt}", "--episodes", str(folder), "--limit", "1",
                     "--horizon", "3", "--steps", "1", "--videos", "0", "--no-progress", "--out", str(out),
                     *([flag] if flag else [])]) == 0
        results[flag] = json.loads((out / "results.json").read_text())
    poses = [r["settings"]["poses"] for r in results.values()]
    assert poses == ["all", "none", "context, then dead-reckoned"]
    psnr = {k: r["episodes"][0]["metrics"]["posed"]["psnr"] for k, r in results.items()}
    assert psnr[""] != psnr["--no-pose"] and psnr["--dead-reckon"] != psnr["--no-pose"]


def test_eval_context_window_and_commit_noise(revisit, tmp_path):
    """--context-window N gives the models only the last N context frames (a random model with a
    recurrent state then generates other frames: it was told less), --commit-sigma is recorded."""
    from helpers import randomized

    folder, _ = revisit
    ckpt = tmp_path / "m"
    randomized().save_pretrained(ckpt)
    runs = {}
    for name, extra in (("full", []), ("window", ["--context-window", "4", "--commit-sigma", "0.5"])):
        out = tmp_path / name
        assert main(["eval", "--checkpoints", f"m={ckpt}", "--episodes", str(folder), "--limit", "1",
                     "--horizon", "3",
                     "--steps", "1", "--videos", "0", "--no-progress", "--out", str(out), *extra]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    window = runs["window"]["settings"]
    assert window["context_window"] == 4 and window["commit_sigma"] == 0.5
    assert runs["full"]["settings"]["context_window"] is None
    psnr = {k: r["episodes"][0]["metrics"]["m"]["psnr"] for k, r in runs.items()}
    assert psnr["full"] != psnr["window"]
    with pytest.raises(ValueError, match="context-window"):
        main(["eval", "--checkpoints", f"m={ckpt}", "--episodes", str(folder), "--context-window", "0",
              "--out", str(tmp_path / "bad")])


def test_rollout_dead_reckons_the_poses_of_an_action_script(tmp_path):
    """With --dead-reckon a pose-conditioned model gets the real env's context poses only and the
    world dead-reckons the rest in the env's maze; given the env's true poses it makes other frames."""
    from helpers import randomized

    ckpt = tmp_path / "memory"
    randomized(pose_cond=True, pose_memory=True, memory_headings=4).save_pretrained(ckpt)
    videos = []
    for flag in ([], ["--dead-reckon"]):
        out = tmp_path / f"script{len(flag)}.gif"
        assert main(["rollout", "--checkpoint", str(ckpt), "--actions", "W*4 A*3", "--context", "3",
                     "--seed", "1",
                     "--steps", "1", "--scale", "1", "--out", str(out), *flag]) == 0
        videos.append(iio.imread(out).astype(int))
    assert videos[0].shape == videos[1].shape and np.abs(videos[0] - videos[1]).max() > 0


def test_freeplay_buckets_and_sharpness():
    """Sharpness is the mean absolute Laplacian (flat: 0); buckets pool frames over episodes, the ratio
    is model sharpness over real sharpness on the same frames, collapsed = the share under 12 dB."""
    from worldmodel.eval import freeplay

    flat = np.full((1, 8, 8, 3), 128, np.uint8)
    checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)[None, :, :, None].repeat(3, -1)
    assert freeplay.sharpness(flat)[0] == 0 and freeplay.sharpness(checker)[0] > 100
    eps = [dict(horizon=3, truth_sharpness=[2.0, 2.0, 4.0],
                metrics={"m": dict(psnr=[10.0, 20.0, 30.0], ssim=[0.1, 0.2, 0.3],
                                   sharpness=[1.0, 1.0, 4.0])}),
           dict(horizon=2, truth_sharpness=[2.0, 2.0],
                metrics={"m": dict(psnr=[11.0, 13.0], ssim=[0.5, 0.5], sharpness=[2.0, 2.0])})]
    rows = freeplay.buckets(eps, ["m"], bucket=2)
    assert [(r["start"], r["end"], r["frames"]) for r in rows] == [(0, 2, 4), (2, 3, 1)]
    assert rows[0]["m"]["psnr"] == pytest.approx(13.5) and rows[0]["m"]["collapsed"] == pytest.approx(0.5)
    assert rows[0]["m"]["sharpness_ratio"] == pytest.approx(6 / 8) and rows[1]["m"]["sharpness_ratio"] == 1


def test_eval_freeplay_protocol(revisit, tmp_path):
    """freeplay: posed context, then the actions alone with dead-reckoned poses (as the app plays),
    scored per 50-frame bucket with the sharpness ratio, a verdict against issue 17's bar, a plot."""
    from helpers import randomized

    folder, _ = revisit
    ckpt = tmp_path / "posed"
    randomized(pose_cond=True).save_pretrained(ckpt)
    out = tmp_path / "freeplay"
    assert main(["eval", "--checkpoints", f"posed={ckpt}", "--episodes", str(folder),
                 "--protocol", "freeplay", "--context", "8", "--horizon", "60", "--steps", "1",
                 "--videos", "1", "--scale", "1", "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["poses"] == "context, then dead-reckoned"
    assert [(b["start"], b["frames"]) for b in res["buckets"]] == [(0, 100), (50, 20)]
    last = np.concatenate([e["metrics"]["repeat last frame"]["psnr"][:50] for e in res["episodes"]])
    assert res["buckets"][0]["repeat last frame"]["psnr"] == pytest.approx(last.mean())
    assert all(len(e["truth_sharpness"]) == 60 for e in res["episodes"])
    assert set(res["verdict"]["posed"]) >= {"worst_gain_db", "worst_sharpness_ratio", "collapsed", "holds"}
    assert (out / "freeplay.png").exists() and "Free play, per 50" in (out / "results.md").read_text()


def test_paper_reversed_plan_and_splits():
    """paper-retrieval replays the context backwards (generated frame i is context frame C-1-i);
    step 0 stays put, step i undoes the context's action C-i as the chosen mode says."""
    from worldmodel.actions import FORWARD, FORWARD_LEFT, FORWARD_RIGHT, NOOP, RIGHT
    from worldmodel.eval import paper

    assert paper.reversed_order(5, 3).tolist() == [0, 1, 2, 3, 4, 4, 3, 2]
    assert paper.reversed_order(3, 3).tolist() == [0, 1, 2, 2, 1, 0]
    actions = np.array([NOOP, FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT])
    assert paper.reverse_actions(actions, 6, 5, "mirror").tolist() == [NOOP, FORWARD_LEFT, FORWARD_RIGHT,
                                                                       LEFT, RIGHT]
    assert paper.reverse_actions(actions, 6, 5, "turns").tolist() == [NOOP, LEFT, RIGHT, LEFT, RIGHT]
    assert paper.reverse_actions(actions, 6, 6, "noop").tolist() == [NOOP] * 6
    assert paper.reverse_actions(actions, 3, 3, "mirror").tolist() == [NOOP, RIGHT, FORWARD]
    with pytest.raises(ValueError, match="horizon <= context"):
        paper.reversed_order(3, 4)
    with pytest.raises(ValueError, match="unknown reverse-actions mode"):
        paper.reverse_actions(actions, 6, 2, "back")
    assert paper.split("paper-retrieval", None, None, 2001) == (400, 400)
    assert paper.split("paper-reasoning", None, None, 2001) == (576, 224)
    assert paper.split("paper-reasoning", 40, 10, 81) == (40, 10)
    with pytest.raises(ValueError, match="does not fit"):
        paper.split("paper-reasoning", None, None, 81)
    with pytest.raises(ValueError, match="does not fit"):
        paper.split("paper-retrieval", 30, 31, 81)


def _paper_eval(folder, ckpt, out, protocol, *extra):
    assert main(["eval", "--checkpoints", f"posed={ckpt}", "--episodes", str(folder), "--protocol", protocol,
                 "--limit", "1", "--steps", "1", "--videos", "1", "--scale", "1", "--no-progress",
                 "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_eval_paper_retrieval_scores_the_context_reversed(revisit, tmp_path):
    """Ground truth of generated frame i is context frame C-1-i; the recall distance is measured
    along the replayed trajectory; the reversed-motion actions are recorded and reach the model."""
    from helpers import randomized

    from worldmodel.data.trajectories import recall_distance

    folder, paths = revisit
    ckpt = tmp_path / "posed"
    randomized(pose_cond=True).save_pretrained(ckpt)
    c, h = 30, 20
    runs = {mode: _paper_eval(folder, ckpt, tmp_path / mode, "paper-retrieval", "--context", str(c),
                              "--horizon", str(h), "--reverse-actions", mode) for mode in ("mirror", "noop")}
    res = runs["mirror"]
    ep, truth = res["episodes"][0], load_episode(paths[0])
    assert (ep["context"], ep["horizon"]) == (c, h) and res["settings"]["reverse_actions"] == "mirror"
    assert "closest context view" not in res["references"]  # it would be the ground truth itself
    backwards = truth["image"][c - 1::-1][:h]
    ref = frame_metrics(np.repeat(truth["image"][c - 1:c], h, 0), backwards)
    np.testing.assert_allclose(ep["metrics"]["repeat last frame"]["psnr"], ref["psnr"])
    assert ep["metrics"]["repeat last frame"]["psnr"][0] == PSNR_CAP_DB  # frame 0 is context frame C-1
    sheet = iio.imread(tmp_path / "mirror" / "rollouts.png")  # ground truth on top, 12 columns, x2
    assert np.array_equal(sheet[:128:2, :128:2], truth["image"][c - 1])
    assert np.array_equal(sheet[:128:2, -128::2], truth["image"][c - h])
    order = np.r_[np.arange(c), c - 1 - np.arange(h)]
    expected = recall_distance(truth["agent_pos"][order], truth["agent_dir"][order], c)
    assert ep["recall_distance"] == expected.tolist()
    assert all(0 < d <= 2 * i + 1 for i, d in enumerate(ep["recall_distance"]))
    assert runs["noop"]["settings"]["reverse_actions"] == "noop"
    assert ep["metrics"]["posed"]["psnr"] != runs["noop"]["episodes"][0]["metrics"]["posed"]["psnr"]
    assert "replay the context's poses in reverse" in (tmp_path / "mirror" / "results.md").read_text()
    with pytest.raises(ValueError, match="dead-reckon"):
        _paper_eval(folder, ckpt, tmp_path / "x", "paper-retrieval", "--context", "30", "--dead-reckon")


def test_eval_paper_reasoning_with_true_and_dead_reckoned_poses(revisit, tmp_path):
    """paper-reasoning: the context, then new movement; with --dead-reckon the generated frames'
    poses come from the actions, recorded in the settings; the tables put both beside the paper."""
    from helpers import randomized

    from worldmodel.eval import paper

    folder, paths = revisit
    ckpt = tmp_path / "posed"
    randomized(pose_cond=True).save_pretrained(ckpt)
    split = ("--context", "40", "--horizon", "10")
    true = _paper_eval(folder, ckpt, tmp_path / "true", "paper-reasoning", *split)
    dead = _paper_eval(folder, ckpt, tmp_path / "dead", "paper-reasoning", *split, "--dead-reckon")
    assert (true["settings"]["poses"], dead["settings"]["poses"]) == ("all", "context, then dead-reckoned")
    ep, truth = true["episodes"][0], load_episode(paths[0])["image"]
    assert (ep["context"], ep["horizon"]) == (40, 10) and "closest context view" in true["references"]
    ref = frame_metrics(np.repeat(truth[39:40], 10, 0), truth[40:50])
    np.testing.assert_allclose(ep["metrics"]["repeat last frame"]["psnr"], ref["psnr"])
    assert ep["metrics"]["posed"]["psnr"] != dead["episodes"][0]["metrics"]["posed"]["psnr"]
    assert paper.main(["--reasoning", str(tmp_path / "true" / "results.json"), "--dead-reckoned",
                       str(tmp_path / "dead" / "results.json"), "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| paper: Block-wise SSM + frame-local attention (~200M) | 0.855 | 0.099 | 28.2 | -- | -- |" \
        in text
    row, psnr = dead["summary"]["all"]["posed"], true["summary"]["all"]["posed"]["psnr"]
    assert f"| {psnr:.1f} | {row['ssim']:.3f} | {row['psnr']:.1f} |" in text
    with pytest.raises(ValueError, match="poses"):  # runs set side by side share their settings
        paper.merge([true, dead])
