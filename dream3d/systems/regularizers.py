"""Regularisers of a NeRF under score distillation (DreamFusion / threestudio).

- :func:`orientation_loss` (Ref-NeRF, used by DreamFusion): penalises visible samples whose
  normals face away from the camera, ``sum_i w_i * max(0, n_i . d)^2`` per ray (d: ray direction).
- :func:`sparsity_loss`: mean accumulated opacity (discourages fog filling the box).
- :func:`opacity_entropy_loss`: binary entropy of the opacity, pushing every pixel towards fully
  empty or fully opaque (crisp silhouettes, hard surfaces).

Of a mesh (Magic3D's fine stage; the mesh renderer's ``samples``: ``verts (V, 3)``, ``faces (F, 3)``):

- :func:`normal_consistency_loss`: ``mean over interior edges of 1 - cos(n_a, n_b)``, the faces
  ``a``, ``b`` on either side (smooth surfaces, no folds; flat regions cost nothing, so a cube's
  faces stay flat and only its edges pay);
- :func:`laplacian_loss`: ``mean over vertices of |mean of the neighbours - v|^2`` (the uniform
  Laplacian; even triangles).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


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


def unique_edges(faces: torch.Tensor) -> torch.Tensor:
    """The undirected edges ``(E, 2)`` of a triangle mesh, each once (smaller vertex first)."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).sort(dim=1).values
    return torch.unique(e, dim=0)


def face_pairs(faces: torch.Tensor) -> torch.Tensor:
    """``(P, 2)`` indices of the two faces on either side of every edge that exactly two faces share."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).sort(dim=1).values
    key = e[:, 0] * (int(faces.max()) + 1 if faces.numel() else 1) + e[:, 1]
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = (torch.cumsum(counts, 0) - counts)[counts == 2]
    return torch.stack([order[starts] // 3, order[starts + 1] // 3], -1)


def normal_consistency_loss(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos)`` of the unit normals of face pairs across shared edges (module docstring)."""
    tri = verts[faces]
    n = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1)
    pairs = face_pairs(faces)
    if pairs.numel() == 0:
        return verts.sum() * 0.0
    return (1.0 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_loss(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``mean |mean of the neighbours - v|^2`` over vertices with neighbours (module docstring)."""
    edges = unique_edges(faces)
    if edges.numel() == 0:
        return verts.sum() * 0.0
    a, b = edges[:, 0], edges[:, 1]
    total = torch.zeros_like(verts).index_add(0, a, verts[b]).index_add(0, b, verts[a])
    degree = torch.zeros(len(verts), device=verts.device, dtype=verts.dtype)
    degree = degree.index_add(0, a, torch.ones_like(a, dtype=verts.dtype)).index_add(
        0, b, torch.ones_like(b, dtype=verts.dtype)
    )
    used = degree > 0
    delta = total[used] / degree[used, None] - verts[used]
    return delta.pow(2).sum(-1).mean()
