"""Zero-1-to-3 guidance: score distillation from a view-conditioned prior, for image to 3D.

``guidance: {kind: zero123}``, on a :class:`~dream3d.diffusion.zero123.ViewDiffusion` core (the
public Zero-1-to-3 / Stable Zero123 checkpoints in diffusers' layout, or the bundled ``shapes-view``
prior). :meth:`Zero123Guidance.set_reference` takes the input image (framed as the model expects,
composited on white) and its camera once: the CLIP image embedding and the VAE posterior's mode of
the image (unscaled) are computed there and kept. Then for renders ``x`` (B, 3, H, W) in [0, 1]
from cameras ``c``:

1. the relative camera of each render, *target minus reference*: elevation, azimuth and distance
   differences, encoded as Zero-1-to-3 does (:func:`~dream3d.diffusion.zero123.encode_relative_camera`:
   ``[d_polar (rad), sin d_azimuth, cos d_azimuth, d_distance]``, or Stable Zero123's variant with
   the reference's absolute polar angle last; ``variant: auto`` takes the model's own);
2. the conditioning: ``cc_projection([image embedding, camera])`` as the UNet's cross-attention
   states and the image latents concatenated to the noisy latents; the unconditional branch zeroes
   both (:meth:`~dream3d.diffusion.zero123.ViewDiffusion.predict_noise`);
3. score distillation as :mod:`.sds` does it, with its helpers: encode ``x`` (with gradients), draw
   ``t`` in the annealed range and noise, predict ``eps_hat`` with CFG ``guidance_scale`` (3.0, as
   threestudio's zero123 config), and apply ``g = w(t) (eps_hat - eps)`` on the latents as the loss
   term ``sds`` (:func:`~.sds.latent_gradient`, :func:`~.sds.gradient_loss`).

With ``loss: target`` step 3 is instead the denoised target of :mod:`.denoised_target` (as
DreamGaussian refines with Zero-1-to-3): ``x`` (no gradient) is encoded, noised to ``t``, denoised
by DDIM with the same CFG in ``denoise_steps`` steps (:func:`~.denoised_target.denoise_images`) and
decoded, and the loss term ``target`` is the mean squared error between ``x`` and that image (a
mean over pixels, so the reference view's weights are on its scale, not SDS's).

Every draw (t, noise) comes from the run's generator, in the order of :meth:`~.base.Guidance.noised_latents`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..cameras import Camera, Cameras
from ..diffusion.zero123 import encode_relative_camera, project_camera
from ..errors import UserError
from .base import Guidance, GuidanceOutput
from .denoised_target import check_denoise_steps, denoise_images, denoise_step_count
from .sds import SDSConfig, gradient_loss, latent_gradient


@dataclass(frozen=True)
class Zero123Config(SDSConfig):
    """SDS's settings (the same gradient and weighting, :mod:`.sds`) on a view-conditioned prior."""

    kind: Literal["zero123"] = "zero123"
    guidance_scale: float = 3.0  # diffusers' convention; threestudio's zero123 config uses 3.0
    variant: Literal["auto", "zero123", "stable-zero123"] = "auto"  # the camera encoding; auto: the model's
    loss: Literal["sds", "target"] = "sds"  # target: MSE to the prior's DDIM denoising of the render (docstring)
    denoise_steps: int = 8  # loss target: DDIM steps from t to 0 (at most, with denoise_step_size)
    denoise_step_size: float | None = None  # loss target: longest DDIM step (fraction of T)

    def __post_init__(self):
        super().__post_init__()
        check_denoise_steps(self.denoise_steps, self.denoise_step_size)


class Zero123Guidance(Guidance):
    """Zero-1-to-3 score distillation (module docstring). ``prompt`` is unused (the image conditions)."""

    cfg: Zero123Config

    def __init__(self, core, cfg: Zero123Config, prompt: str = ""):
        super().__init__(core, cfg, prompt)
        if not hasattr(core, "image_conditioning"):
            raise UserError(
                f"guidance.kind=zero123 needs a view-conditioned model (Zero-1-to-3 layout), not the text-to-image "
                f"model '{getattr(core, 'source', '?')}'; use dream3d img2mesh with --model shapes-view or a "
                f"Zero-1-to-3 model"
            )
        self.reference: Camera | None = None
        self._embedding: torch.Tensor | None = None
        self._latents: torch.Tensor | None = None

    @property
    def variant(self) -> str:
        return self.core.variant if self.cfg.variant == "auto" else self.cfg.variant

    @torch.no_grad()
    def set_reference(self, image: torch.Tensor, camera: Camera) -> None:
        """Condition on ``image`` (1, 3, H, W) in [0, 1] (framed, on white) seen from ``camera``:
        its CLIP image embedding and its latents are computed here, once."""
        self.reference = camera
        self._embedding = self.core.image_embeddings(image)
        self._latents = self.core.conditioning_latents(image)

    def relative_cameras(self, cameras: Cameras) -> torch.Tensor:
        """Zero-1-to-3's camera rows ``(B, 4)`` of ``cameras`` relative to the reference camera."""
        ref = self.reference
        return encode_relative_camera(
            cameras.elevation_deg.cpu() - ref.elevation_deg,
            cameras.azimuth_deg.cpu() - ref.azimuth_deg,
            cameras.distance.cpu() - ref.distance,
            cond_elevation_deg=ref.elevation_deg,
            variant=self.variant,
        )

    def conditioning(self, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings (B, 1, D), image latents (B, C, h, w))`` of the reference for ``cameras``:
        ``cc_projection`` of the kept image embedding next to each relative camera."""
        if self._embedding is None:
            raise UserError("zero123 guidance needs an input image; run it through dream3d img2mesh IMAGE")
        camera = self.relative_cameras(cameras).to(self.core.device)
        n = len(camera)
        embeddings = project_camera(self.core.cc_projection, self._embedding.expand(n, -1), camera)
        return embeddings, self._latents.expand(n, -1, -1, -1)

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        core, cfg = self.core, self.cfg
        cond = self.conditioning(cameras)
        if cfg.loss == "target":
            return self.target_loss(images, cond, step, generator)
        latents, t, noise, noisy = self.noised_latents(images, step, generator)
        with torch.no_grad():
            eps = core.predict_noise(noisy, t, cond, cfg.guidance_scale, cfg.guidance_rescale)
        grad = latent_gradient(core, t, eps - noise, cfg.weighting, cfg.grad_clip)
        return GuidanceOutput(
            {"sds": gradient_loss(latents, grad)}, {"t": t.float().mean().item(), "grad_norm": grad.norm().item()}
        )

    def target_loss(self, images: torch.Tensor, cond, step: int, generator: torch.Generator) -> GuidanceOutput:
        """``loss: target``: the renders against their DDIM denoising from ``t`` (module docstring)."""
        core, cfg = self.core, self.cfg
        t = self.sample_timesteps(images.shape[0], step, generator)
        x = self.resize(images)
        steps = denoise_step_count(t, core.num_train_timesteps, cfg.denoise_steps, cfg.denoise_step_size)

        def predict_eps(z, t_now):
            return core.predict_noise(z, t_now, cond, cfg.guidance_scale, cfg.guidance_rescale)

        target = denoise_images(core, x, t, steps, predict_eps, generator)
        loss = F.mse_loss(x, target.to(x.dtype))
        return GuidanceOutput({"target": loss}, {"t": t.float().mean().item()})
