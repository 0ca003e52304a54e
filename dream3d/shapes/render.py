"""Ray-cast renders of shapes-world objects and scenes: shaded RGB, albedo, mask, depth, normals.

How a pixel is made:

1. One ray per (sub)pixel centre of the :class:`~dream3d.shapes.camera.Camera`.
2. open3d's ``RaycastingScene`` finds the first hit on the cached meshes
   (:mod:`dream3d.shapes.meshes`), placed by each object's :class:`Placement` (position, uniform
   scale, yaw about +Z). The open3d scene of a given set of placements is cached.
3. The hit is snapped onto the exact surface by a Newton step on the object's exact SDF, and the
   normal is the SDF gradient (central differences), so depth and shading do not show facets.
   A :class:`Plane` (stereo scenes) is intersected analytically.
4. Shading: the project's one rule (:func:`dream3d.renderers.materials.lambert`), Lambertian plus
   ambient, ``rgb = albedo * (0.4 + 0.6 * max(0, n . l))``. ``l`` is, by default, a headlight (a point light at the camera centre: ``l`` = direction from the
   surface point to the camera), or a fixed world direction (towards the light) when ``light`` is
   given; the latter makes colours view-independent, as stereo scenes need.
5. Background compositing with a solid colour (default white) where no surface is hit.
6. Supersampling ``ss``: render at ``ss`` times the size and box-downsample.

Outputs (numpy, see :class:`RenderOutput`): ``depth`` is z-depth (distance along the camera's
optical axis, the depth stereo disparity uses) and is ``inf`` where no surface is hit, so that
``focal * baseline / depth`` is 0 there and a forgotten mask fails loudly instead of averaging
zeros. Normals are world-space unit vectors (zero where empty). Colours are linear RGB.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import Camera
from ..errors import UserError
from ..renderers.materials import lambert
from .meshes import shape_mesh
from .objects import COLOURS, SDFS, ShapeObject, check_shape, parse_prompt

_GRAD_EPS = 1e-5


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (N, 3) arrays (faster than ``(a * b).sum(-1)``)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _rows_times(rows: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``rows @ m`` for (N, 3) rows and a 3x3 ``m``, written out (numpy's matmul is slow here)."""
    return rows[:, 0:1] * m[0] + rows[:, 1:2] * m[1] + rows[:, 2:3] * m[2]


@dataclass(frozen=True)
class Placement:
    """A shape placed in the world: ``x_world = position + scale * Rz(yaw) @ x_object``."""

    shape: str
    albedo: tuple[float, float, float] = (0.5, 0.5, 0.5)
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    yaw_deg: float = 0.0

    def __post_init__(self):
        check_shape(self.shape)
        if not self.scale > 0:
            raise UserError(f"object scale {self.scale} must be > 0")
        for name in ("albedo", "position"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise UserError(f"{name} must have 3 components, got {len(value)}")
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, obj: ShapeObject, **kwargs) -> Placement:
        """Place a :class:`ShapeObject` (its shape and albedo)."""
        return cls(obj.shape, obj.albedo, **kwargs)

    @property
    def rotation(self) -> np.ndarray:
        """3x3 rotation about +Z by ``yaw_deg`` (object to world)."""
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def is_identity(self) -> bool:
        return self.position == (0.0, 0.0, 0.0) and self.scale == 1.0 and self.yaw_deg % 360.0 == 0.0

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) to the object's own frame (row vectors: ``(p - t) @ R / s``)."""
        if self.is_identity:
            return points
        return _rows_times(points - np.asarray(self.position), self.rotation / self.scale)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Exact signed distance in world units from world ``points`` (N, 3)."""
        return self.scale * SDFS[self.shape](self.to_local(points))

    def sdf_gradient(self, points: np.ndarray) -> np.ndarray:
        """World-space gradient of :meth:`sdf` by central differences of the exact SDF."""
        local = self.to_local(points)
        f = SDFS[self.shape]
        grad = np.empty_like(local)
        for k in range(3):  # three axes, not pixels
            step = np.zeros(3)
            step[k] = _GRAD_EPS
            grad[:, k] = (f(local + step) - f(local - step)) / (2 * _GRAD_EPS)
        return grad if self.is_identity else _rows_times(grad, self.rotation.T)

    def world_vertices(self, vertices: np.ndarray) -> np.ndarray:
        return np.asarray(self.position) + self.scale * vertices @ self.rotation.T


@dataclass(frozen=True, eq=False)
class Plane:
    """An infinite plane through ``point`` with normal ``normal``; ``albedo`` is a constant
    linear-RGB colour or a function of world points (N, 3) -> albedo (N, 3)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    albedo: tuple[float, float, float] | Callable[[np.ndarray], np.ndarray] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Scene:
    """Several placed objects and an optional plane."""

    objects: tuple[Placement, ...]
    plane: Plane | None = None

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))


