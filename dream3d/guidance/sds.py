"""Score distillation sampling (DreamFusion's SDS), as DreamFusion and threestudio run it.

``guidance: {kind: sds}``. For renders ``x`` (B, 3, H, W) in [0, 1]: encode them with the VAE
(with gradients) to latents ``z``, draw ``t ~ U[t_min, t_max]`` (annealed, :mod:`.base`) and noise
``eps``, predict ``eps_hat`` with classifier-free guidance
(:meth:`~dream3d.diffusion.core.LatentDiffusion.predict_noise`, diffusers' CFG convention
``uncond + s * (cond - uncond)``), and use the gradient

    g = w(t) * (eps_hat - eps)        w(t) = 1 - abar_t ("sds", DreamFusion) or 1 ("uniform")

on the latents, optionally clipped elementwise to ``[-grad_clip, grad_clip]``. It is applied as
the loss ``0.5 * ||z - stopgrad(z - g)||^2 / B``, whose gradient w.r.t. ``z`` is exactly ``g``
(loss term ``sds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from ..errors import UserError
from .base import Guidance, GuidanceConfigBase, GuidanceOutput


@dataclass(frozen=True)
class SDSConfig(GuidanceConfigBase):
    kind: Literal["sds"] = "sds"
    guidance_scale: float = 100.0  # diffusers' convention: uncond + s * (cond - uncond)
    guidance_rescale: float = 0.0  # diffusers' guidance_rescale (core.cfg_rescale); 0: textbook SDS
    weighting: Literal["sds", "uniform"] = "sds"
    grad_clip: float | None = None  # clip the latent gradient elementwise to [-c, c]

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.guidance_rescale <= 1:
            raise UserError(
                f"guidance.guidance_rescale {self.guidance_rescale} must be in [0, 1] (0: off; 0.7: Lin et al.)"
            )


class SDSGuidance(Guidance):
    """Score distillation (module docstring)."""

    cfg: SDSConfig

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        core, cfg = self.core, self.cfg
        cond, uncond = core.text_conditioning(self.prompts(cameras), cfg.negative_prompt)
        latents, t, noise, noisy = self.noised_latents(images, step, generator)
        with torch.no_grad():
            eps = core.predict_noise(
                noisy, t, cond, uncond, cfg.guidance_scale, self.camera_input(cameras), cfg.guidance_rescale
            )
        grad = latent_gradient(core, t, eps - noise, cfg.weighting, cfg.grad_clip)
        return GuidanceOutput(
            {"sds": gradient_loss(latents, grad)}, {"t": t.float().mean().item(), "grad_norm": grad.norm().item()}
        )


def latent_gradient(core, t: torch.Tensor, residual: torch.Tensor, weighting: str, clip: float | None) -> torch.Tensor:
    """``w(t) * residual`` (``w = 1 - abar_t`` for ``"sds"``, 1 for ``"uniform"``), NaNs zeroed,
    clipped elementwise to ``[-clip, clip]`` (``None``: not clipped)."""
    w = (1 - core.alphas_cumprod[t]).reshape(-1, 1, 1, 1) if weighting == "sds" else 1.0
    grad = torch.nan_to_num(w * residual)
    return grad if clip is None else grad.clamp(-clip, clip)


def gradient_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 * ||z - stopgrad(z - g)||^2 / B``: its gradient with respect to ``latents`` is ``grad``
    (per image of the batch)."""
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents, target, reduction="sum") / latents.shape[0]
