"""Differentiable triangle rasterisation of a mesh seen by a :class:`~dream3d.cameras.Cameras`
batch: one interface, two backends that give the same images where both run.

- ``"nvdiffrast"``: nvdiffrast's ``rasterize``, ``interpolate`` and ``antialias`` (CUDA tensors,
  nvdiffrast installed);
- ``"torch"``: plain PyTorch, any device (the CPU's backend), written here.

``RasterizerConfig.backend="auto"`` takes nvdiffrast when it imports and the vertices are on CUDA,
else the PyTorch one.

**Projection** (``docs/cameras.md``). A world point ``p`` is, in the frame of a camera with
``c2w = [R | t]`` (columns of ``R``: right, up, backward), ``(x, y, z) = R^T (p - t)`` (OpenGL
axes: the camera looks down -Z); its z-depth is ``d = -z`` and its pixel position
``(u, v) = (W / 2 + f x / d, H / 2 - f y / d)`` with ``f = focal_px``: column ``u`` to the right,
row ``v`` down, the centre of pixel ``(i, j)`` (row ``i``, column ``j``) at ``(j + 0.5, i + 0.5)``.
Images are ``(B, H, W, C)``, row 0 at the top. ``screen`` positions are ``(u, v, d)`` per vertex.

**Coverage and barycentrics.** For a triangle with screen vertices ``P_0, P_1, P_2`` and
``E(a, b, q) = (b - a) x (q - a)`` (the 2D cross product), a pixel centre ``q`` has the screen
barycentrics ``lambda_k = E(P_{k+1}, P_{k+2}, q) / E(P_0, P_1, P_2)`` (indices mod 3); it is covered
when all three are >= 0 (both windings: faces are two-sided; a pixel centre on an edge shared by
two faces is covered by both and the z-buffer picks one). The perspective-correct barycentrics and
the z-depth are ``b_k = (lambda_k / d_k) / s`` and ``d = 1 / s`` with ``s = sum_j lambda_j / d_j``;
an attribute interpolates as ``a(q) = sum_k b_k a_k``. Among the faces covering a pixel the nearest
(smallest ``d``) wins; equal depths go to the smallest face id.

**Near plane.** The PyTorch backend culls every face with a vertex at z-depth below
``RasterizerConfig.near`` (no clipping: a face that straddles the near plane vanishes whole).
nvdiffrast clips such faces at the near plane (and at ``far``) instead, so the two backends differ
only for faces that cross those planes.

**Anti-aliasing and silhouette gradients** (nvdiffrast's ``antialias``, Laine et al. 2020). A hard
coverage test has no gradient with respect to vertex positions; the anti-aliasing pass gives one.
For every pair of horizontally or vertically adjacent pixels ``A``, ``B`` whose face ids differ (or
one is background), the face in front (the smaller z-depth of the two pixels; background is at
infinity) is ``T`` and its pixel is ``A``. The segment from ``A``'s centre to ``B``'s leaves ``T``
at ``alpha = E_k(A) / (E_k(A) - E_k(B))`` along it (``E_k`` the edge function of ``T``'s edge ``k``
that it crosses, the smallest such ``alpha``). If that edge is a *silhouette* edge - an open edge,
or one whose neighbouring face lies on the same side of it on screen as ``T`` (the surface folds
away there) - and runs across the pair's axis at least as much as along it (``|dv| >= |du|`` on
screen for a horizontal pair, ``|du| >= |dv|`` for a vertical one, so that each edge blends along
one axis only, as nvdiffrast does), the edge covers a fraction of the pixel boxes along the
segment, and the colours ``c_A``, ``c_B`` blend:

- ``alpha > 1/2``: ``T`` reaches into ``B``'s box: ``c_B += (alpha - 1/2) (c_A - c_B)``;
- ``alpha <= 1/2``: ``T`` leaves ``A``'s box early: ``c_A += (1/2 - alpha) (c_B - c_A)``.

Blends add up over a pixel's (up to four) pairs and use the colours before blending. ``alpha`` is a
differentiable function of the edge's screen vertices, so gradients reach vertex positions through
silhouettes. Anti-aliasing a hard mask gives a coverage in [0, 1] with those gradients.

**What is differentiable** (PyTorch backend): barycentrics, z-depth and interpolated attributes with
respect to vertex positions and attributes (recomputed with gradients for the winning
(pixel, face) pairs only, so memory stays ``O(B H W)``); the anti-aliased images with respect to the
input image and the vertex positions (the silhouette edges). Face ids and the hard mask are not.

Memory: the PyTorch backend walks each face's clamped pixel bounding box; the face-pixel pairs are
processed in chunks of at most ``max_pairs`` (two passes over the chunks when there are several).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from ..cameras import Cameras
from ..errors import UserError

BACKENDS = ("auto", "torch", "nvdiffrast")

# Coverage tolerance of the edge functions (px^2, in float64): a pixel centre on a shared edge is
# covered by both faces whatever the rounding, so the mesh has no cracks.
_EDGE_TOLERANCE = 1e-7


@dataclass(frozen=True)
class RasterizerConfig:
    """``backend``: ``"auto" | "torch" | "nvdiffrast"`` (module docstring). ``antialias``: blend
    across silhouettes (what gives gradients to vertex positions through the outline).
    ``near``: faces with a vertex at z-depth below it are culled (PyTorch) or clipped (nvdiffrast);
    ``far``: nvdiffrast's far clipping plane (the PyTorch backend has none). ``normals``:
    ``"face"`` (flat) or ``"vertex"`` (area-weighted vertex normals, interpolated and renormalised)
    in :func:`rasterize_mesh`. ``max_pairs``: face-pixel pairs per chunk (PyTorch backend)."""

    backend: str = "auto"
    antialias: bool = True
    near: float = 0.01
    far: float = 100.0
    normals: Literal["face", "vertex"] = "face"
    max_pairs: int = 1 << 22

    def __post_init__(self):
        check_backend(self.backend)
        if not 0.0 < self.near < self.far:
            raise UserError(f"rasterizer near {self.near} and far {self.far} need 0 < near < far")
        if self.normals not in ("face", "vertex"):
            raise UserError(f"rasterizer normals '{self.normals}' is unknown; use 'face' or 'vertex'")
        if self.max_pairs < 1:
            raise UserError(f"rasterizer max_pairs {self.max_pairs} must be >= 1")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"rasteriser backend '{backend}' is unknown; use 'auto', 'torch' or 'nvdiffrast'")


@functools.cache
def nvdiffrast_available() -> bool:
    """True when ``nvdiffrast.torch`` imports (its CUDA plugin builds on first use)."""
    try:
        import nvdiffrast.torch  # noqa: F401, PLC0415 - optional, CUDA only
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def use_nvdiffrast(x: torch.Tensor, backend: str) -> bool:
    """Whether ``backend`` rasterises tensors like ``x`` with nvdiffrast."""
    check_backend(backend)
    if backend == "nvdiffrast":
        if not x.is_cuda:
            raise UserError("the 'nvdiffrast' rasteriser backend needs CUDA tensors; use backend='torch'")
        if not nvdiffrast_available():
            raise UserError(
                "the 'nvdiffrast' rasteriser backend needs nvdiffrast (pip install "
                "git+https://github.com/NVlabs/nvdiffrast --no-build-isolation); use backend='torch'"
            )
        return True
    return backend == "auto" and x.is_cuda and nvdiffrast_available()


@functools.cache
def _nvdiffrast_context(device: torch.device):
    import nvdiffrast.torch as dr  # noqa: PLC0415 - optional, CUDA only

    return dr.RasterizeCudaContext(device=device)


# ----------------------------------------------------------------------------------------------
# Projection


def camera_frame(verts: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """World vertices ``(V, 3)`` or ``(B, V, 3)`` -> camera-frame points ``(B, V, 3)``,
    ``R^T (p - t)`` (OpenGL axes; z-depth is ``-z``)."""
    c2w = cameras.c2w.to(device=verts.device, dtype=verts.dtype)
    rot, pos = c2w[:, :3, :3], c2w[:, None, :3, 3]  # (B, 3, 3), (B, 1, 3)
    return (verts - pos) @ rot  # row vector times R = (R^T (p - t))^T


def project_screen(verts: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """Screen positions ``(B, V, 3)``: ``(u, v, d)`` = pixel column, pixel row (centres at +0.5,
    row 0 at the top) and z-depth (module docstring)."""
    cam = camera_frame(verts, cameras)
    f = cameras.focal_px.to(device=verts.device, dtype=verts.dtype)[:, None]
    d = -cam[..., 2]
    u = 0.5 * cameras.width + f * cam[..., 0] / d
    v = 0.5 * cameras.height - f * cam[..., 1] / d
    return torch.stack([u, v, d], -1)


def project_clip(verts: torch.Tensor, cameras: Cameras, near: float, far: float) -> torch.Tensor:
    """OpenGL clip-space positions ``(B, V, 4)`` (what nvdiffrast takes; NDC ``y`` up):
    ``(2 f x / W, 2 f y / H, -(far + near) / (far - near) z - 2 far near / (far - near), -z)``,
    so that ``x / w``, ``y / w`` in [-1, 1] span the image and ``w`` is the z-depth."""
    cam = camera_frame(verts, cameras)
    f = cameras.focal_px.to(device=verts.device, dtype=verts.dtype)[:, None]
    x, y, z = cam.unbind(-1)
    zc = -(far + near) / (far - near) * z - 2.0 * far * near / (far - near)
    return torch.stack([2.0 * f * x / cameras.width, 2.0 * f * y / cameras.height, zc, -z], -1)


# ----------------------------------------------------------------------------------------------
# Mesh helpers


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``(P_1 - P_0) x (P_2 - P_0)`` per face, ``(F, 3)`` or ``(B, F, 3)``: outward for
    counter-clockwise faces (trimesh's winding); length twice the area unless ``normalize``."""
    tri = verts[..., faces, :]  # (..., F, 3, 3)
    n = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)
    return F.normalize(n, dim=-1) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (the sum of the adjacent faces' unnormalised normals,
    normalised), ``(V, 3)`` or ``(B, V, 3)``."""
    fn = face_normals(verts, faces, normalize=False)  # (..., F, 3)
    index = faces.reshape(-1)
    per_corner = fn.unsqueeze(-2).expand(*fn.shape[:-1], 3, 3).reshape(*fn.shape[:-2], -1, 3)
    vn = torch.zeros_like(verts).index_add(verts.dim() - 2, index, per_corner)
    return F.normalize(vn, dim=-1)


def edge_topology(faces: torch.Tensor) -> torch.Tensor:
    """``(F, 3)`` long: for edge ``k`` of each face (from ``faces[:, k]`` to ``faces[:, (k + 1) % 3]``)
    the vertex of the neighbouring face across it that is not on the edge; ``-1`` where the edge is
    open or shared by more than two faces (both count as silhouette edges)."""
    n_faces = faces.shape[0]
    out = torch.full((n_faces * 3,), -1, dtype=torch.long, device=faces.device)
    if n_faces == 0:
        return out.reshape(0, 3)
    a, b = faces, faces.roll(-1, dims=1)
    opposite = faces.roll(-2, dims=1).reshape(-1)
    n_verts = int(faces.max()) + 1
    key = (torch.minimum(a, b) * n_verts + torch.maximum(a, b)).reshape(-1)
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pair_starts = starts[counts == 2]
    h1, h2 = order[pair_starts], order[pair_starts + 1]
    out[h1] = opposite[h2]
    out[h2] = opposite[h1]
    return out.reshape(n_faces, 3)


def _check_mesh(verts: torch.Tensor, faces: torch.Tensor, batch: int) -> None:
    if verts.dim() not in (2, 3) or verts.shape[-1] != 3 or (verts.dim() == 3 and verts.shape[0] != batch):
        raise UserError(f"mesh vertices must be (V, 3) or (B={batch}, V, 3), got {tuple(verts.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise UserError(f"mesh faces must be an (F, 3) integer tensor, got {tuple(faces.shape)} {faces.dtype}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[-2]):
        raise UserError(f"mesh faces index vertices outside [0, {verts.shape[-2]}); check the face array")


# ----------------------------------------------------------------------------------------------
# Rasterisation


@dataclass
class Raster:
    """What :func:`rasterize` returns (``B`` cameras at ``H x W``, row 0 at the top):

    - ``face_id (B, H, W)`` long: the visible face per pixel, ``-1`` for background;
    - ``bary (B, H, W, 3)``: perspective-correct barycentrics of the face's vertices
      ``faces[face_id, 0..2]`` (sum 1; zeros on background), differentiable w.r.t. positions;
    - ``depth (B, H, W, 1)``: z-depth of the surface (0 on background), differentiable;
    - ``mask (B, H, W, 1)``: 1 where a face covers the pixel centre (no gradient);
    - ``positions``: the projected vertices the backend rasterised, differentiable: screen
      ``(B, V, 3)`` ``(u, v, z-depth)`` (PyTorch) or clip space ``(B, V, 4)`` (nvdiffrast);
    - ``faces (F, 3)`` long and ``backend``.

    The rest is the backend's own state: the winning (pixel, face) pairs and their barycentrics
    (PyTorch), nvdiffrast's raw output (bottom row first) and its int32 faces.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    faces: torch.Tensor
    backend: str
    pixel_index: torch.Tensor | None = None  # (N,) flat index into B * H * W
    pixel_face: torch.Tensor | None = None  # (N,)
    pixel_bary: torch.Tensor | None = None  # (N, 3), with gradients
    nv_rast: torch.Tensor | None = None  # (B, H, W, 4), nvdiffrast's orientation
    nv_faces: torch.Tensor | None = None  # (F, 3) int32
    topology: torch.Tensor | None = None  # edge_topology(faces), filled on first use (PyTorch)
    _silhouettes: tuple | None = None  # the anti-aliasing pairs of ``positions`` (PyTorch)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, H, W)``."""
        return tuple(self.face_id.shape)


