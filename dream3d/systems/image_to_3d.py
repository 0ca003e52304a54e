"""Image to 3D as Zero-1-to-3 and threestudio's ``zero123`` system run it: DreamFusion's parts,
a view-conditioned prior's score distillation on random views, and the input's reference view.

The system is :class:`~dream3d.systems.dreamfusion.DreamFusion` (the same geometry, renderer,
material, background, regularisers, optimizers, validation and export) with two changes:

- its guidance is :class:`~dream3d.guidance.zero123.Zero123Guidance`, conditioned once on the
  input image and its camera; each random view's camera enters relative to the input's;
- each step also renders the input's camera (:mod:`.reference`) and adds the reference loss
  terms (RGB, mask, optionally depth), with their weights from ``reference:``.

One training step: DreamFusion's steps 1-6 (hooks, random cameras, material, render, guidance,
regularisers), then the reference render (shaded as ``reference.shading`` says) and its terms.
Every random draw comes from the trainer's generator, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import Camera, Cameras
from ..grid import make_grid
from ..guidance.zero123 import Zero123Config
from ..trainer import StepOutput
from .base import weighted_sum
from .dreamfusion import VALIDATION_AZIMUTHS, DreamFusion, DreamFusionConfig
from .reference import ReferenceConfig, ReferenceView, reference_terms


@dataclass
class ImageTo3DConfig(DreamFusionConfig):
    """DreamFusion's parts with Zero-1-to-3 guidance, and the reference view."""

    guidance: Zero123Config = field(default_factory=Zero123Config)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)


class ImageTo3D(DreamFusion):
    """Image to 3D (module docstring): ``reference`` is the input's reference view, ``condition``
    the image (B=1, 3, H, W) in [0, 1] that conditions the view prior ``core``."""

    progress_keys = ("loss", "ref_rgb", "ref_mask")

    def __init__(
        self,
        cfg: ImageTo3DConfig,
        reference: ReferenceView,
        condition: torch.Tensor,
        core,
        device: torch.device,
        seed: int = 0,
    ):
        super().__init__(cfg, "", core, device, seed)
        self.reference = reference.to(self.device)
        self.guidance.set_reference(condition, reference.camera)

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        terms, logs = self.guided_terms(step, generator)
        ref_terms, ref_logs = self.reference_terms(generator)
        return StepOutput(weighted_sum(terms + ref_terms), {**logs, **ref_logs})

    def render_reference(self, generator: torch.Generator | None = None):
        """The render of the input's camera, shaded as the input is (``reference.shading``)."""
        ref = self.reference
        shader = ref.shader(self.cfg.material, self.cfg.reference.shading, self.device)
        return self.renderer(ref.cameras(), shader=shader, generator=generator)

    def reference_terms(self, generator: torch.Generator) -> tuple[list[tuple[float, torch.Tensor]], dict]:
        """The reference view's weighted loss terms and logs (:func:`~.reference.reference_terms`)."""
        return reference_terms(self.render_reference(generator), self.reference, self.cfg.reference)

    def validation_cameras(self) -> Cameras:
        """Four views at the input's elevation, distance and field of view, the first the input's."""
        r, s = self.cfg.reference, self.cfg.val_size
        return Cameras.stack(
            [Camera(r.elevation_deg, r.azimuth_deg + a, r.distance, r.fov_deg, s, s) for a in VALIDATION_AZIMUTHS]
        )

    @torch.no_grad()
    def validation_image(self, step: int) -> np.ndarray:
        """A first row with the input, its render (shaded as the input), the render's opacity and the
        mask, then DreamFusion's RGB | normal | opacity rows of four views from the input's azimuth."""
        self.renderer.eval()
        out = self.render_reference()
        ref, s = self.reference, self.cfg.val_size

        def tile(x: torch.Tensor) -> torch.Tensor:  # (1, H, W, C) -> (1, s, s, 3)
            x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float().cpu(), size=(s, s), mode="nearest")
            return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1) if x.shape[1] == 1 else x.permute(0, 2, 3, 1)

        given = ref.rgb * ref.mask + (1 - ref.mask)  # on white
        first = torch.cat([tile(given), tile(out.rgb.clamp(0, 1)), tile(out.opacity), tile(ref.mask)])
        return make_grid(torch.cat([first, self.validation_tiles()]), cols=len(VALIDATION_AZIMUTHS))
