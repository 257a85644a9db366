"""Flow matching with per-frame noise levels (diffusion forcing) and the clean-prefix scheme.

Parametrisation: rectified flow, x_s = (1 - s) x_0 + s * eps with s in [0, 1]; the network
predicts the clean frame x_0 and the sampler turns it into the velocity (x_s - x_0) / s that
diffusers' FlowMatchEulerDiscreteScheduler steps with. Why flow matching: straight paths, so a
4-step Euler sampler already gives usable frames (what an interactive frame rate needs), and
s = 0 is exactly "clean" (context frames need no special case). Why x_0 and not the velocity:
in pixel space an 8x8x3 patch (192 numbers) is wider than the tokens of a small model, so a
network cannot carry the noise through to predict eps - x_0, while clean frames lie on a
low-dimensional manifold it can predict (Li & He, "Back to Basics", 2025). Measured here: with
velocity prediction the model never learned to copy its context; the loss is plain x_0 MSE,
which also weights high noise -- where the next frame must come from memory -- fully.

Training noise (the paper's long-context scheme): with probability ``prefix_prob`` a random
clean prefix longer than ``prefix_min`` (default half) of the clip is kept at s = 0 and only the
frames after it are noised and scored; otherwise every frame gets its own independent level
(diffusion forcing).

Sampling: `DiffusionSampler` makes one frame of a stream (the denoising loop and the commit of
the frame into the recurrent state); `World` calls it.
"""

from __future__ import annotations

import numbers

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .config import DEFAULT_FOLD_COMMIT


