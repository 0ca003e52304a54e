"""What every renderer takes and returns, so that a volume renderer, a rasteriser and a splatter
are interchangeable inside a system.

``renderer(cameras, shader=None, generator=None, normals=False, return_samples=False)`` renders a
:class:`~dream3d.cameras.Cameras` batch (``B`` cameras at ``H x W``) of the renderer's geometry,
coloured by ``shader`` (:mod:`.materials`; default the albedo) over its background, and returns a
:class:`RenderOutput`. ``generator`` feeds every random draw (jittered samples, random background
colours); in training mode a renderer may draw, in eval mode it must not need to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class RenderOutput:
    """Images of ``B`` cameras at ``H x W`` (world-space vectors, linear colours).

    - ``rgb (B, H, W, 3)``: the shaded object composited over the background;
    - ``opacity (B, H, W, 1)``: coverage in [0, 1];
    - ``depth (B, H, W, 1)``: z-depth (along each camera's optical axis) times the opacity (empty
      pixels give 0; divide by the opacity for the distance to the surface);
    - ``albedo (B, H, W, 3)``: the unshaded surface colour times the opacity (over black);
    - ``background (B, H, W, 3)``: the background colour behind each pixel;
    - ``normal (B, H, W, 3)`` or ``None``: unit surface normals times the opacity, when asked for
      (``normals=True``) or when the shader needs them;
    - ``samples``: what a renderer's regularisers need, when asked for (``return_samples=True``);
      a volume renderer gives the packed per-sample tensors ``weights``, ``ray_indices`` (into the
      flattened ``B * H * W`` rays), ``t_starts``, ``t_ends``, ``points``, ``view_dirs``,
      ``sigmas`` and ``normals``.
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    albedo: torch.Tensor
    background: torch.Tensor
    normal: torch.Tensor | None = None
    samples: dict[str, torch.Tensor | None] | None = None

    @property
    def images(self) -> torch.Tensor:
        """``rgb`` as ``(B, 3, H, W)``, what guidance takes."""
        return self.rgb.permute(0, 3, 1, 2)


class Renderer(nn.Module):
    """Base of renderers: holds the ``geometry`` it draws and the ``background`` behind it.

    Subclasses implement ``forward`` (module docstring). ``update(step, generator)`` runs once at
    the start of every training step (e.g. the volume renderer's occupancy grid) and may draw from
    the generator; ``param_groups()`` lists trainable parameters the renderer owns besides its
    geometry's and background's (none by default).
    """

    def __init__(self, geometry: nn.Module, background: nn.Module):
        super().__init__()
        self.geometry = geometry
        self.background = background

    def update(self, step: int, generator: torch.Generator) -> None:
        """Per-step hook (nothing by default)."""

    def param_groups(self) -> list[dict]:
        return []