def rasterize(
    verts: torch.Tensor, faces: torch.Tensor, cameras: Cameras, cfg: RasterizerConfig = RasterizerConfig()
) -> Raster:
    """Rasterise a mesh (``verts (V, 3)`` world, or ``(B, V, 3)`` one per camera; ``faces (F, 3)``
    integer) for every camera of ``cameras`` -> :class:`Raster` (module docstring)."""
    _check_mesh(verts, faces, len(cameras))
    faces = faces.long()
    cameras = cameras.to(verts.device)
    if use_nvdiffrast(verts, cfg.backend):
        return _rasterize_nvdiffrast(verts, faces, cameras, cfg)
    screen = project_screen(verts, cameras)
    return _rasterize_torch(screen, faces, cameras.height, cameras.width, cfg)


def _face_table(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float):
    """Per face of every image (``B * F`` rows, float64, no gradient): the screen vertices
    ``x0 y0 x1 y1 x2 y2``, inverse depths ``1/d0 1/d1 1/d2`` and the signed double area, plus the
    clamped pixel bounding box ``(i0, j0, rows, cols)`` (zero rows or cols where culled)."""
    tri = screen.detach().double()[:, faces]  # (B, F, 3, 3)
    x, y, d = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    keep = (d > near).all(-1) & (area != 0) & torch.isfinite(area)
    # Pixel (i, j) has its centre at (j + 0.5, i + 0.5): columns ceil(min - 0.5) .. floor(max - 0.5).
    j0 = torch.ceil(x.amin(-1).clamp(-1.0, width + 1.0) - 0.5)
    j1 = torch.floor(x.amax(-1).clamp(-1.0, width + 1.0) - 0.5)
    i0 = torch.ceil(y.amin(-1).clamp(-1.0, height + 1.0) - 0.5)
    i1 = torch.floor(y.amax(-1).clamp(-1.0, height + 1.0) - 0.5)
    j0, i0 = j0.clamp(min=0), i0.clamp(min=0)
    j1, i1 = j1.clamp(max=width - 1), i1.clamp(max=height - 1)
    cols = (j1 - j0 + 1).clamp(min=0) * keep
    rows = (i1 - i0 + 1).clamp(min=0) * keep
    table = torch.cat([torch.stack([x, y], -1).reshape(*x.shape[:-1], 6), 1.0 / d, area[..., None]], -1)
    box = torch.stack([i0, j0, rows, cols], -1).long()
    return table.reshape(-1, 10), box.reshape(-1, 4)


