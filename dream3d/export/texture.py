"""Baked textures: UV-unwrap a mesh with xatlas and bake a colour field into an image.

Texture conventions (the one set used by every function here and by the writers):

- An image is ``(H, W, C)``, **row 0 at the top**, as PIL and PNG store it.
- ``uv`` is **OBJ-style**: ``u`` to the right, ``v`` **up**, ``(0, 0)`` the bottom-left corner of
  the image and ``(1, 1)`` the top-right; this is what ``trimesh.visual.TextureVisuals`` holds and
  what ``vt`` lines of an OBJ file contain. glTF puts the texcoord origin at the top-left
  (``TEXCOORD_0 = (u, 1 - v)``); trimesh flips ``v`` when it writes and reads glTF.
- Texel ``(row i, column j)`` covers ``u`` in ``[j, j + 1] / W`` and ``v`` in
  ``[H - 1 - i, H - i] / H``; its centre is ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``.
  Pixel coordinates of a uv point are ``x = u W``, ``y = (1 - v) H`` (y down).

Steps of :func:`textured_mesh`:

1. :func:`unwrap`: xatlas cuts the surface into charts and packs them into the unit square. A
   vertex on a seam becomes one vertex per chart (xatlas's ``vmapping`` names the original vertex
   of each new one), so positions stay the input's world coordinates. Faces of (almost) zero area,
   which xatlas charts nowhere (marching tetrahedra makes them where the SDF is exactly 0 at a
   grid vertex), get a uv triangle collapsed onto the nearest charted vertex's uv. xatlas picks
   its texel density to fill about ``size`` texels and returns an atlas of about (not exactly)
   that size; its uvs are scaled uniformly so the atlas's longer side spans ``[0, 1]``.
2. :func:`rasterize_uv`: every texel centre inside a uv triangle gets that triangle's index and its
   barycentrics ``(b0, b1, b2)``, found in uv space (pixel coordinates).
3. :func:`bake_texture`: a covered texel's 3D point is ``b0 p0 + b1 p1 + b2 p2`` (the triangle's
   world vertices) and its colour ``colour_fn(points)`` in [0, 1]. Seams: ``padding`` rings of
   texels around the charts get the mean of their already filled 8-neighbours, ring by ring, so
   bilinear sampling and mipmaps near a chart's edge see the chart's colours; every texel still
   empty then gets the mean colour of the covered texels.
4. The mesh gets ``TextureVisuals(uv, PBRMaterial(baseColorTexture=image, metallicFactor=0,
   roughnessFactor=1))`` (a diffuse albedo: glTF's default metallic factor is 1) and smooth vertex
   normals of the surface before the seams were cut (:func:`welded_vertex_normals`), so seams do
   not show in the shading.

Colours are stored as they are rendered (8-bit, ``round(255 c)``), the same numbers as vertex
colours; glTF viewers read ``baseColorTexture`` as sRGB, i.e. show these values as they are.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

from ..errors import UserError


def unwrap(mesh: trimesh.Trimesh, size: int = 1024, padding: int = 4) -> tuple[trimesh.Trimesh, np.ndarray]:
    """xatlas charts of ``mesh`` packed for a ``size x size`` texture with ``padding`` texels
    between charts (module docstring, step 1).

    Returns ``(split, uv)``: ``split`` has one vertex per (original vertex, chart) pair at the
    original world position (``split.metadata["uv_vmapping"]`` the original index of each,
    ``"uv_charts"`` the number of charts), ``uv (V', 2)`` float64 OBJ-style in ``[0, 1]``.
    """
    try:
        import xatlas  # noqa: PLC0415 - optional: only textured exports need it
    except ImportError:
        raise UserError("textured export needs xatlas; install it with `pip install xatlas`") from None
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        raise UserError("cannot unwrap a mesh without faces")
    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.astype(np.float32), faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(size)  # with texels_per_unit 0: xatlas picks a density for about this size
    pack.padding = int(padding)
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases, expected one")
    vmapping, new_faces, uv = atlas[0]
    # xatlas's uvs are pixel positions divided by the atlas's width and height; scale both axes by
    # the longer side so texels stay square and the atlas fits the square texture
    width, height = float(atlas.width), float(atlas.height)
    uv = np.asarray(uv, dtype=np.float64) * np.array([width, height]) / max(width, height)
    vmapping = np.asarray(vmapping, dtype=np.int64)
    new_faces = np.asarray(new_faces, dtype=np.int64)
    charted = np.asarray(atlas.get_mesh_vertex_assignment(0)[0]) != np.iinfo(np.uint32).max
    vmapping, new_faces, uv = _place_uncharted_faces(verts, vmapping, new_faces, uv, charted)
    split = trimesh.Trimesh(verts[vmapping], new_faces, process=False)
    split.metadata["uv_vmapping"] = vmapping
    split.metadata["uv_charts"] = int(atlas.chart_count)
    return split, np.clip(uv, 0.0, 1.0)


def _place_uncharted_faces(verts, vmapping, faces, uv, charted):
    """xatlas leaves faces of (almost) zero area out of every chart, their vertices at uv (0, 0).
    Each such face gets three vertices of its own, all at the uv of the charted vertex nearest to
    its centroid: it stays in the mesh (the surface keeps its connectivity), covers no texel and
    samples the colour of the surface next to it. Unreferenced vertices are then dropped."""
    left_out = ~charted[faces].all(1)
    if left_out.any():
        if not charted.any():
            raise UserError("xatlas found no face to chart (every face has zero area); the mesh is degenerate")
        pos = verts[vmapping]
        _, nearest = cKDTree(pos[charted]).query(pos[faces[left_out]].mean(1))
        corners = faces[left_out].reshape(-1)
        faces = faces.copy()
        faces[left_out] = len(vmapping) + np.arange(len(corners)).reshape(-1, 3)
        vmapping = np.concatenate([vmapping, vmapping[corners]])
        uv = np.concatenate([uv, np.repeat(uv[charted][nearest], 3, axis=0)])
    used = np.zeros(len(vmapping), dtype=bool)
    used[faces] = True
    index = np.cumsum(used) - 1
    return vmapping[used], index[faces], uv[used]


def uv_to_pixels(uv: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates ``(x, y)`` (x right, y down, texel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``)
    of OBJ-style ``uv (N, 2)``: ``x = u W``, ``y = (1 - v) H``."""
    uv = np.asarray(uv, dtype=np.float64)
    return np.stack([uv[:, 0] * width, (1.0 - uv[:, 1]) * height], -1)


def rasterize_uv(
    uv: np.ndarray, faces: np.ndarray, height: int, width: int, max_candidates: int = 1 << 21
) -> tuple[np.ndarray, np.ndarray]:
    """Which uv triangle covers each texel centre (module docstring, step 2).

    ``uv (V, 2)`` OBJ-style, ``faces (F, 3)``. Returns ``face (H, W)`` int64 (``-1``: no triangle)
    and ``bary (H, W, 3)`` float64 (the texel centre is ``sum_k bary_k uv[face_k]``). A texel centre
    on an edge shared by two triangles takes one of them (both give the same point). Triangles are
    processed in chunks of at most ``max_candidates`` bounding-box texels (numpy, vectorised).
    """
    faces = np.asarray(faces, dtype=np.int64)
    px = uv_to_pixels(uv, height, width)[faces]  # (F, 3, 2)
    # texel centres c = index + 0.5 inside the triangle's bounding box, clipped to the image
    lo = np.ceil(px.min(1) - 0.5).astype(np.int64)
    hi = np.floor(px.max(1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.array([width - 1, height - 1]))
    span = np.maximum(hi - lo + 1, 0)  # (F, 2): columns, rows
    # twice the signed area; degenerate triangles cover nothing
    e1, e2 = px[:, 1] - px[:, 0], px[:, 2] - px[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    count = np.where(np.abs(area2) > 1e-12, span[:, 0] * span[:, 1], 0)
    face_img = np.full(height * width, -1, dtype=np.int64)
    bary_img = np.zeros((height * width, 3), dtype=np.float64)
    ends = np.cumsum(count)
    start = 0
    while start < len(faces):
        # the chunk ends where its candidate count passes max_candidates (at least one triangle)
        base = ends[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(ends, base + max_candidates, side="right")), start + 1)
        ids = np.arange(start, stop)
        ids = ids[count[ids] > 0]
        start = stop
        if len(ids) == 0:
            continue
        n = count[ids]
        tri = np.repeat(ids, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        col = lo[tri, 0] + local % span[tri, 0]
        row = lo[tri, 1] + local // span[tri, 0]
        # barycentrics: centre - p0 = b1 e1 + b2 e2, solved with 2D cross products
        dx, dy = col + 0.5 - px[tri, 0, 0], row + 0.5 - px[tri, 0, 1]
        b1 = (dx * e2[tri, 1] - dy * e2[tri, 0]) / area2[tri]
        b2 = (e1[tri, 0] * dy - e1[tri, 1] * dx) / area2[tri]
        b = np.stack([1.0 - b1 - b2, b1, b2], -1)
        inside = (b >= -1e-9).all(-1)
        texel = row[inside] * width + col[inside]
        face_img[texel] = tri[inside]
        bary_img[texel] = b[inside]
    return face_img.reshape(height, width), bary_img.reshape(height, width, 3)


def dilate(image: np.ndarray, filled: np.ndarray, rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the filled region of ``image (H, W, C)`` by ``rings`` texel rings: each ring, every empty
    texel with a filled 8-neighbour gets the mean of its filled 8-neighbours. Returns the new image
    and mask (copies)."""
    image, filled = image.copy(), filled.copy()
    h, w = filled.shape
    for _ in range(rings):
        pad_img = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        pad_mask = np.pad(filled.astype(np.float64), 1)
        total = np.zeros_like(image)
        count = np.zeros((h, w))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    total += pad_img[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                    count += pad_mask[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        grow = ~filled & (count > 0)
        if not grow.any():
            break
        image[grow] = total[grow] / count[grow][:, None]
        filled = filled | grow
    return image, filled


@torch.no_grad()
def bake_texture(
    mesh: trimesh.Trimesh,
    uv: np.ndarray,
    colour_fn,
    size: int = 1024,
    padding: int = 4,
    chunk: int = 65536,
    device=None,
) -> np.ndarray:
    """The ``(size, size, 3)`` float32 texture in [0, 1] (row 0 at the top) of ``colour_fn`` over
    ``mesh`` with OBJ-style ``uv (V, 2)`` (module docstring, step 3).

    ``colour_fn(points (N, 3) float32 tensor on device) -> (N, 3)`` in [0, 1] (clamped), called on
    chunks of ``chunk`` texels; the points are world positions on the mesh's triangles.
    """
    if size < 1 or padding < 0:
        raise UserError(f"texture size {size} must be >= 1 and padding {padding} >= 0")
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(uv) != len(verts):
        raise UserError(f"uv has {len(uv)} rows but the mesh has {len(verts)} vertices; unwrap the mesh first")
    face, bary = rasterize_uv(uv, faces, size, size)
    covered = face >= 0
    tri = face[covered]
    points = (bary[covered][..., None] * verts[faces[tri]]).sum(1)  # (N, 3)
    pts = torch.as_tensor(points, dtype=torch.float32, device=device)
    colours = [colour_fn(p).float().clamp(0, 1).cpu() for p in pts.split(chunk)] if len(pts) else []
    image = np.zeros((size, size, 3), dtype=np.float64)
    if colours:
        image[covered] = torch.cat(colours).double().numpy()
    image, filled = dilate(image, covered, padding)
    image[~filled] = image[covered].mean(0) if covered.any() else 0.5
    return image.astype(np.float32)


def sample_texture(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples ``(N, C)`` float64 of ``image (H, W, C)`` (row 0 at the top) at OBJ-style
    ``uv (N, 2)``, clamped at the image's edges: at pixel coordinates ``(x, y)``
    (:func:`uv_to_pixels`) the four texels around ``(x - 0.5, y - 0.5)`` weighted by the fractions."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[..., None]
    h, w = image.shape[:2]
    xy = uv_to_pixels(uv, h, w) - 0.5
    x0, y0 = np.floor(xy[:, 0]), np.floor(xy[:, 1])
    fx, fy = (xy[:, 0] - x0)[:, None], (xy[:, 1] - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    top = image[ya, xa] * (1 - fx) + image[ya, xb] * fx
    bottom = image[yb, xa] * (1 - fx) + image[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def welded_vertex_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Smooth vertex normals ``(V, 3)`` of ``mesh`` as if the vertices at the same position were one:
    trimesh's vertex normals of the mesh welded by position, given to every copy, so a mesh cut
    along uv seams shades as the uncut surface."""
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    _, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    welded = trimesh.Trimesh(verts[first], inverse[np.asarray(mesh.faces)], process=False)
    return np.asarray(welded.vertex_normals)[inverse]


def is_textured(mesh) -> bool:
    """Whether ``mesh`` carries uvs and a texture image (``TextureVisuals`` with an image)."""
    visual = getattr(mesh, "visual", None)
    if not isinstance(visual, trimesh.visual.TextureVisuals) or visual.uv is None:
        return False
    material = visual.material
    return getattr(material, "baseColorTexture", None) is not None or getattr(material, "image", None) is not None


def texture_image(mesh, required: bool = True) -> np.ndarray | None:
    """The base colour of a textured mesh as a float64 ``(H, W, 3)`` image in [0, 1] (row 0 at the
    top): a PBR material's ``baseColorTexture`` times its ``baseColorFactor``, or a simple
    material's image (OBJ: ``map_Kd``)."""
    material = getattr(getattr(mesh, "visual", None), "material", None)
    image = getattr(material, "baseColorTexture", None)
    factor = getattr(material, "baseColorFactor", None)
    if image is None:
        image, factor = getattr(material, "image", None), None
    if image is None:
        if required:
            raise UserError("the mesh has no texture image; bake one with dream3d.export.texture.textured_mesh")
        return None
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if factor is not None:
        rgb = rgb * (np.asarray(factor, dtype=np.float64)[:3] / 255.0)
    return rgb


def textured_mesh(mesh: trimesh.Trimesh, colour_fn, size: int = 1024, padding: int = 4, device=None) -> trimesh.Trimesh:
    """``mesh`` (world frame) unwrapped and textured with ``colour_fn`` baked into a ``size x size``
    image (module docstring, steps 1-4). ``metadata`` keeps ``uv_vmapping`` and ``uv_charts``."""
    if size < 8 or size > 8192:
        raise UserError(f"texture size {size} must be in [8, 8192]")
    split, uv = unwrap(mesh, size, padding)
    image = bake_texture(split, uv, colour_fn, size, padding, device=device)
    pil = Image.fromarray(np.round(image * 255.0).astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(
        name="baked", baseColorTexture=pil, metallicFactor=0.0, roughnessFactor=1.0
    )
    out = trimesh.Trimesh(
        split.vertices,
        split.faces,
        vertex_normals=welded_vertex_normals(split),
        visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
        process=False,
    )
    out.metadata.update(split.metadata)
    return out


def welded_vertex_colours(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A textured mesh as a vertex-coloured one: the copies of a vertex cut apart at uv seams are
    welded back into one vertex (same position), whose colour is the mean of the texture's bilinear
    samples at the copies' uvs, each weighted by the area of its faces (so a copy used only by
    zero-area faces, see :func:`unwrap`, counts only when every copy is such); RGBA uint8, opaque."""
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    _, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rgb = sample_texture(texture_image(mesh), np.asarray(mesh.visual.uv))
    weight = np.zeros(len(verts))
    np.add.at(weight, faces.reshape(-1), np.repeat(np.asarray(mesh.area_faces, dtype=np.float64), 3))
    weight = weight + 1e-30  # copies without area still count where nothing else does
    total = np.zeros((len(first), 3))
    np.add.at(total, inverse, rgb * weight[:, None])
    rgb = total / np.bincount(inverse, weights=weight, minlength=len(first))[:, None]
    rgba = np.concatenate([np.round(np.clip(rgb, 0, 1) * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    return trimesh.Trimesh(verts[first], inverse[faces], vertex_colors=rgba, process=False)
