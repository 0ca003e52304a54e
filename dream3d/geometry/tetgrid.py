"""A regular tetrahedral grid over the scene box, for DMTet (:mod:`.dmtet`, :mod:`.marching_tets`).

Construction (no Delaunay, nothing cached on disk; built in well under a second for ``n = 64``):

- The box ``[-bound, bound]^3`` is cut into ``n^3`` cubic cells of side ``h = 2 * bound / n``.
  Grid vertex ``(i, j, k)`` (``0 <= i, j, k <= n``) sits at ``-bound + h * (i, j, k)`` and has index
  ``(i * (n + 1) + j) * (n + 1) + k``, so ``vertices.reshape(n + 1, n + 1, n + 1, 3)`` is indexed
  ``[ix, iy, iz]`` like :func:`~dream3d.geometry.isosurface.grid_vertices` with ``R = n + 1``.
- Cell corner ``c`` (0..7) is offset by ``(c & 1, (c >> 1) & 1, (c >> 2) & 1)`` cells: corner 0 is
  the cell's lowest corner, corner 7 its highest.
- Each cell is split into 6 tetrahedra around its main diagonal from corner 0 to corner 7 (the
  Kuhn / Freudenthal split): one tetrahedron per order ``(a, b, c)`` of the three axes, the path
  ``0 -> e_a -> e_a + e_b -> e_a + e_b + e_c = 7`` along the cell's edges. Every cell uses the same
  diagonal direction, so on a face shared by two cells both sides cut the square along the same
  diagonal (from its lowest to its highest corner): the grid is conforming (each interior triangle
  is a face of exactly two tetrahedra) with no extra work.
- Vertex order within each tetrahedron is fixed so that its signed volume
  ``det(v1 - v0, v2 - v0, v3 - v0) / 6`` is positive (``h^3 / 6`` for every tetrahedron).

Counts: ``V = (n + 1)^3`` vertices, ``T = 6 n^3`` tetrahedra (``n = 16``: 4,913 / 24,576;
``n = 32``: 35,937 / 196,608), and ``E`` unique edges, the ``(n + 1)^3``-grid pairs that differ by
one of the 7 nonzero offsets in ``{0, 1}^3`` (the cell edges, the face diagonals and the main
diagonal all go from lower to higher corner).

Edge table (computed once per grid, for marching tetrahedra): ``edges (E, 2)`` with
``edges[:, 0] < edges[:, 1]``, sorted lexicographically, each undirected edge once, and
``tet_edges (T, 6)``: tetrahedron ``t``'s local edge ``m`` (vertex pair :data:`TET_EDGE_PAIRS`
``[m]``) is global edge ``tet_edges[t, m]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError

# The 6 edges of a tetrahedron (v0, v1, v2, v3) as pairs of local vertex indices; the local edge
# order that ``TetGrid.tet_edges`` and the marching-tetrahedra case table use.
TET_EDGE_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


@dataclass(frozen=True, eq=False)  # tensors: compared by identity
class TetGrid:
    """A tetrahedral grid and its edge table (module docstring).

    ``vertices (V, 3)`` float32 world coordinates, ``tets (T, 4)`` int64 (positive orientation),
    ``edges (E, 2)`` int64, ``tet_edges (T, 6)`` int64, ``n`` cells per axis, ``bound`` the box.
    """

    vertices: torch.Tensor
    tets: torch.Tensor
    edges: torch.Tensor
    tet_edges: torch.Tensor
    n: int
    bound: float

    @property
    def cell_size(self) -> float:
        """``h = 2 * bound / n``, the side of a cell in world units."""
        return 2.0 * self.bound / self.n

    def to(self, device) -> TetGrid:
        return TetGrid(
            self.vertices.to(device),
            self.tets.to(device),
            self.edges.to(device),
            self.tet_edges.to(device),
            self.n,
            self.bound,
        )


def cell_tets() -> np.ndarray:
    """The 6 tetrahedra of one cell as corner indices ``(6, 4)`` (module docstring), each with
    positive orientation."""
    out = []
    for a, b, _ in itertools.permutations(range(3)):
        tet = [0, 1 << a, (1 << a) | (1 << b), 7]
        corners = np.array([[(c >> axis) & 1 for axis in range(3)] for c in tet], dtype=np.float64)
        if np.linalg.det(corners[1:] - corners[0]) < 0:
            tet[2], tet[3] = tet[3], tet[2]  # an odd order of the axes: swap to turn it positive
        out.append(tet)
    return np.array(out, dtype=np.int64)


def signed_volumes(vertices: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """``det(v1 - v0, v2 - v0, v3 - v0) / 6`` per tetrahedron, ``(T,)``."""
    p = vertices[tets]  # (T, 4, 3)
    d = p[:, 1:] - p[:, :1]  # (T, 3, 3)
    return torch.linalg.cross(d[:, 0], d[:, 1]).mul(d[:, 2]).sum(-1) / 6.0


def edge_table(tets: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique undirected edges ``(E, 2)`` (smaller index first, sorted) and ``tet_edges (T, 6)``
    (indices into them, local edge order :data:`TET_EDGE_PAIRS`)."""
    pairs = tets[:, torch.tensor(TET_EDGE_PAIRS, device=tets.device)]  # (T, 6, 2)
    lo, hi = pairs.min(-1).values, pairs.max(-1).values
    keys, inverse = torch.unique((lo * num_vertices + hi).reshape(-1), return_inverse=True)
    edges = torch.stack([keys // num_vertices, keys % num_vertices], -1)
    return edges, inverse.reshape(-1, 6)


def make_tet_grid(n: int, bound: float = 1.0, device=None) -> TetGrid:
    """The Kuhn tetrahedral grid of ``n^3`` cells over ``[-bound, bound]^3`` (module docstring)."""
    if n < 1:
        raise UserError(f"tet grid resolution {n} must be >= 1")
    if not bound > 0:
        raise UserError(f"tet grid bound {bound} must be > 0")
    m = n + 1
    t = torch.linspace(-bound, bound, m, dtype=torch.float64)
    vertices = torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3).float()
    i = torch.arange(n)
    ix, iy, iz = torch.meshgrid(i, i, i, indexing="ij")
    base = ((ix * m + iy) * m + iz).reshape(-1)  # (n^3,) index of each cell's corner 0
    corner_offset = torch.tensor([(c & 1) * m * m + ((c >> 1) & 1) * m + ((c >> 2) & 1) for c in range(8)])
    local = corner_offset[torch.from_numpy(cell_tets())]  # (6, 4) vertex-index offsets
    tets = (base[:, None, None] + local[None]).reshape(-1, 4)
    edges, tet_edges = edge_table(tets, vertices.shape[0])
    return TetGrid(vertices, tets, edges, tet_edges, n, float(bound)).to(device)
