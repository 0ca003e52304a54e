"""Differentiable marching tetrahedra: the zero level set of a per-vertex SDF on a tet grid -> a mesh.

Conventions:

- SDF negative inside: a grid vertex is inside iff ``sdf < 0`` (``sdf == 0`` counts as outside;
  the crossings of all the edges at such a vertex then coincide with it, which gives zero-area
  triangles: harmless, the mesh stays watertight and its gradients finite).
- An edge ``(a, b)`` crosses the surface iff exactly one end is inside. It gets ONE mesh vertex, at
  the zero of the SDF interpolated linearly along it,
  ``p = (p_a * s_b - p_b * s_a) / (s_b - s_a)`` (symmetric in ``a, b``; ``s_b - s_a != 0`` since the
  signs differ), so gradients reach both the positions ``p`` (deformed grid vertices) and the SDF
  ``s``. Tetrahedra that share the edge share the vertex: the mesh of a closed surface that stays
  inside the grid is watertight.
- Per tetrahedron the 4 inside bits give 16 cases (bit ``i`` = local vertex ``i`` inside): none or
  all inside -> nothing; one vertex on its own side -> 1 triangle on its 3 edges; two and two ->
  a quad on the 4 crossing edges, cut into 2 triangles. Within a tetrahedron the linearly
  interpolated SDF is affine, so all crossing points lie on its zero plane.
- Winding: counter-clockwise seen from outside, i.e. the face normal ``(q1 - q0) x (q2 - q0)``
  points towards increasing SDF. The case table (:data:`CASE_TRIANGLES`) is built once on the
  reference tetrahedron (origin and the 3 unit vectors, positive orientation) by checking each
  triangle's normal against the gradient of the affine SDF there; an affine map with positive
  determinant keeps that relation, so the table holds for every positively oriented tetrahedron
  (:func:`~dream3d.geometry.tetgrid.make_tet_grid` makes them all positive; a deformation that
  inverts a tetrahedron flips its triangles).
- Per step nothing is deduplicated: the grid's precomputed edge table (``edges``, ``tet_edges``)
  maps each tetrahedron's local edges to global edges, and crossing edges are numbered by a cumsum.

Returns :class:`TetSurface`: ``verts (M, 3)``, ``faces (F, 3)`` int64 and ``vertex_edges (M,)``
(the grid edge each vertex lies on, e.g. to look up a texture at the edge's ends).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import UserError
from .tetgrid import TET_EDGE_PAIRS, TetGrid


def _local_edge(i: int, j: int) -> int:
    return TET_EDGE_PAIRS.index((min(i, j), max(i, j)))


def _case_triangles() -> tuple[torch.Tensor, torch.Tensor]:
    """``(16, 2, 3)`` local edge indices of each case's triangles (unused rows 0) and ``(16,)``
    triangle counts; winding checked on the reference tetrahedron (module docstring)."""
    ref = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    table = torch.zeros(16, 2, 3, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [i for i in range(4) if code >> i & 1]
        outside = [i for i in range(4) if not code >> i & 1]
        if len(inside) in (1, 3):
            lone, rest = (inside, outside) if len(inside) == 1 else (outside, inside)
            tris = [[_local_edge(lone[0], r) for r in rest]]
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            quad = [_local_edge(a, c), _local_edge(a, d), _local_edge(b, d), _local_edge(b, c)]  # a cycle
            tris = [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
        else:
            continue
        s = torch.tensor([-1.0 if code >> i & 1 else 1.0 for i in range(4)])
        grad = s[1:] - s[0]  # gradient of the affine SDF on the reference tetrahedron
        mid = torch.stack([(ref[i] + ref[j]) / 2 for i, j in TET_EDGE_PAIRS])  # the crossings at s = -1, +1
        for k, tri in enumerate(tris):
            q = mid[tri]
            if torch.dot(torch.linalg.cross(q[1] - q[0], q[2] - q[0]), grad) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, k] = torch.tensor(tri)
        count[code] = len(tris)
    return table, count


CASE_TRIANGLES, CASE_COUNTS = _case_triangles()


class TetSurface(NamedTuple):
    """A marching-tetrahedra mesh: ``verts (M, 3)`` (differentiable), ``faces (F, 3)`` int64 and
    ``vertex_edges (M,)`` int64, the grid edge each vertex lies on."""

    verts: torch.Tensor
    faces: torch.Tensor
    vertex_edges: torch.Tensor


def marching_tets(grid: TetGrid, positions: torch.Tensor, sdf: torch.Tensor) -> TetSurface:
    """The mesh of ``{sdf = 0}`` on ``grid`` with vertex ``positions (V, 3)`` and ``sdf (V,)``
    (negative inside); outward winding (module docstring)."""
    num_vertices = grid.vertices.shape[0]
    if positions.shape != (num_vertices, 3) or sdf.shape != (num_vertices,):
        raise UserError(
            f"marching tets needs positions ({num_vertices}, 3) and sdf ({num_vertices},), "
            f"got {tuple(positions.shape)} and {tuple(sdf.shape)}"
        )
    device = positions.device
    inside = sdf.detach() < 0  # (V,)
    ends = inside[grid.edges]  # (E, 2)
    crossing = ends[:, 0] != ends[:, 1]  # (E,)
    vertex_edges = torch.nonzero(crossing).squeeze(1)  # (M,) crossing edges, in edge order
    # each crossing edge's vertex number (-1 elsewhere), without deduplicating anything
    edge_vertex = torch.cumsum(crossing, 0) - 1
    a, b = grid.edges[vertex_edges].unbind(-1)
    sa, sb = sdf[a].unsqueeze(-1), sdf[b].unsqueeze(-1)
    verts = (positions[a] * sb - positions[b] * sa) / (sb - sa)  # (M, 3)

    weights = torch.tensor([1, 2, 4, 8], device=device)
    code = (inside[grid.tets].long() * weights).sum(-1)  # (T,)
    active = torch.nonzero((code > 0) & (code < 15)).squeeze(1)  # tetrahedra the surface cuts
    code = code[active]
    table, counts = CASE_TRIANGLES.to(device), CASE_COUNTS.to(device)
    local = table[code].reshape(-1, 6)  # (A, 6): local edges of (up to) 2 triangles
    tri_vertices = edge_vertex[grid.tet_edges[active].gather(1, local)].reshape(-1, 2, 3)
    used = torch.arange(2, device=device)[None] < counts[code][:, None]  # (A, 2)
    faces = tri_vertices[used]  # (F, 3)
    return TetSurface(verts, faces, vertex_edges)