class FlowMatching:
    GAP_SIGMA = 0.7  # the lowest noise level of a memory gap's frames

    def __init__(self, prefix_prob: float = 0.5, prev_noise: float = 0.2, self_prev_prob: float = 0.0,
                 frame_range: float | None = 1.0, pose_drop: float = 0.0, gap_prob: float = 0.0,
                 gap_max: int = 32, prefix_min: float = 0.5):
        for name, prob in (("prefix_prob", prefix_prob), ("self_prev_prob", self_prev_prob),
                           ("gap_prob", gap_prob), ("pose_drop", pose_drop)):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"expected {name} in [0, 1], got {prob!r}")
        # The clean previous frame each frame is conditioned on is, when streaming, the model's own
        # imperfect frame. So in training it gets a noise level drawn from [0, prev_noise], and with
        # probability self_prev_prob per clip it is replaced by the model's own (detached) prediction
        # of that frame, as in scheduled sampling: trained on ground truth only, the model never
        # learns to correct its own errors, and 16-frame rollouts drift (measured: dark, blue-tinted).
        self.prefix_prob, self.prefix_min = prefix_prob, prefix_min
        self.prev_noise, self.self_prev_prob = prev_noise, self_prev_prob
        self.frame_range = frame_range  # pixels lie in [-1, 1]; latents are unbounded (None)
        # a pose-conditioned model also learns to run without poses (the app has none)
        self.pose_drop = pose_drop
        # Memory gaps: in this fraction of the clips with a clean prefix, up to gap_max frames right
        # after it are heavily noised (s >= GAP_SIGMA), their clean versions withheld from the frames
        # after them as well. Those frames must then come from further back -- the recurrent state -- as
        # when a stream has generated frames of its own since it last saw the place. Without them the
        # last 10 frames (attention) and the previous frame always carry the answer: measured, the
        # same recall PSNR from 16 context frames as from ~520. With them the far context changes the
        # frames, though not yet for the better on average (BENCHMARKS.md).
        self.gap_prob, self.gap_max = gap_prob, gap_max

    def training_sigmas(self, batch: int, frames: int, device=None, generator=None):
        """Noise level per frame (B, T) and the mask of frames that count in the loss."""
        # Uniform levels. Not SD3's logit-normal: that almost never draws s > 0.95, yet a 4-step
        # sampler starts at s = 1, where predicting the frame from the context *is* the world
        # model's job; trained logit-normal, our model ignored its context (measured, step 500).
        sigma = torch.rand(batch, frames, device=device, generator=generator)
        scored = torch.ones(batch, frames, dtype=torch.bool, device=device)
        if frames > 1 and self.prefix_prob > 0:
            use_prefix = torch.rand(batch, device=device, generator=generator) < self.prefix_prob
            # prefix longer than prefix_min of the clip, >= 1 noised frame
            lo = int(frames * self.prefix_min) + 1
            prefix = torch.randint(min(lo, frames - 1), frames, (batch,), device=device, generator=generator)
            in_prefix = torch.arange(frames, device=device)[None] < prefix[:, None]
            in_prefix &= use_prefix[:, None]
            sigma = sigma.masked_fill(in_prefix, 0.0)
            scored &= ~in_prefix
            if self.gap_prob > 0:
                gap = use_prefix & (torch.rand(batch, device=device, generator=generator) < self.gap_prob)
                length = torch.randint(1, self.gap_max + 1, (batch,), device=device, generator=generator)
                t = torch.arange(frames, device=device)[None]
                in_gap = gap[:, None] & (t >= prefix[:, None]) & (t < (prefix + length)[:, None])
                u = torch.rand(batch, frames, device=device, generator=generator)
                high = self.GAP_SIGMA + (1 - self.GAP_SIGMA) * u
                sigma = torch.where(in_gap, torch.maximum(sigma, high), sigma)
        return sigma, scored

    @staticmethod
    def add_noise(x0, sigma, noise):
        s = sigma.reshape(*sigma.shape, *([1] * (x0.ndim - sigma.ndim)))
        return (1 - s) * x0 + s * noise

    def loss(self, model, x0, action, generator=None, pose=None):
        """Mean squared error of the predicted clean frames over the scored frames. x0: (B, T, H, W, C)
        in [-1, 1] (or latents); pose: (B, T, 4) or None, dropped per clip with probability pose_drop."""
        B, T = x0.shape[:2]
        sigma, scored = self.training_sigmas(B, T, x0.device, generator)
        if pose is not None and self.pose_drop > 0:
            drop = torch.rand(B, device=x0.device, generator=generator) < self.pose_drop
            pose = pose.masked_fill(drop[:, None, None], float("nan"))
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        x = self.add_noise(x0, sigma, noise)
        prev = torch.cat([torch.zeros_like(x0[:, :1]), x0[:, :-1]], dim=1)
        prev_sigma = torch.rand(B, T, device=x0.device, generator=generator) * self.prev_noise
        prev_eps = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        prev = self.add_noise(prev, prev_sigma, prev_eps)
        # after a heavily noised frame, its noised version is all the next one sees of it
        if self.gap_prob > 0:
            noisy_before = torch.cat([torch.zeros_like(sigma[:, :1]), sigma[:, :-1]], dim=1) >= self.GAP_SIGMA
            prev = torch.where(noisy_before.reshape(B, T, *([1] * (x0.ndim - 2))),
                               torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1), prev)
        if self.self_prev_prob > 0:
            own = torch.rand(B, device=x0.device, generator=generator) < self.self_prev_prob
            if own.any():
                with torch.no_grad():
                    first, _ = model(x[own], sigma[own], action[own], prev=prev[own],
                                     pose=None if pose is None else pose[own], state_out="none")
                prev = prev.clone()
                if self.frame_range is not None:
                    first = first.clamp(-self.frame_range, self.frame_range)
                prev[own, 1:] = first[:, :-1].to(prev.dtype)
        pred, _ = model(x, sigma, action, prev=prev, pose=pose, state_out="none")  # no state: training
        per_frame = (pred.float() - x0.float()).pow(2).mean(dim=(2, 3, 4))
        return (per_frame * scored).sum() / scored.sum().clamp(min=1)

    @staticmethod
    def velocity(x, x0_pred, sigma):
        """The flow velocity eps - x_0 implied by a clean-frame prediction at noise level sigma."""
        return (x - x0_pred) / sigma.clamp(min=1e-3)



MAX_STEPS = 1000  # the scheduler's training timesteps: more sampling steps than that mean nothing


