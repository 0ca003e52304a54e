"""Regularisers of a NeRF under score distillation (DreamFusion / threestudio).

- :func:`orientation_loss` (Ref-NeRF, used by DreamFusion): penalises visible samples whose
  normals face away from the camera, ``sum_i w_i * max(0, n_i . d)^2`` per ray (d: ray direction).
- :func:`sparsity_loss`: mean accumulated opacity (discourages fog filling the box).
- :func:`opacity_entropy_loss`: binary entropy of the opacity, pushing every pixel towards fully
  empty or fully opaque (crisp silhouettes, hard surfaces).
"""

from __future__ import annotations

import torch


def orientation_loss(
    weights: torch.Tensor, normals: torch.Tensor, directions: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """Mean over rays of sum_i w_i max(0, n_i . d)^2 for packed samples."""
    facing_away = (normals * directions).sum(-1).clamp(min=0.0) ** 2
    per_ray = torch.zeros(n_rays, device=weights.device, dtype=weights.dtype).index_add(
        0, ray_indices, weights.detach() * facing_away
    )
    return per_ray.mean()


def sparsity_loss(opacity: torch.Tensor) -> torch.Tensor:
    return opacity.mean()


def opacity_entropy_loss(opacity: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    o = opacity.clamp(eps, 1 - eps)
    return (-(o * torch.log(o) + (1 - o) * torch.log(1 - o))).mean()
