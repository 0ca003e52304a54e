"""What every geometry (the 3D representation being optimised) provides to systems and exporters.

A geometry is an ``nn.Module`` over the scene box ``[-bound, bound]^3`` (world frame, +Z up) with:

- ``param_groups() -> list[{"name": str, "params": [...]}]``: its trainable parameters in named
  groups; a system gives each group its own learning rate (``optim.lr_<name>``);
- ``update(step, generator)``: a per-step hook run before rendering (nothing by default);
- ``create_from(other, cfg)`` (class method): a new geometry initialised from another one, for
  coarse-to-fine runs (a mesh stage starting from a NeRF);
- ``export_mesh(resolution, threshold, keep_fraction, fill_cavities) -> (trimesh.Trimesh, info)``: the surface
  as a world-frame mesh with per-vertex colours (``visual.vertex_colors``, RGBA uint8) and a dict
  of facts about the extraction;
- ``describe() -> dict``: facts for a run's ``metrics.json`` (e.g. what computed the encoding).

Density geometries (rendered by :class:`~dream3d.renderers.volume.VolumeRenderer`) add
``density(x (N, 3)) -> sigma (N,)`` and ``forward(x (N, 3), normals=None | "analytic" |
"finite_difference") -> {"sigma": (N,), "albedo": (N, 3)[, "normal": (N, 3)]}``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


class Geometry(nn.Module):
    """Base class of geometries (module docstring)."""

    bound: float

    def param_groups(self) -> list[dict]:
        """Named parameter groups; by default one group ``"geometry"`` of all parameters."""
        return [{"name": "geometry", "params": list(self.parameters())}]

    def update(self, step: int, generator: torch.Generator) -> None:
        """Per-step hook (nothing by default)."""

    @classmethod
    def create_from(cls, other: Geometry, cfg) -> Geometry:
        raise UserError(f"{cls.__name__} cannot start from {type(other).__name__}; start this stage from scratch")

    def export_mesh(
        self, resolution: int = 128, threshold: float | str = "auto", keep_fraction: float = 0.1, fill_cavities=False
    ):
        raise NotImplementedError

    def describe(self) -> dict:
        return {}

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device