def check_sampler_args(steps, commit_sigma, fold_commit: bool = False) -> None:
    """ValueError unless `steps` is an int in 1..MAX_STEPS, `commit_sigma` a number in [0, 1] and
    `fold_commit` a bool."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"expected steps as an int in 1..{MAX_STEPS} (denoising steps per frame), "
                         f"got {steps!r}")
    if not isinstance(fold_commit, bool):
        raise ValueError(f"expected fold_commit as a bool, got {fold_commit!r}")
    if isinstance(commit_sigma, bool) or not isinstance(commit_sigma, numbers.Real) \
            or not 0.0 <= commit_sigma <= 1.0:
        raise ValueError(f"expected commit_sigma as a number in [0, 1], got {commit_sigma!r}")


class DiffusionSampler:
    """Makes one frame of a stream: Euler steps of the flow from pure noise (s = 1) down to s = 0 on
    `steps` evenly spaced levels, then the commit pass that writes the frame into the recurrent state.

    Generated frames are committed at noise level `commit_sigma`: the model was trained on noisy
    context (diffusion forcing), and a little noise hides its own artefacts. `frame_range`: pixel
    models' frames are clamped to [-1, 1] before they are committed; None for latents (unbounded).

    `fold_commit`: keep the state of the last denoising pass instead of running a commit pass. That
    pass already saw the frame at a low noise level (1/steps: 0.25 at 4 steps), as the commit pass
    would at `commit_sigma`, so one model pass per frame is saved; `commit_sigma` is then unused.
    At 1 step the only pass saw pure noise: the frame then reaches the state through the next frame's
    previous-frame input and the memory alone.
    """

    def __init__(self, steps: int, commit_sigma: float = 0.25, frame_range: float | None = 1.0, device=None,
                 fold_commit: bool = DEFAULT_FOLD_COMMIT):
        check_sampler_args(steps, commit_sigma, fold_commit)
        self.fold_commit = fold_commit
        # The levels of diffusers' Euler scheduler (0 appended); its step, prev = x + (s' - s) v, is
        # written out below, so that no scheduler state needs resetting for every frame.
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        sched.set_timesteps(sigmas=torch.linspace(1.0, 0.0, steps + 1)[:-1].tolist(), device=device)
        self.sigmas = sched.sigmas
        self.steps, self.commit_sigma, self.frame_range = steps, commit_sigma, frame_range

    @torch.no_grad()
    def __call__(self, model, state: dict, action: torch.Tensor, pose: torch.Tensor | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """The next frame (1, 1, H, W, C) in model space and the state that has seen it; action: (1, 1)
        ids, pose: (1, 1, 4) or None. The state's "prev" (the frame the next one is conditioned on) is
        the caller's to set: `World.step` writes the frame it shows, re-encoded. `state` is spent
        (its pose-memory map is updated in place). Draws the start
        noise, then the commit noise (unless folded), from `generator`."""
        c, device = model.cfg, self.sigmas.device
        x = torch.randn((1, 1, c.frame_size, c.frame_size, c.in_channels), device=device, generator=generator)
        # only the pass whose state is kept (the last when folded, else the commit pass) makes one,
        # writing the pose memory in place
        last = len(self.sigmas) - 2
        for i, (s, s_next) in enumerate(zip(self.sigmas[:-1], self.sigmas[1:])):
            kept = "inplace" if self.fold_commit and i == last else "none"
            x0, seen = model(x, s.reshape(1, 1), action, state, pose=pose, state_out=kept)
            v = FlowMatching.velocity(x, x0, s)
            x = (x.float() + (s_next - s) * v).to(v.dtype)
        if self.frame_range is not None:
            x = x.clamp(-self.frame_range, self.frame_range)
        if self.fold_commit:
            state = seen
        else:
            commit = torch.full((1, 1), self.commit_sigma, device=device)
            x_commit = x
            if self.commit_sigma > 0:
                eps = torch.randn(x.shape, device=device, generator=generator)
                x_commit = FlowMatching.add_noise(x, commit, eps)
            _, state = model(x_commit, commit, action, state, pose=pose, state_out="inplace")
        return x, state
