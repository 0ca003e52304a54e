"""Score distillation (DreamFusion's SDS) and its multi-step denoised-target variant.

Both take rendered images (B, 3, H, W) in [0, 1], with gradients, and return a scalar loss whose
gradient w.r.t. the images is the guidance signal.

**SDS** (``mode="sds"``), as DreamFusion and threestudio: encode the render with the VAE (with
gradients), draw t ~ U[t_min, t_max] and noise eps, predict eps_hat with classifier-free guidance
(:meth:`~dream3d.diffusion.core.LatentDiffusion.predict_noise`, diffusers' CFG convention), and
use the gradient ``w(t) * (eps_hat - eps)`` on the latents. It is applied as the loss
``0.5 * ||z - stopgrad(z - g)||^2 / B`` whose gradient w.r.t. z is exactly g.
Weighting ``w(t)``: ``"sds"`` = 1 - abar_t (DreamFusion), ``"uniform"`` = 1.

**Denoised target** (``mode="target"``): encode the render (no gradient), noise it to t, run
``denoise_steps`` DDIM steps with CFG from t down to 0 (with ``denoise_step_size`` set, only as
many as keep each step at most that long: ``ceil(max_b t_b / size)``, so low-noise steps cost
less), decode, and pull the render towards that
image with a mean-squared-error loss in pixel space (SDEdit-style, as in DreamGaussian's refinement). With the
tiny bundled prior this works where textbook SDS fails: the tiny VAE encoder's Jacobian turns SDS
gradients into speckle, while the target loss never differentiates through the encoder.

The timestep range anneals linearly: ``t_max`` goes from ``t_max`` to ``t_max_end`` over
``anneal_steps`` optimisation steps (fractions of the training timesteps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import UserError


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


@dataclass
class GuidanceConfig:
    mode: Literal["sds", "target"] = "sds"
    guidance_scale: float = 100.0  # diffusers' convention: uncond + s * (cond - uncond)
    negative_prompt: str = ""
    view_prompts: Literal["suffix", "none"] = "suffix"
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_end: float | None = None  # anneal t_max to this value (None: no annealing)
    anneal_steps: int = 0
    weighting: Literal["sds", "uniform"] = "sds"
    grad_clip: float | None = None  # clip the SDS latent gradient elementwise to [-c, c]
    denoise_steps: int = 8  # target mode: DDIM steps from t to 0 (at most, with denoise_step_size)
    denoise_step_size: float | None = None  # target mode: longest DDIM step (fraction of T); fewer steps for small t
    target_guidance_scale: float = 7.5  # target mode's CFG (sampling-strength, not SDS-strength)
    match_size_above: float | None = None  # target mode: zoom targets with t >= this to the render's silhouette area

    def __post_init__(self):
        if self.denoise_steps < 1:
            raise UserError(f"guidance.denoise_steps {self.denoise_steps} must be >= 1")
        if self.match_size_above is not None and not 0 <= self.match_size_above <= 1:
            raise UserError(f"guidance.match_size_above {self.match_size_above} must be in [0, 1] (a fraction of "
                            f"the training timesteps) or null")
        if self.denoise_step_size is not None and not 0 < self.denoise_step_size <= 1:
            raise UserError(f"guidance.denoise_step_size {self.denoise_step_size} must be in (0, 1] (a fraction of "
                            f"the training timesteps) or null")


class ScoreDistillation:
    """SDS / denoised-target guidance on a :class:`~dream3d.diffusion.core.LatentDiffusion`."""

    def __init__(self, core, cfg: GuidanceConfig):
        self.core = core
        self.cfg = cfg

    def t_range(self, step: int) -> tuple[int, int]:
        """Integer timestep range [lo, hi] at optimisation ``step`` (annealed)."""
        cfg = self.cfg
        t_max = cfg.t_max
        if cfg.t_max_end is not None and cfg.anneal_steps > 0:
            frac = min(1.0, step / cfg.anneal_steps)
            t_max = cfg.t_max + (cfg.t_max_end - cfg.t_max) * frac
        n = self.core.num_train_timesteps
        lo = int(cfg.t_min * n)
        hi = max(lo, int(t_max * n))
        return lo, min(hi, n - 1)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.core.default_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images

    def loss(self, images: torch.Tensor, prompts: list[str], step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Guidance loss for ``images`` (B, 3, H, W in [0, 1]) seen with ``prompts`` (one per image)."""
        cond, uncond = self.core.text_conditioning(prompts, self.cfg.negative_prompt)
        lo, hi = self.t_range(step)
        b = images.shape[0]
        t = torch.randint(lo, hi + 1, (b,), generator=generator).to(self.core.device)
        x = self._resize(images).to(self.core.device)
        if self.cfg.mode == "sds":
            return self._sds(x, t, cond, uncond, generator)
        return self._target(x, t, cond, uncond, generator)

    def _sds(self, x, t, cond, uncond, generator):
        core, cfg = self.core, self.cfg
        latents = core.encode_images(x)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        with torch.no_grad():
            noisy = core.add_noise(latents, noise, t)
            eps = core.predict_noise(noisy, t, cond, uncond, cfg.guidance_scale)
        w = (1 - core.alphas_cumprod[t]).reshape(-1, 1, 1, 1) if cfg.weighting == "sds" else 1.0
        grad = torch.nan_to_num(w * (eps - noise))
        if cfg.grad_clip is not None:
            grad = grad.clamp(-cfg.grad_clip, cfg.grad_clip)
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / latents.shape[0]
        return loss, {"t": t.float().mean().item(), "grad_norm": grad.norm().item()}

    def denoise_step_count(self, t: torch.Tensor) -> int:
        """DDIM steps for timesteps ``t``: ``denoise_steps``, or fewer with ``denoise_step_size``."""
        cfg = self.cfg
        if not cfg.denoise_step_size:
            return cfg.denoise_steps
        longest = float(t.max()) / self.core.num_train_timesteps
        return max(1, min(cfg.denoise_steps, math.ceil(longest / cfg.denoise_step_size - 1e-6)))

    @torch.no_grad()
    def denoised_target(self, x, t, cond, uncond, generator) -> torch.Tensor:
        """The multi-step DDIM denoising of ``x`` noised to ``t``: images in [0, 1]."""
        core, cfg = self.core, self.cfg
        latents = core.encode_images(x)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        z = core.add_noise(latents, noise, t)
        # DDIM (eta 0) from each image's own t down to 0 in n equal steps (its share of t each).
        n = self.denoise_step_count(t)
        fracs = torch.linspace(1.0, 0.0, n + 1, device=z.device)
        for i in range(n):
            t_now = (t.float() * fracs[i]).round().long()
            t_next = (t.float() * fracs[i + 1]).round().long()
            eps = core.predict_noise(z, t_now, cond, uncond, cfg.target_guidance_scale)
            x0 = core.predict_x0(z, eps, t_now)
            a_next = core.alphas_cumprod[t_next].reshape(-1, 1, 1, 1).to(z.dtype)
            a_next = torch.where((t_next > 0).reshape(-1, 1, 1, 1), a_next, torch.ones_like(a_next))
            z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return core.decode_latents(z).float()

    def _target(self, x, t, cond, uncond, generator):
        target = self.denoised_target(x.detach(), t, cond, uncond, generator)
        if self.cfg.match_size_above is not None:
            zoom = t >= self.cfg.match_size_above * self.core.num_train_timesteps
            if zoom.any():
                target = torch.where(zoom.reshape(-1, 1, 1, 1), match_silhouette_size(target, x.detach()), target)
        loss = F.mse_loss(x, target.to(x.dtype))  # mean over pixels: regulariser weights stay comparable
        return loss, {"t": t.float().mean().item()}
