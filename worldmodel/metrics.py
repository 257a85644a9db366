"""Per-frame image metrics of generated frames against ground truth, and their aggregates.

Both sides are uint8 frames compared as floats in [0, 1] with data_range 1:
- SSIM and PSNR from torchmetrics' functional API, one value per frame (reduction "none").
  The PSNR of two identical frames is infinite; it is capped at PSNR_CAP_DB = 100 dB (above
  the 89.0 dB of the smallest non-zero error two 64x64 uint8 frames can have), so that means,
  plots and JSON stay finite.
- LPIPS (v0.1, AlexNet backbone, Zhang et al. 2018) only when `--lpips-weights PATH` names
  the ImageNet AlexNet weights, which cannot be downloaded here (torchvision is not installed
  either). PATH is a state dict (torch `.pth` or `.safetensors`) holding either torchvision's
  AlexNet (`alexnet-owt-7be5be79.pth`: keys `features.0.weight` ...) or a full LPIPS module
  as the `lpips` package and torchmetrics name it (`net.slice1.0.weight` ...,
  `lin0.model.1.weight` ...). The five linear calibration layers come from the file when it
  has them, else from the LPIPS v0.1 weights bundled with torchmetrics. Without weights LPIPS
  is reported as absent (null), never computed with a random backbone.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

PSNR_CAP_DB = 100.0


def _unit(frames: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(dtype) / 255.0


def _psnr(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N,) PSNR in dB, capped at PSNR_CAP_DB."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(
        max=PSNR_CAP_DB
    )


def _check_frames(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape or pred.dtype != np.uint8 or target.dtype != np.uint8 or pred.ndim != 4 \
            or pred.shape[-1] != 3:
        raise ValueError(f"expected two uint8 arrays of one shape (T, H, W, 3), got {pred.dtype} "
                         f"{pred.shape} and {target.dtype} {target.shape}")


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR (dB, capped at PSNR_CAP_DB) of one uint8 frame (H, W, 3) against another: the value
    frame_metrics gives that frame."""
    pred, target = np.asarray(pred)[None], np.asarray(target)[None]
    _check_frames(pred, target)
    return float(_psnr(_unit(pred), _unit(target))[0])


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 with the AlexNet backbone, as the `lpips` package and torchmetrics compute it:
    inputs scaled to [-1, 1] and normalised, unit-normalised features at the five ReLUs, squared
    differences weighted by 1x1 linear layers, averaged over space and summed over layers.
    Build it with `LPIPS.from_file(path)`; see the module docstring for the accepted files."""

    CHANNELS = (64, 192, 384, 256, 256)
    TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs in torchvision's alexnet().features
    CONVS = (0, 3, 6, 8, 10)  # indices of its convolutions

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: str | Path) -> "LPIPS":
        path = Path(path)
        state = cls._state_from_file(path)
        model = cls()
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"--lpips-weights {path}: tensors do not fit LPIPS-AlexNet: {e}") from e
        missing = [k for k in model.state_dict() if k not in state and k not in ("shift", "scale")]
        if missing:
            raise ValueError(f"--lpips-weights {path}: missing {missing}")
        return model

    @classmethod
    def _read(cls, path: Path) -> dict:
        """The file's raw state dict (ValueError if it is not one)."""
        if not path.is_file():
            raise ValueError(f"--lpips-weights {path}: no such file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                raw = load_file(str(path))
            else:
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unreadable file: say which and why
            raise ValueError(
                f"--lpips-weights {path}: not a readable state dict ({type(e).__name__}: {e})"
            ) from e
        if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
            raw = raw["state_dict"]
        if not isinstance(raw, dict):
            raise ValueError(f"--lpips-weights {path}: expected a state dict, got {type(raw).__name__}")
        return raw

    @classmethod
    def _state_from_file(cls, path: Path) -> dict:
        """The file's tensors under this module's names; the bundled linear layers if it has none."""
        state = {}
        for key, value in cls._read(path).items():
            m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
            if m and int(m[1]) in cls.CONVS:
                state[f"features.{m[1]}.{m[2]}"] = value
            m = re.fullmatch(r"lin(\d)\.model\.\d\.weight", key)
            if m:
                state[f"lins.{m[1]}.weight"] = value
        backbone = [f"features.{i}.{p}" for i in cls.CONVS for p in ("weight", "bias")]
        missing = [k for k in backbone if k not in state]
        if missing:
            raise ValueError(f"--lpips-weights {path} holds no AlexNet backbone (missing {missing[:2]}...): "
                             "expected torchvision's alexnet state dict (features.0.weight, ...) or an LPIPS "
                             "module's (net.slice1.0.weight, ..., lin0.model.1.weight, ...)")
        if not any(k.startswith("lins.") for k in state):
            import torchmetrics

            bundled = (
                Path(torchmetrics.__file__).parent / "functional" / "image" / "lpips_models" / "alex.pth"
            )
            if not bundled.is_file():
                raise ValueError(f"--lpips-weights {path} has no linear layers (lin0.model.1.weight ...) and "
                                 f"the LPIPS v0.1 layers bundled with torchmetrics are missing ({bundled})")
            for key, value in torch.load(bundled, map_location="cpu", weights_only=True).items():
                state[f"lins.{key[3]}.weight"] = value
        return state

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) in [0, 1] -> (N,) distances."""
        total = 0.0
        fa, fb = (((2 * x.float() - 1) - self.shift) / self.scale for x in (a, b))
        lin = iter(self.lins)
        for i, layer in enumerate(self.features):
            fa, fb = layer(fa), layer(fb)
            if i in self.TAPS:
                na = fa / torch.sqrt(1e-8 + (fa ** 2).sum(1, keepdim=True))
                nb = fb / torch.sqrt(1e-8 + (fb ** 2).sum(1, keepdim=True))
                total = total + next(lin)((na - nb) ** 2).mean((2, 3))
        return total.flatten()


def frame_metrics(pred: np.ndarray, target: np.ndarray, lpips: LPIPS | None = None,
                  chunk: int = 256) -> dict[str, np.ndarray | None]:
    """Per-frame SSIM, PSNR (dB, capped at PSNR_CAP_DB) and LPIPS (None without a model) of
    uint8 frames (T, H, W, 3) against ground truth of the same shape."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    pred, target = np.asarray(pred), np.asarray(target)
    _check_frames(pred, target)
    ssim, psnrs, lp = [], [], []
    for i in range(0, len(pred), chunk):
        p, t = _unit(pred[i:i + chunk]), _unit(target[i:i + chunk])
        ssim.append(structural_similarity_index_measure(p, t, data_range=1.0, reduction="none"))
        psnrs.append(_psnr(p, t))
        if lpips is not None:
            lp.append(lpips(p, t))

    def cat(values: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(values).double().numpy() if values else np.zeros(0)

    return {"ssim": cat(ssim), "psnr": cat(psnrs), "lpips": cat(lp) if lpips is not None else None}


def mean(x: np.ndarray | None) -> float | None:
    """The mean of per-frame values, None for none (or for an absent metric)."""
    return None if x is None or len(x) == 0 else float(np.mean(x))


def recall_buckets(distance: np.ndarray, pooled: dict, bins: int) -> list[dict]:
    """Mean PSNR and SSIM of each model ({name: {"psnr": (F,), "ssim": (F,)}}) over the frames
    whose recall distance (F,) falls in each of `bins` equal buckets; frames never seen (< 0)
    are left out."""
    seen = distance >= 0
    if not seen.any():
        return []
    edges = np.unique(
        np.linspace(distance[seen].min(), distance[seen].max() + 1, bins + 1).round().astype(int)
    )
    buckets = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = seen & (distance >= lo) & (distance < hi)
        if mask.any():
            buckets.append({"from": int(lo), "to": int(hi), "frames": int(mask.sum()),
                            "psnr": {n: float(m["psnr"][mask].mean()) for n, m in pooled.items()},
                            "ssim": {n: float(m["ssim"][mask].mean()) for n, m in pooled.items()}})
    return buckets
