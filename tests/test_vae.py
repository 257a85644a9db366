"""The frame autoencoder wrapper: latents are the posterior means, shifted and scaled as its
config says, channels-last like frames, and decode inverts the normalisation."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from worldmodel.vae import FrameCodec, build_autoencoder
from worldmodel.world import load_codec


def test_codec_normalises_latents_and_keeps_frame_layout():
    torch.manual_seed(0)
    vae = build_autoencoder("tiny")
    vae.register_to_config(scaling_factor=2.0, shift_factor=0.5)
    codec = FrameCodec(vae, chunk=3)  # chunks smaller than the batch: the split must not change results
    x = torch.rand(2, 4, 64, 64, 3) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 4, 8, 8, 4) and codec.latent_shape == (8, 8, 4)
    raw = vae.encode(x.reshape(8, 64, 64, 3).permute(0, 3, 1, 2)).latent_dist.mode()
    expected = ((raw - 0.5) * 2.0).permute(0, 2, 3, 1).reshape(2, 4, 8, 8, 4)
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)
    y = codec.decode(z)
    expected = vae.decode(raw).sample.clamp(-1, 1).permute(0, 2, 3, 1).reshape(2, 4, 64, 64, 3)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    assert y.shape == x.shape and y.abs().max() <= 1
    fp = codec.fingerprint
    vae.register_to_config(scaling_factor=3.0)
    assert FrameCodec(vae).fingerprint != fp  # another normalisation -> other cached latents


def test_checkpoints_share_an_autoencoder_folder_by_hash(tmp_path):
    """A checkpoint's vae.json names a shared autoencoder folder (relative to the checkpoint) and the
    sha256 of its weights; a missing folder or another file is a ValueError naming both."""
    torch.manual_seed(0)
    build_autoencoder("tiny").save_pretrained(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (ckpt / "vae.json").write_text(json.dumps({"path": "../vae", "sha256": digest}))
    codec = load_codec(ckpt)
    assert codec.fingerprint == FrameCodec.from_pretrained(tmp_path / "vae").fingerprint
    (ckpt / "vae.json").write_text(json.dumps({"path": "../vae", "sha256": "0" * 64}))
    with pytest.raises(ValueError, match="vae.json expects the autoencoder .*diffusion_pytorch_model"):
        load_codec(ckpt)
    (ckpt / "vae.json").write_text(json.dumps({"path": "../elsewhere", "sha256": digest}))
    with pytest.raises(ValueError, match="vae.json names the autoencoder folder .*elsewhere"):
        load_codec(ckpt)
    assert load_codec(tmp_path / "vae") is None  # no vae/ and no vae.json: a pixel model's folder