@dataclass
class RenderOutput:
    """One render. Arrays are numpy, ``H x W`` at the camera's resolution.

    - ``rgb`` (H, W, 3) float32: shaded linear RGB composited over the background.
    - ``albedo`` (H, W, 3) float32: unshaded surface colour composited over the background.
    - ``alpha`` (H, W) float32: fraction of sub-samples that hit a surface (0 or 1 when ``ss=1``).
    - ``mask`` (H, W) bool: ``alpha >= 0.5``.
    - ``depth`` (H, W) float32: z-depth, mean over the pixel's hit sub-samples; ``inf`` where empty.
    - ``normal`` (H, W, 3) float32: world-space unit normal (renormalised mean); zero where empty.
    - ``object_id`` (H, W) int32: index into the scene's objects at the pixel centre sample,
      ``len(objects)`` for the plane, -1 for background (only the centre of the sub-sample grid
      nearest the pixel centre is used when ``ss > 1``).
    """

    rgb: np.ndarray
    albedo: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    object_id: np.ndarray = field(repr=False)


@dataclass
class Hits:
    """First hits of a batch of rays (N of them); ``index`` is -1 for a miss and
    ``len(scene.objects)`` for the plane; ``t`` is the distance along the unit direction (inf on
    a miss); ``points``, ``normals`` (world, unit, facing the ray) and ``albedo`` are (N, 3)."""

    t: np.ndarray
    index: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray


@functools.lru_cache(maxsize=16)
def _raycaster(objects: tuple[Placement, ...]):
    """An open3d ``RaycastingScene`` holding the meshes of ``objects`` (geometry id = index)."""
    import open3d as o3d  # noqa: PLC0415 - deferred: ~0.6 s to import; `dream3d txt2mesh` imports this package but never renders it

    scene = o3d.t.geometry.RaycastingScene()
    for k, placement in enumerate(objects):
        mesh = shape_mesh(placement.shape)
        vertices = placement.world_vertices(np.asarray(mesh.vertices)).astype(np.float32)
        gid = scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
        assert gid == k
    return scene


def trace(scene: Scene, origins: np.ndarray, directions: np.ndarray, with_albedo: bool = True) -> Hits:
    """First hits of rays ``origins``/``directions`` (N, 3, unit directions) in ``scene``.

    ``with_albedo=False`` skips evaluating the plane's texture (``albedo`` is then zero there)."""
    import open3d as o3d  # noqa: PLC0415 - deferred: ~0.6 s to import; `dream3d txt2mesh` imports this package but never renders it

    origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    n = len(origins)
    t = np.full(n, np.inf)
    index = np.full(n, -1, dtype=np.int32)
    normals = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    if scene.objects:
        rays = np.concatenate([origins, directions], 1).astype(np.float32)
        out = _raycaster(scene.objects).cast_rays(o3d.core.Tensor(rays))
        t_mesh = out["t_hit"].numpy().astype(np.float64)
        gid = out["geometry_ids"].numpy()
        hit = np.isfinite(t_mesh)
        t[hit] = t_mesh[hit]
        index[hit] = gid[hit].astype(np.int32)
        for k, placement in enumerate(scene.objects):  # a few objects, each vectorised
            sel = np.flatnonzero(index == k)
            if sel.size == 0:
                continue
            o, d = origins[sel], directions[sel]
            p = o + t[sel, None] * d
            g = placement.sdf_gradient(p)
            # One Newton step along the ray onto the exact surface (the mesh is within ~2e-4 of it,
            # so one step leaves ~1e-8); skipped on grazing hits, where it is unstable.
            g_dot_d = _dot(g, d)
            ok = np.abs(g_dot_d) > 0.1
            step = np.where(ok, placement.sdf(p) / np.where(ok, g_dot_d, 1.0), 0.0)
            t[sel] -= np.clip(step, -0.01 * placement.scale, 0.01 * placement.scale)
            normals[sel] = g / np.linalg.norm(g, axis=-1, keepdims=True).clip(min=1e-12)
            albedo[sel] = placement.albedo
    if scene.plane is not None:
        p0 = np.asarray(scene.plane.point, dtype=np.float64)
        pn = np.asarray(scene.plane.normal, dtype=np.float64)
        pn = pn / np.linalg.norm(pn)
        denom = _dot(directions, pn)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_plane = _dot(p0 - origins, pn) / denom
        on_plane = (t_plane > 0) & (t_plane < t)
        t[on_plane] = t_plane[on_plane]
        index[on_plane] = len(scene.objects)
        normals[on_plane] = np.where(denom[on_plane, None] > 0, -pn, pn)  # face the ray
    points = origins + np.where(np.isfinite(t), t, 0.0)[:, None] * directions
    if scene.plane is not None and with_albedo:
        on_plane = index == len(scene.objects)
        if callable(scene.plane.albedo):
            albedo[on_plane] = scene.plane.albedo(points[on_plane])
        else:
            albedo[on_plane] = scene.plane.albedo
    return Hits(t=t, index=index, points=points, normals=normals, albedo=albedo)