def _edge_values(t: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``E(P_{k+1}, P_{k+2}, q)`` for k = 0, 1, 2 -> ``(N, 3)``; ``t`` holds ``x0 y0 x1 y1 x2 y2``
    in its first six columns."""
    x0, y0, x1, y1, x2, y2 = t[:, :6].unbind(-1)
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    return torch.stack([w0, w1, w2], -1)


def _chunk_pairs(table, box, first, last, width):
    """The covered (pixel, face) pairs of rows ``first:last`` of the face table: flat pixel index
    within its image, row of the table (``b * F + f``) and z-depth (float64)."""
    i0, j0, rows, cols = box[first:last].unbind(-1)
    counts = rows * cols
    rowid = torch.repeat_interleave(torch.arange(first, last, device=box.device), counts)
    n = rowid.shape[0]
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(n, device=box.device) - torch.repeat_interleave(starts, counts)
    k = rowid - first
    c = cols[k]
    ii, jj = i0[k] + local // c, j0[k] + local % c
    t = table[rowid]
    w = _edge_values(t, jj.double() + 0.5, ii.double() + 0.5)
    s = torch.sign(t[:, 9:10])
    inside = ((w * s) >= -_EDGE_TOLERANCE).all(-1)
    w, t = w[inside], t[inside]
    depth = 1.0 / ((w / t[:, 9:10]) * t[:, 6:9]).sum(-1)
    return (ii * width + jj)[inside], rowid[inside], depth


def _chunks(box: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Ranges of face-table rows with at most ``max_pairs`` pairs each (a bigger face alone)."""
    counts = box[:, 2] * box[:, 3]
    total = int(counts.sum())
    if total <= max_pairs:
        return [(0, box.shape[0])]
    ends = torch.cumsum(counts, 0).tolist()
    ranges, first, base = [], 0, 0
    for r, end in enumerate(ends):
        if end - base > max_pairs and r > first:
            ranges.append((first, r))
            first, base = r, ends[r - 1]
    ranges.append((first, len(ends)))
    return ranges


def _rasterize_torch(screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, cfg: RasterizerConfig):
    pixel_index, pixel_face = _zbuffer_torch(screen, faces, height, width, cfg.near, cfg.max_pairs)
    return raster_from_winners(screen, faces, pixel_index, pixel_face, height, width)


@torch.no_grad()
def _zbuffer_torch(screen, faces, height, width, near, max_pairs):
    """The visible (pixel, face) pairs, no gradient: flat pixel indices into ``B * H * W`` and
    their face ids. Pass 1 scatter-mins the depth of every covered pair of each face's clamped
    bounding box into the z-buffer; pass 2 scatter-mins the face id over the pairs at that depth."""
    B, n_faces = screen.shape[0], max(faces.shape[0], 1)
    hw = height * width
    device = screen.device
    table, box = _face_table(screen, faces, height, width, near)
    ranges = _chunks(box, max_pairs)
    zbuf = torch.full((B * hw,), float("inf"), dtype=torch.float64, device=device)
    pairs = []
    for first, last in ranges:  # pass 1: the z-buffer (scatter-min of depth)
        pix, rowid, depth = _chunk_pairs(table, box, first, last, width)
        pix = pix + (rowid // n_faces) * hw
        zbuf.scatter_reduce_(0, pix, depth, "amin")
        if len(ranges) == 1:
            pairs.append((pix, rowid, depth))
    fbuf = torch.full((B * hw,), B * n_faces, dtype=torch.long, device=device)
    for first, last in ranges:  # pass 2: the smallest face id at that depth
        if pairs:
            pix, rowid, depth = pairs.pop()
        else:
            pix, rowid, depth = _chunk_pairs(table, box, first, last, width)
            pix = pix + (rowid // n_faces) * hw
        hit = depth == zbuf[pix]
        fbuf.scatter_reduce_(0, pix[hit], rowid[hit], "amin")
    pixel_index = torch.nonzero(fbuf < B * n_faces).squeeze(1)
    return pixel_index, fbuf[pixel_index] % n_faces


def raster_from_winners(
    screen: torch.Tensor,
    faces: torch.Tensor,
    pixel_index: torch.Tensor,
    pixel_face: torch.Tensor,
    height: int,
    width: int,
) -> Raster:
    """The PyTorch backend's :class:`Raster` from the visible (pixel, face) pairs (``pixel_index``
    into ``B * H * W``, unique; ``pixel_face``): barycentrics and z-depth computed again, with
    gradients w.r.t. ``screen (B, V, 3)``, for those pairs only."""
    B = screen.shape[0]
    hw = height * width
    image = pixel_index // hw
    local = pixel_index % hw
    px = (local % width).to(screen.dtype) + 0.5
    py = (local // width).to(screen.dtype) + 0.5
    tri = screen[image[:, None], faces[pixel_face]]  # (N, 3, 3)
    w = _edge_values(tri[..., :2].reshape(-1, 6), px, py)
    inv = w / tri[..., 2]  # lambda_k / d_k, times the double area
    s = inv.sum(-1, keepdim=True)
    pixel_bary = inv / s
    area = w.sum(-1, keepdim=True)  # E_0 + E_1 + E_2 = E(P_0, P_1, P_2) at every q
    depth_w = area / s  # 1 / sum(lambda_k / d_k)

    n = B * hw
    face_id = torch.full((n,), -1, dtype=torch.long, device=screen.device)
    face_id[pixel_index] = pixel_face
    bary = screen.new_zeros(n, 3).index_put((pixel_index,), pixel_bary)
    depth = screen.new_zeros(n, 1).index_put((pixel_index,), depth_w)
    mask = (face_id >= 0).to(screen.dtype)
    return Raster(
        face_id=face_id.reshape(B, height, width),
        bary=bary.reshape(B, height, width, 3),
        depth=depth.reshape(B, height, width, 1),
        mask=mask.reshape(B, height, width, 1),
        positions=screen,
        faces=faces,
        backend="torch",
        pixel_index=pixel_index,
        pixel_face=pixel_face,
        pixel_bary=pixel_bary,
    )


def _rasterize_nvdiffrast(verts, faces, cameras, cfg):
    import nvdiffrast.torch as dr  # noqa: PLC0415 - optional, CUDA only

    H, W = cameras.height, cameras.width
    clip = project_clip(verts.float(), cameras, cfg.near, cfg.far).contiguous()
    tri = faces.int().contiguous()
    rast, _ = dr.rasterize(_nvdiffrast_context(verts.device), clip, tri, resolution=[H, W], grad_db=False)
    # nvdiffrast: (u, v, z/w, face + 1) with u, v the weights of the face's vertices 0 and 1, and
    # image row 0 at the bottom (NDC y = -1); this project's row 0 is the top.
    depth, _ = dr.interpolate(clip[..., 3:4].contiguous(), rast, tri)
    flipped = rast.flip(1)
    face_id = flipped[..., 3].detach().long() - 1
    mask = (face_id >= 0).float()[..., None]
    u, v = flipped[..., 0], flipped[..., 1]
    bary = torch.stack([u, v, 1.0 - u - v], -1) * mask
    return Raster(
        face_id=face_id,
        bary=bary,
        depth=depth.flip(1) * mask,
        mask=mask,
        positions=clip,
        faces=faces,
        backend="nvdiffrast",
        nv_rast=rast,
        nv_faces=tri,
    )


# ----------------------------------------------------------------------------------------------
# Interpolation


def interpolate(attr: torch.Tensor, raster: Raster) -> torch.Tensor:
    """Per-vertex attributes ``(V, C)`` or ``(B, V, C)`` -> ``(B, H, W, C)``:
    ``sum_k b_k attr[faces[face_id, k]]`` (perspective-correct), zero on background.
    Differentiable w.r.t. ``attr`` and (through the barycentrics) the vertex positions."""
    B, H, W = raster.shape
    if attr.dim() not in (2, 3) or (attr.dim() == 3 and attr.shape[0] not in (1, B)):
        raise UserError(f"attributes must be (V, C) or (B={B}, V, C), got {tuple(attr.shape)}")
    if raster.backend == "nvdiffrast":
        import nvdiffrast.torch as dr  # noqa: PLC0415 - optional, CUDA only

        a = attr if attr.dim() == 3 else attr[None]
        out, _ = dr.interpolate(a.float().contiguous(), raster.nv_rast, raster.nv_faces)
        return out.flip(1)
    vi = raster.faces[raster.pixel_face]  # (N, 3)
    if attr.dim() == 3 and attr.shape[0] == B and B > 1:
        values = attr[(raster.pixel_index // (H * W))[:, None], vi]
    else:
        values = (attr[0] if attr.dim() == 3 else attr)[vi]  # (N, 3, C)
    out = (raster.pixel_bary.to(values.dtype)[..., None] * values).sum(1)
    image = values.new_zeros(B * H * W, attr.shape[-1]).index_put((raster.pixel_index,), out)
    return image.reshape(B, H, W, -1)


# ----------------------------------------------------------------------------------------------
# Anti-aliasing


def _silhouette_pairs(raster: Raster, positions: torch.Tensor, faces: torch.Tensor, topology: torch.Tensor):
    """Adjacent pixel pairs split by a silhouette edge (module docstring), no gradient: the front
    pixel ``a``, the other pixel ``b``, the image index and the edge's two vertex ids."""
    B, H, W = raster.shape
    hw = H * W
    with torch.no_grad():
        fid = raster.face_id.reshape(-1)
        depth = torch.where(fid >= 0, raster.depth.detach().reshape(-1).double(), float("inf"))
        grid = torch.arange(B * hw, device=fid.device).reshape(B, H, W)
        p = torch.cat([grid[:, :, :-1].reshape(-1), grid[:, :-1, :].reshape(-1)])
        q = torch.cat([grid[:, :, 1:].reshape(-1), grid[:, 1:, :].reshape(-1)])
        horizontal = torch.arange(p.shape[0], device=p.device) < B * H * (W - 1)
        differ = fid[p] != fid[q]
        p, q, horizontal = p[differ], q[differ], horizontal[differ]
        p_front = depth[p] <= depth[q]
        a, b = torch.where(p_front, p, q), torch.where(p_front, q, p)
        face = fid[a]
        image = a // hw
        corners = faces[face]  # (n, 3)
        xy = positions.detach().double()[..., :2]
        start = xy[image[:, None], corners]  # (n, 3, 2); edge k runs from corner k to corner k + 1
        end = start.roll(-1, dims=1)
        ex, ey = end[..., 0] - start[..., 0], end[..., 1] - start[..., 1]

        def edge(qx, qy):  # E(P_k, P_{k+1}, q) for the three edges, (n, 3)
            return ex * (qy - start[..., 1]) - ey * (qx - start[..., 0])

        def centre(pix):
            local = pix % hw
            return (local % W).double()[:, None] + 0.5, (local // W).double()[:, None] + 0.5

        third = start.roll(-2, dims=1)  # the corner opposite each edge
        sign = torch.sign(edge(third[..., 0], third[..., 1])[:, :1])  # the face's winding
        ea, eb = edge(*centre(a)) * sign, edge(*centre(b)) * sign
        crossing = (ea >= 0) & (eb < 0)
        alpha = torch.where(crossing, ea / (ea - eb), torch.full_like(ea, float("inf")))
        alpha, k = alpha.min(-1)  # where the segment a -> b leaves the face
        rows = torch.arange(face.shape[0], device=face.device)
        opposite = topology[face, k]  # the neighbour's far vertex across edge k, -1 if none
        nb = xy[image, opposite.clamp(min=0)]
        nb_side = edge(nb[:, None, 0], nb[:, None, 1])[rows, k] * sign[:, 0]
        silhouette = (opposite < 0) | (nb_side > 0)
        across = torch.where(horizontal, ey[rows, k].abs() >= ex[rows, k].abs(), ex[rows, k].abs() >= ey[rows, k].abs())
        sel = torch.isfinite(alpha) & silhouette & across
        e0, e1 = corners[rows, k][sel], corners[rows, (k + 1) % 3][sel]
        return a[sel], b[sel], image[sel], e0, e1


def antialias(
    image: torch.Tensor,
    raster: Raster,
    positions: torch.Tensor | None = None,
    faces: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blend ``image (B, H, W, C)`` across the silhouette edges of ``raster`` (module docstring):
    differentiable w.r.t. ``image`` and the vertex ``positions`` (default ``raster.positions``:
    screen ``(B, V, 3)`` for the PyTorch backend, clip ``(B, V, 4)`` for nvdiffrast) of ``faces``
    (default ``raster.faces``)."""
    B, H, W = raster.shape
    if image.dim() != 4 or tuple(image.shape[:3]) != (B, H, W):
        raise UserError(f"antialias needs a (B={B}, H={H}, W={W}, C) image, got {tuple(image.shape)}")
    positions = raster.positions if positions is None else positions
    if raster.backend == "nvdiffrast":
        import nvdiffrast.torch as dr  # noqa: PLC0415 - optional, CUDA only

        tri = raster.nv_faces if faces is None else faces.int().contiguous()
        out = dr.antialias(image.float().flip(1).contiguous(), raster.nv_rast, positions.float().contiguous(), tri)
        return out.flip(1)
    own = faces is None and positions is raster.positions
    faces = raster.faces if faces is None else faces.long()
    if own and raster._silhouettes is not None:
        a, b, img, e0, e1 = raster._silhouettes
    else:
        if raster.topology is None or not own:
            topology = edge_topology(faces)
            if own:
                raster.topology = topology
        else:
            topology = raster.topology
        a, b, img, e0, e1 = _silhouette_pairs(raster, positions, faces, topology)
        if own:
            raster._silhouettes = (a, b, img, e0, e1)
    # The crossing point again, with gradients w.r.t. the edge's screen positions.
    p0, p1 = positions[img, e0, :2], positions[img, e1, :2]
    hw = H * W

    def edge(pix):
        local = pix % hw
        qx = (local % W).to(positions.dtype) + 0.5
        qy = (local // W).to(positions.dtype) + 0.5
        return (p1[:, 0] - p0[:, 0]) * (qy - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (qx - p0[:, 0])

    ea, eb = edge(a), edge(b)
    alpha = (ea / (ea - eb))[:, None]
    flat = image.reshape(B * hw, -1)
    ca, cb = flat[a], flat[b]
    into_b = (alpha > 0.5).detach()
    target = torch.where(into_b[:, 0], b, a)
    delta = torch.where(into_b, (alpha - 0.5) * (ca - cb), (0.5 - alpha) * (cb - ca)).to(flat.dtype)
    return flat.index_add(0, target, delta).reshape(image.shape)


# ----------------------------------------------------------------------------------------------
# Convenience


def rasterize_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    attrs: dict[str, torch.Tensor] | None = None,
    *,
    background: torch.Tensor | None = None,
    cfg: RasterizerConfig = RasterizerConfig(),
) -> dict[str, torch.Tensor]:
    """Rasterise, interpolate and anti-alias a mesh in one call.

    ``attrs``: per-vertex attributes ``(V, C)`` or ``(B, V, C)`` by name. Returns ``(B, H, W, C)``
    images (``B`` cameras at ``H x W``, row 0 at the top):

    - every attribute, interpolated, zero on background (anti-aliased over zero when
      ``cfg.antialias``: premultiplied by coverage at the outline);
    - ``rgb`` (when ``attrs`` has ``"rgb"``): composited over ``background`` (broadcastable to
      ``(B, H, W, 3)``, default black) before anti-aliasing, ``mask * rgb + (1 - mask) * background``;
    - ``opacity (.., 1)``: the anti-aliased coverage in [0, 1], with gradients to vertex positions
      through the silhouettes (the hard ``mask`` without anti-aliasing);
    - ``mask (.., 1)``: hard coverage of pixel centres (no gradient);
    - ``depth (.., 1)``: z-depth of the visible surface, 0 on background (not anti-aliased);
    - ``normal (.., 3)``: unit world-space normals (``cfg.normals``: the face's, or the interpolated
      and renormalised area-weighted vertex normals), zero on background, anti-aliased like the
      attributes;
    - ``face_id (B, H, W)`` long (``-1`` background) and ``raster`` (the :class:`Raster`).
    """
    attrs = dict(attrs or {})
    raster = rasterize(verts, faces, cameras, cfg)
    faces = raster.faces
    mask = raster.mask.to(verts.dtype)
    images: dict[str, torch.Tensor] = {name: interpolate(a, raster) for name, a in attrs.items()}
    if cfg.normals == "vertex":
        normal = F.normalize(interpolate(vertex_normals(verts, faces), raster), dim=-1)
    else:
        fn = face_normals(verts, faces)  # (F, 3) or (B, F, 3)
        fid = raster.face_id.clamp(min=0)
        if fn.dim() == 3:
            normal = fn[torch.arange(fn.shape[0], device=fid.device)[:, None, None], fid]
        else:
            normal = fn[fid]
        normal = normal * mask
    images["normal"] = normal
    if "rgb" in images:
        bg = torch.zeros(3, dtype=mask.dtype, device=mask.device) if background is None else background
        images["rgb"] = mask * images["rgb"] + (1.0 - mask) * bg.to(mask)
    images["opacity"] = mask
    if cfg.antialias:  # one pass over all the images, stacked along channels
        names = list(images)
        sizes = [images[n].shape[-1] for n in names]
        stacked = torch.cat([images[n].to(mask.dtype).expand(*mask.shape[:3], -1) for n in names], -1)
        blended = antialias(stacked, raster).split(sizes, dim=-1)
        images = dict(zip(names, blended))
    images.update(mask=raster.mask, depth=raster.depth, face_id=raster.face_id, raster=raster)
    return images
