"""The denoised-target guidance: pull each render towards the prior's multi-step denoising of it.

``guidance: {kind: target}``. Encode the render (no gradient), noise it to ``t`` (annealed,
:mod:`.base`), run DDIM (eta 0) with classifier-free guidance from ``t`` down to 0 in
``denoise_steps`` equal steps (with ``denoise_step_size`` set, only as many as keep each step at
most that long: ``ceil(max_b t_b / size)``, so low-noise targets cost less), decode, and pull the
render towards that image with a mean-squared error in pixel space (loss term ``target``;
SDEdit-style, as DreamGaussian's refinement). With ``match_size_above`` set, targets of
``t >= match_size_above`` are zoomed about the image centre so that their silhouette has the
render's area (:func:`match_silhouette_size`): at high noise the prior's object size is
unrelated to the render's.

This loss never differentiates through the encoder. On the bundled prior it is the default
guidance (it scored higher than textbook SDS on the benchmark's dev set, ``docs/benchmarks.md``);
on the v1 prior it was the only one that worked (``docs/prior.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from ..errors import UserError
from .base import Guidance, GuidanceConfigBase, GuidanceOutput


def silhouette(images: torch.Tensor, threshold: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask (B, H, W), background (B, 3))`` of images on a solid background: the background is
    the median colour of the one-pixel border, the mask the pixels more than ``threshold`` from it
    in some channel."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    background = border.median(-1).values
    return (images - background[..., None, None]).abs().amax(1) > threshold, background


def match_silhouette_size(images: torch.Tensor, reference: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """``images`` zoomed about the image centre so that each one's silhouette has the area of the
    matching ``reference`` image's (both (B, 3, H, W) on solid backgrounds); uncovered borders take
    the image's background colour. Images with an empty silhouette on either side stay as they are.

    The cameras look at the origin, where the objects stand, so the image centre is the object's
    centre; the zoom changes an object's apparent size and nothing else."""
    mask, background = silhouette(images, threshold)
    ref_mask, _ = silhouette(reference, threshold)
    area, ref_area = mask.flatten(1).sum(1).float(), ref_mask.flatten(1).sum(1).float()
    scale = torch.where((area > 0) & (ref_area > 0), (area / ref_area.clamp(min=1)).sqrt(), torch.ones_like(area))
    b, _, h, w = images.shape
    theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale.clamp(0.5, 2.0).to(images.dtype)
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    bg = background[..., None, None]
    return F.grid_sample(images - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg


def check_denoise_steps(steps: int, step_size: float | None) -> None:
    """Check ``guidance.denoise_steps`` and ``guidance.denoise_step_size`` (one clear error each)."""
    if steps < 1:
        raise UserError(f"guidance.denoise_steps {steps} must be >= 1")
    if step_size is not None and not 0 < step_size <= 1:
        raise UserError(
            f"guidance.denoise_step_size {step_size} must be in (0, 1] (a fraction of the training timesteps) or null"
        )


def denoise_step_count(t: torch.Tensor, num_train_timesteps: int, steps: int, step_size: float | None) -> int:
    """DDIM steps for timesteps ``t``: ``steps``, or with ``step_size`` only as many as keep each
    step at most that long (``ceil(max t / step_size)``, at least 1)."""
    if not step_size:
        return steps
    longest = float(t.max()) / num_train_timesteps
    return max(1, min(steps, math.ceil(longest / step_size - 1e-6)))


@torch.no_grad()
def ddim_to_clean(core, z: torch.Tensor, t: torch.Tensor, steps: int, predict_eps) -> torch.Tensor:
    """DDIM (eta 0) from latents ``z`` noised to each one's own timestep ``t`` down to 0 in ``steps``
    equal steps (each image its share of its ``t``); ``predict_eps(z, t)`` is the guided noise
    estimate. Returns the clean latents."""
    fracs = torch.linspace(1.0, 0.0, steps + 1, device=z.device)
    for i in range(steps):
        t_now = (t.float() * fracs[i]).round().long()
        t_next = (t.float() * fracs[i + 1]).round().long()
        eps = predict_eps(z, t_now)
        x0 = core.predict_x0(z, eps, t_now)
        a_next = core.alphas_cumprod[t_next].reshape(-1, 1, 1, 1).to(z.dtype)
        a_next = torch.where((t_next > 0).reshape(-1, 1, 1, 1), a_next, torch.ones_like(a_next))
        z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return z


@torch.no_grad()
def denoise_images(core, x: torch.Tensor, t: torch.Tensor, steps: int, predict_eps, generator) -> torch.Tensor:
    """Images ``x`` in [0, 1] encoded, noised to ``t`` (noise drawn from ``generator``) and denoised
    by :func:`ddim_to_clean` in ``steps`` steps: the decoded images, float32 in [0, 1]."""
    latents = core.encode_images(x)
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    z = ddim_to_clean(core, core.add_noise(latents, noise, t), t, steps, predict_eps)
    return core.decode_latents(z).float()


@dataclass(frozen=True)
class TargetConfig(GuidanceConfigBase):
    kind: Literal["target"] = "target"
    target_guidance_scale: float = 7.5  # CFG of the denoising (sampling-strength, not SDS-strength)
    target_guidance_rescale: float = 0.0  # diffusers' guidance_rescale of the denoising (core.cfg_rescale)
    denoise_steps: int = 8  # DDIM steps from t to 0 (at most, with denoise_step_size)
    denoise_step_size: float | None = None  # longest DDIM step (fraction of T); fewer steps for small t
    match_size_above: float | None = None  # zoom targets with t >= this to the render's silhouette area

    def __post_init__(self):
        super().__post_init__()
        check_denoise_steps(self.denoise_steps, self.denoise_step_size)
        if not 0 <= self.target_guidance_rescale <= 1:
            raise UserError(
                f"guidance.target_guidance_rescale {self.target_guidance_rescale} must be in [0, 1] (0: off; 0.7: Lin et al.)"
            )
        if self.match_size_above is not None and not 0 <= self.match_size_above <= 1:
            raise UserError(
                f"guidance.match_size_above {self.match_size_above} must be in [0, 1] (a fraction of "
                f"the training timesteps) or null"
            )


class DenoisedTargetGuidance(Guidance):
    """The denoised target (module docstring)."""

    cfg: TargetConfig

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        core, cfg = self.core, self.cfg
        cond, uncond = core.text_conditioning(self.prompts(cameras), cfg.negative_prompt)
        t = self.sample_timesteps(images.shape[0], step, generator)
        x = self.resize(images)
        target = self.denoised_target(x.detach(), t, cond, uncond, generator, self.camera_input(cameras))
        if cfg.match_size_above is not None:
            zoom = t >= cfg.match_size_above * core.num_train_timesteps
            if zoom.any():
                target = torch.where(zoom.reshape(-1, 1, 1, 1), match_silhouette_size(target, x.detach()), target)
        loss = F.mse_loss(x, target.to(x.dtype))  # mean over pixels: regulariser weights stay comparable
        return GuidanceOutput({"target": loss}, {"t": t.float().mean().item()})

    def denoise_step_count(self, t: torch.Tensor) -> int:
        """DDIM steps for timesteps ``t``: ``denoise_steps``, or fewer with ``denoise_step_size``."""
        return denoise_step_count(t, self.core.num_train_timesteps, self.cfg.denoise_steps, self.cfg.denoise_step_size)

    @torch.no_grad()
    def denoised_target(self, x, t, cond, uncond, generator, camera=None) -> torch.Tensor:
        """The multi-step DDIM denoising of ``x`` noised to ``t``: images in [0, 1] (``camera``: the
        features of a camera-conditioned prior)."""
        core, cfg = self.core, self.cfg

        def predict_eps(z, t_now):
            return core.predict_noise(
                z, t_now, cond, uncond, cfg.target_guidance_scale, camera, cfg.target_guidance_rescale
            )

        return denoise_images(core, x, t, self.denoise_step_count(t), predict_eps, generator)
