"""A density field -> a mesh: marching cubes at an iso level that matches the renders, with vertex colours.

1. Density on the vertices of a regular ``R^3`` grid over the box (:func:`density_grid`).
2. Iso level (``threshold="auto"``, :func:`auto_threshold`): the level whose solid best matches
   what the volume renderer shows. Along the 3 axes, each grid line is a ray (orthographic views,
   ``3 R^2`` rays); its rendered opacity is ``O = 1 - exp(-sum sigma * h)`` (``h`` the grid spacing)
   and the solid ``{sigma > tau}`` covers it iff ``M = max sigma along it > tau``. ``tau`` minimises
   ``sum |[M > tau] - O|`` (exact, by sorting ``M``; the level is placed half-way, in log space,
   between the two ``M`` values it separates). Why: it needs no knowledge of the density's scale
   or activation (softplus vs exp fields differ by orders of magnitude), it ignores faint haze
   (rays with ``O < 0.5`` prefer to stay outside) and it keeps soft-but-visible parts (``O > 0.5``),
   i.e. the mesh's silhouettes agree with the renders'. A float ``threshold`` is used as given.
   If no ray is more than half opaque the field is empty and a ``UserError`` says so.
3. ``mcubes.marching_cubes`` at that level; vertices mapped back to world coordinates; faces
   oriented outwards (positive signed volume). With ``fill_cavities``, grid points below the level
   that the solid encloses (no 6-connected path of them reaches the box's faces, once holes in it
   are sealed by a morphological closing with a 3x3x3 cube, :data:`SEAL_ITERATIONS` = 3 times)
   count as solid first: a field that fits a thin dense shell to sharp silhouettes (image to 3D's reference view)
   renders as a solid object, but its iso surface would be a hollow shell; enclosed cavities are
   invisible in every render, so filling them changes no view.
4. Floaters: connected components with fewer than ``keep_fraction`` of the largest component's
   faces are dropped (``trimesh.Trimesh.split``).
5. Vertex colours (RGBA uint8): the albedo the renderer shows there, seen head-on
   (:func:`rendered_vertex_colours`): the albedo volume-rendered along a short ray through the
   vertex along its inward normal, from ``colour_depth`` outside to ``colour_depth`` inside
   (``colour_depth`` 3 grid cells by default). Why not the albedo *at* the vertex: the iso level
   is a shell of the density, and where a field's surface is soft the shell lies in the faint outer
   layer, whose albedo is whatever the renders never see through (often near the background's
   white: an orange cone rendered orange exported yellow). ``colour_depth=0`` takes the albedo at
   the vertex.
"""

from __future__ import annotations

import math

import mcubes
import numpy as np
import torch
import trimesh

from ..errors import UserError

# fill_cavities: a closing with a 3x3x3 cube this many times (a cube of this radius in grid cells) seals
# a shell's holes first; a 2-iteration closing with the 6-neighbour cross left three image-to-3D spheres
# hollow (docs/img2mesh.md)
SEAL_ITERATIONS = 3


def grid_vertices(bound: float, resolution: int, device=None) -> torch.Tensor:
    """``(R, R, R, 3)`` world coordinates of the vertices of the regular grid over the box."""
    t = torch.linspace(-bound, bound, resolution, device=device)
    return torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1)


@torch.no_grad()
def density_grid(density_fn, bound: float, resolution: int = 128, chunk: int = 65536, device=None) -> torch.Tensor:
    """Evaluate ``density_fn`` on :func:`grid_vertices` in chunks; returns ``(R, R, R)`` float32."""
    if resolution < 2:
        raise UserError(f"density grid resolution {resolution} must be >= 2")
    pts = grid_vertices(bound, resolution, device).reshape(-1, 3)
    out = torch.cat([density_fn(p).float() for p in pts.split(chunk)])
    return out.reshape(resolution, resolution, resolution)