def _as_scene(subject) -> Scene:
    if isinstance(subject, Scene):
        return subject
    if isinstance(subject, ShapeObject):
        return Scene((Placement.of(subject),))
    if isinstance(subject, Placement):
        return Scene((subject,))
    if isinstance(subject, str):
        parsed = parse_prompt(subject)
        if parsed is None:
            raise UserError(f"cannot render '{subject}'; pass a ShapeObject, a Scene or a prompt like 'a red cube'")
        return Scene((Placement(parsed[0], COLOURS[parsed[1]]),))
    raise UserError(f"cannot render a {type(subject).__name__}; pass a ShapeObject, a Placement or a Scene")


def _box_down(x: np.ndarray, ss: int) -> np.ndarray:
    """Mean over ss x ss blocks of an (H*ss, W*ss, ...) array."""
    if ss == 1:
        return x
    total = sum(x[a::ss, b::ss] for a in range(ss) for b in range(ss))  # ss^2 strided views
    return total / (ss * ss)


def render(
    subject,
    camera: Camera,
    *,
    background=(1.0, 1.0, 1.0),
    ss: int = 1,
    light=None,
) -> RenderOutput:
    """Render a :class:`ShapeObject` (or a prompt, a :class:`Placement`, a :class:`Scene`).

    ``background``: solid linear-RGB colour (or one grey level) where nothing is hit.
    ``ss``: supersampling factor (render at ``ss``x the size, box-downsample).
    ``light``: ``None`` for a headlight at the camera, else a world direction towards the light.
    """
    if int(ss) != ss or ss < 1:
        raise UserError(f"supersampling factor ss={ss} must be a positive integer")
    ss = int(ss)
    scene = _as_scene(subject)
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,))
    big = camera.resized(camera.height * ss, camera.width * ss)
    origins, directions = big.rays_numpy()
    shape = directions.shape[:2]
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    hits = trace(scene, origins, directions)
    hit = hits.index >= 0

    if light is None:
        light_dir = -directions
    else:
        light_dir = np.asarray(light, dtype=np.float64)
        light_dir = light_dir / np.linalg.norm(light_dir)
    rgb = np.where(hit[:, None], lambert(hits.albedo, hits.normals, light_dir), bg)
    albedo = np.where(hit[:, None], hits.albedo, bg)
    forward = -camera.pose(torch.float64)[:3, 2].numpy()
    z = np.where(hit, hits.t * _dot(directions, forward), 0.0)

    h = hit.reshape(shape).astype(np.float64)
    alpha = _box_down(h, ss)
    mask = alpha >= 0.5
    count = _box_down(h, ss) * ss * ss
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(mask, _box_down(z.reshape(shape), ss) * ss * ss / count, np.inf)
    nsum = _box_down(hits.normals.reshape(*shape, 3), ss)
    norm = np.linalg.norm(nsum, axis=-1, keepdims=True)
    normal = np.where(mask[..., None] & (norm > 1e-12), nsum / np.maximum(norm, 1e-12), 0.0)
    centre = ss // 2
    object_id = hits.index.reshape(shape)[centre::ss, centre::ss]
    return RenderOutput(
        rgb=_box_down(rgb.reshape(*shape, 3), ss).astype(np.float32),
        albedo=_box_down(albedo.reshape(*shape, 3), ss).astype(np.float32),
        alpha=alpha.astype(np.float32),
        mask=mask,
        depth=depth.astype(np.float32),
        normal=normal.astype(np.float32),
        object_id=object_id.astype(np.int32),
    )


def to_uint8(img: np.ndarray, srgb: bool = False) -> np.ndarray:
    """Float image in [0, 1] to uint8 (rounded, clipped). Linear values are stored as they are
    unless ``srgb=True`` applies the sRGB transfer curve (for display)."""
    img = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
    if srgb:
        img = np.where(img <= 0.0031308, 12.92 * img, 1.055 * img ** (1 / 2.4) - 0.055)
    return np.round(img * 255.0).astype(np.uint8)
