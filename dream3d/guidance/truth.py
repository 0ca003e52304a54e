"""The true-render guidance: a diagnostic that replaces the prior by the shapes world's exact renders.

``guidance: {kind: truth}``, for shapes-world prompts only ("a <colour> <shape>"). Each render is
pulled towards the exact render of the prompt's true object (at the origin, unrotated, unit scale)
from the same camera, shaded as the prior's training images are (headlight Lambertian on white,
:func:`dream3d.shapes.render.render`, ``supersample`` x supersampled), by a mean-squared error in
pixel space (loss term ``truth``).

What it answers: how far a system's geometry, renderer, regularisers and optimiser can get when the
2D signal is exact, i.e. which part of a result's error comes from the prior and which from the
rest (``docs/benchmarks.md``, the fine stage on true renders). Set ``material.albedo_prob=0``
beside it, since the true renders are always shaded. It is a yardstick, not a recipe: the model
is not used (it is still loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..cameras import Camera, Cameras
from ..errors import UserError
from .base import Guidance, GuidanceConfigBase, GuidanceOutput


@dataclass(frozen=True)
class TruthConfig(GuidanceConfigBase):
    kind: Literal["truth"] = "truth"
    supersample: int = 4  # the true renders' supersampling factor

    def __post_init__(self):
        super().__post_init__()
        if self.supersample < 1:
            raise UserError(f"guidance.supersample {self.supersample} must be >= 1")


class TruthGuidance(Guidance):
    """MSE to the true object's render from each camera (module docstring)."""

    def __init__(self, core, cfg: TruthConfig, prompt: str):
        super().__init__(core, cfg, prompt)
        from ..shapes.objects import parse_prompt  # noqa: PLC0415 - the shapes world only for this diagnostic

        if parse_prompt(prompt) is None:
            raise UserError(f"guidance.kind=truth needs a shapes-world prompt such as 'a red cube', not '{prompt}'")

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        from ..shapes.render import render  # noqa: PLC0415 - open3d, ~0.6 s to import

        truths = []
        for i in range(len(cameras)):
            camera = Camera(
                float(cameras.elevation_deg[i]),
                float(cameras.azimuth_deg[i]),
                float(cameras.distance[i]),
                float(cameras.fov_deg[i]),
                images.shape[-2],
                images.shape[-1],
            )
            rgb = render(self.prompt, camera, ss=self.cfg.supersample).rgb
            truths.append(torch.from_numpy(rgb).permute(2, 0, 1))
        truth = torch.stack(truths).to(images)
        return GuidanceOutput({"truth": F.mse_loss(images, truth)})