def auto_threshold(grid: torch.Tensor | np.ndarray, bound: float) -> float:
    """The opacity-matched iso level of a vertex density grid ``(R, R, R)`` over ``[-bound, bound]^3``
    (module docstring, step 2)."""
    g = torch.as_tensor(grid, dtype=torch.float64).clamp(min=0)
    if g.ndim != 3 or min(g.shape) < 2:
        raise UserError(f"density grid must be (R, R, R) with R >= 2, got {tuple(g.shape)}")
    h = 2.0 * bound / (g.shape[0] - 1)
    opac = torch.cat([(1.0 - torch.exp(-g.sum(a) * h)).reshape(-1) for a in range(3)])
    peak = torch.cat([g.amax(a).reshape(-1) for a in range(3)])
    order = torch.argsort(peak, descending=True)
    peak, opac = peak[order], opac[order]
    gain = torch.cumsum(1.0 - 2.0 * opac, 0)  # cost change of covering the top-k rays
    k = int(torch.argmin(gain)) + 1  # cover rays 0..k-1
    if float(gain[k - 1]) >= 0.0 or float(peak[k - 1]) <= 0.0:
        raise UserError(
            "the field is empty (no ray is more than half opaque), so there is no mesh to "
            "extract; train longer or pass an explicit threshold"
        )
    hi = float(peak[k - 1])
    lo = float(peak[k]) if k < peak.numel() else 0.0
    # the level sits strictly between the two peaks it separates
    if lo <= 0.0:
        return hi * 0.5
    return math.sqrt(hi * lo) if hi > lo else hi * (1.0 - 1e-6)


@torch.no_grad()
def extract_mesh(
    field,
    resolution: int = 128,
    threshold: float | str = "auto",
    keep_fraction: float = 0.1,
    chunk: int = 65536,
    grid: torch.Tensor | None = None,
    colour_depth: float | None = None,
    colour_samples: int = 24,
    fill_cavities: bool = False,
):
    """Marching-cubes mesh of ``field`` (``bound``, ``density(x)``, ``field(x)["albedo"]``) in WORLD
    coordinates (+Z up) with vertex colours (module docstring; ``fill_cavities``: step 3).

    Returns ``(mesh, info)``: a ``trimesh.Trimesh`` and ``{"threshold", "resolution",
    "components_total", "components_kept", "faces", "vertices", "colour_depth"}``. ``colour_depth``
    (world units; default 3 grid cells) and ``colour_samples``: :func:`rendered_vertex_colours`.
    """
    bound = float(field.bound)
    device = next(iter(field.parameters()), torch.empty(0)).device
    if grid is None:
        grid = density_grid(field.density, bound, resolution, chunk, device)
    grid = grid.detach().float().cpu()
    resolution = grid.shape[0]
    level = auto_threshold(grid, bound) if threshold == "auto" else float(threshold)
    vol = grid.numpy().astype(np.float64)
    if not (vol.max() > level):
        raise UserError(f"no density above the iso level {level:.4g} (max {vol.max():.4g}); lower the threshold")
    filled = 0
    if fill_cavities:
        from scipy.ndimage import binary_closing, binary_fill_holes  # noqa: PLC0415 - deferred: only this option needs it

        solid = vol > level
        sealed = binary_closing(solid, structure=np.ones((3, 3, 3), bool), iterations=SEAL_ITERATIONS)
        cavity = binary_fill_holes(sealed) & ~solid  # what the sealed shell encloses, and the seals
        vol = np.where(cavity, 2.0 * level + 1.0, vol)
        filled = int(cavity.sum())
    verts, faces = mcubes.marching_cubes(vol, level)
    if len(faces) == 0:
        raise UserError(f"marching cubes found no surface at level {level:.4g}; pass another threshold")
    verts = verts * (2.0 * bound / (resolution - 1)) - bound
    mesh, total, kept = drop_floaters(verts, faces.astype(np.int64), keep_fraction)
    if colour_depth is None:
        colour_depth = 3.0 * 2.0 * bound / (resolution - 1)
    mesh = with_vertex_colours(mesh, rendered_vertex_colours(field, mesh, colour_depth, colour_samples, chunk))
    info = {
        "threshold": level,
        "resolution": resolution,
        "components_total": total,
        "components_kept": kept,
        "faces": int(len(mesh.faces)),
        "vertices": int(len(mesh.vertices)),
        "colour_depth": float(colour_depth),
        **({"cavity_points_filled": filled} if fill_cavities else {}),
    }
    return mesh, info


def drop_floaters(verts, faces, keep_fraction: float) -> tuple[trimesh.Trimesh, int, int]:
    """A mesh of ``verts (N, 3)`` and ``faces (F, 3)`` without the connected components that have
    fewer than ``keep_fraction`` of the largest one's faces, turned outwards (positive signed
    volume); also returns the numbers of components found and kept."""
    mesh = trimesh.Trimesh(verts, faces, process=False)
    parts = mesh.split(only_watertight=False)
    total = kept = len(parts)
    if total > 1:
        sizes = np.array([len(p.faces) for p in parts])
        keep = [p for p, s in zip(parts, sizes) if s >= keep_fraction * sizes.max()]
        kept = len(keep)
        mesh = trimesh.util.concatenate(keep)
    if mesh.volume < 0:
        mesh.invert()
    return mesh, total, kept


def with_vertex_colours(mesh: trimesh.Trimesh, rgb: torch.Tensor) -> trimesh.Trimesh:
    """``mesh`` with vertex colours ``rgb (V, 3)`` in [0, 1] stored as RGBA uint8 (opaque)."""
    rgb = rgb.detach().float().clamp(0, 1).cpu().numpy()
    rgba = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=rgba, process=False)


@torch.no_grad()
def rendered_vertex_colours(
    field, mesh: trimesh.Trimesh, depth: float, samples: int = 24, chunk: int = 65536
) -> torch.Tensor:
    """``(V, 3)`` colours of ``mesh``'s vertices as the volume renderer shows them (module docstring,
    step 5; :func:`rendered_colours` at the vertices along their outward normals), on the CPU."""
    device = next(iter(field.parameters()), torch.empty(0)).device
    verts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    normals = torch.as_tensor(np.array(mesh.vertex_normals), dtype=torch.float32, device=device)
    return rendered_colours(field, verts, normals, depth, samples, chunk).cpu()


@torch.no_grad()
def rendered_colours(
    field, points: torch.Tensor, normals: torch.Tensor, depth: float, samples: int = 24, chunk: int = 65536
) -> torch.Tensor:
    """``(N, 3)`` colours of a density ``field`` at surface ``points (N, 3)`` seen head-on, along
    their outward ``normals (N, 3)``: along ``x(s) = p - s n`` (``s`` from ``-depth`` to ``depth``
    in ``samples`` steps of ``h``), ``alpha_i = 1 - exp(-sigma_i h)``, ``w_i = alpha_i prod_{j<i}
    (1 - alpha_j)`` (no density outside the box) and the colour ``sum w_i albedo_i / sum w_i``. Where
    the ray sees (almost) nothing (``sum w_i < 1e-4``) the albedo at the point is used;
    ``depth=0``: always."""
    at_point = torch.cat([field(p)["albedo"].float() for p in points.split(chunk)])
    if depth <= 0:
        return at_point.clamp(0, 1)
    s = torch.linspace(-depth, depth, samples, device=points.device)  # outside (-) to inside (+)
    h = 2.0 * depth / (samples - 1)
    colours, weights = [], []
    per_chunk = max(1, chunk // samples)
    for v, n in zip(points.split(per_chunk), normals.split(per_chunk)):
        pts = (v[:, None] - s[None, :, None] * n[:, None]).reshape(-1, 3)
        out = field(pts)
        inside = (pts.abs() <= field.bound).all(-1)  # the renderers see nothing outside the box
        sigma = torch.where(inside, out["sigma"].float(), 0.0).reshape(len(v), samples)
        albedo = out["albedo"].float().reshape(len(v), samples, 3)
        alpha = 1.0 - torch.exp(-sigma.clamp(min=0) * h)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], 1), 1)
        w = alpha * trans
        colours.append((w[..., None] * albedo).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-12))
        weights.append(w.sum(1))
    seen = torch.where(torch.cat(weights)[:, None] >= 1e-4, torch.cat(colours), at_point)
    return seen.clamp(0, 1)
