"""Stereo scenes with exact ground truth: a textured back plane and 2 to 5 shapes-world objects.

Layout of ``make_stereo_scene(seed)`` (all random draws from one ``numpy.random.Generator``):

- Left camera: the project's look-at camera with elevation in [0, 20], any azimuth, distance 3 and a
  vertical field of view of 45 degrees (focal 309 px at height 256). The right camera is
  :func:`~dream3d.cameras.stereo_pair` of it: moved by ``baseline`` along its own +X axis.
- Objects: 2 to 5 of the 30 objects at uniform scale in [0.6, 1.3], a random yaw about +Z (they
  stay upright), placed so that their centre projects inside the central 80% x 70% of the left
  image at z-depth between ``1 + bounding radius`` and 4.5 (so no surface is nearer than 1).
- Back plane: facing the camera, tilted up to 15 degrees, at z-depth ~5.5-7.5 on the optical axis
  and always behind every object; it covers the whole view of both cameras, so depth and
  disparity are finite everywhere. Its albedo is a procedural texture (three octaves of colour
  value noise times a checker) that is a function of the world position on the plane.
- Lighting: Lambertian with a FIXED world light (not a headlight), so a surface point has the
  same colour in both views and the right image is the exact re-rendering of the scene.

With the default baseline 0.2 at 256 x 512, disparities span roughly 6 to 62 px.
Images are rendered with ``ss`` x ``ss`` supersampling (anti-aliased); depth, disparity and
occlusion are point samples at pixel centres. Images are stored linear, as
:func:`dream3d.shapes.render.to_uint8` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import Camera, stereo_pair
from ..errors import UserError
from .objects import BOUNDING_RADIUS, COLOURS, SHAPES
from .render import Placement, Plane, Scene, render, to_uint8, trace

DEFAULT_BASELINE = 0.2
STEREO_FOV_DEG = 45.0
_CAMERA_DISTANCE = 3.0
_NEAREST_SURFACE = 1.0
_MAX_OBJECT_DEPTH = 4.5
_MAX_TILT_DEG = 15.0


@dataclass(frozen=True, eq=False)
class PlaneTexture:
    """Procedural albedo on a plane: a function of world position only.

    Plane coordinates ``(s, t) = ((p - origin) . e1, (p - origin) . e2)``; albedo =
    ``0.1 + 0.85 * noise(s, t) * checker(s, t)`` where ``noise`` is a weighted sum of smooth
    (smoothstep-interpolated) value noise with random RGB lattice values at three cell sizes and
    ``checker`` alternates 1 and 0.7 on squares of side ``checker_size``.
    """

    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    lattices: tuple[np.ndarray, ...]  # each (L, L, 3) in [0, 1]
    cell_sizes: tuple[float, ...] = (0.6, 0.25, 0.1)
    weights: tuple[float, ...] = (0.5, 0.3, 0.2)
    checker_size: float = 0.35

    @classmethod
    def random(cls, rng: np.random.Generator, origin, normal, lattice_size: int = 256) -> PlaneTexture:
        normal = np.asarray(normal, dtype=np.float64)
        helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        e1 = np.cross(helper, normal)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(normal, e1)
        lattices = tuple(rng.uniform(0.0, 1.0, (lattice_size, lattice_size, 3)).astype(np.float32) for _ in range(3))
        return cls(np.asarray(origin, dtype=np.float64), e1, e2, lattices)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        rel = np.asarray(points, dtype=np.float64) - self.origin
        # Plane coordinates in float64, the noise itself in float32 (it is a colour).
        s = (rel[:, 0] * self.e1[0] + rel[:, 1] * self.e1[1] + rel[:, 2] * self.e1[2]).astype(np.float32)
        t = (rel[:, 0] * self.e2[0] + rel[:, 1] * self.e2[1] + rel[:, 2] * self.e2[2]).astype(np.float32)
        noise = np.zeros((len(rel), 3), dtype=np.float32)
        for lattice, cell, weight in zip(self.lattices, self.cell_sizes, self.weights):  # 3 octaves
            noise += np.float32(weight) * _value_noise(lattice, s / np.float32(cell), t / np.float32(cell))
        parity = (np.floor(s / self.checker_size) + np.floor(t / self.checker_size)) % 2
        checker = np.float32(1.0) - np.float32(0.3) * parity
        return np.float32(0.1) + np.float32(0.85) * noise * checker[:, None]


def _value_noise(lattice: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smoothstep-interpolated lattice values at continuous lattice coordinates (wrapping)."""
    size = lattice.shape[0]
    table = lattice.reshape(size * size, 3)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = (fx * fx * (3 - 2 * fx))[:, None], (fy * fy * (3 - 2 * fy))[:, None]
    i0, j0 = x0.astype(np.int64) % size, y0.astype(np.int64) % size
    i1, j1 = (i0 + 1) % size, (j0 + 1) % size
    c00, c10 = np.take(table, i0 * size + j0, axis=0), np.take(table, i1 * size + j0, axis=0)
    c01, c11 = np.take(table, i0 * size + j1, axis=0), np.take(table, i1 * size + j1, axis=0)
    top = c00 + (c10 - c00) * fx
    bottom = c01 + (c11 - c01) * fx
    return top + (bottom - top) * fy


@dataclass
class StereoScene:
    """A rendered stereo pair with exact ground truth (arrays H x W).

    - ``left``, ``right``: uint8 RGB images (linear values).
    - ``disparity``: float32, left-referenced, ``focal_px * baseline / depth`` in pixels; left
      pixel column ``x`` shows the same surface point as right column ``x - disparity``.
    - ``depth``: float32 z-depth of the left view (finite everywhere: the plane fills the view).
    - ``right_disparity``: float32, right-referenced (right column ``x`` matches left ``x + d``).
    - ``occlusion``: bool, True where the left pixel's surface point is visible in the right view
      (unoccluded, from the true geometry, and inside the right image).
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    depth: np.ndarray
    right_disparity: np.ndarray
    occlusion: np.ndarray
    focal_px: float
    baseline: float
    left_camera: Camera
    right_camera: Camera
    right_depth: np.ndarray = field(repr=False, default=None)
    scene: Scene = field(repr=False, default=None)
    light: tuple[float, float, float] = field(repr=False, default=None)
    seed: int | None = None


def random_layout(rng: np.random.Generator, camera: Camera) -> Scene:
    """Draw the objects and the textured back plane of a stereo scene for ``camera`` (left view)."""
    m = camera.pose(torch.float64).numpy()
    o, right, up, fwd = m[:3, 3], m[:3, 0], m[:3, 1], -m[:3, 2]
    f = camera.focal_px
    objects = []
    for _ in range(int(rng.integers(2, 6))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        scale = float(rng.uniform(0.6, 1.3))
        z = float(rng.uniform(_NEAREST_SURFACE + BOUNDING_RADIUS[shape] * scale, _MAX_OBJECT_DEPTH))
        u = rng.uniform(0.1, 0.9) * camera.width
        v = rng.uniform(0.15, 0.85) * camera.height
        x_c, y_c = (u - 0.5 * camera.width) / f * z, -(v - 0.5 * camera.height) / f * z
        centre = o + x_c * right + y_c * up + z * fwd
        yaw = float(rng.uniform(0.0, 360.0))
        objects.append(Placement(shape, COLOURS[colour], tuple(centre.tolist()), scale, yaw))

    tilt = np.radians(rng.uniform(0.0, _MAX_TILT_DEG))
    phi = rng.uniform(0.0, 2 * np.pi)
    normal = -fwd * np.cos(tilt) + (np.cos(phi) * right + np.sin(phi) * up) * np.sin(tilt)
    # Plane point o + z_plane * fwd; keep every object's bounding ball 0.15 in front of it.
    needed = [
        (BOUNDING_RADIUS[p.shape] * p.scale + 0.15 - normal @ (np.asarray(p.position) - o)) / np.cos(tilt)
        for p in objects
    ]
    z_plane = max(float(rng.uniform(5.5, 7.5)), *needed)
    point = o + z_plane * fwd
    texture = PlaneTexture.random(rng, point, normal)
    plane = Plane(tuple(point.tolist()), tuple(normal.tolist()), texture)
    return Scene(tuple(objects), plane)


def make_stereo_scene(
    seed: int | np.random.Generator,
    height: int = 256,
    width: int = 512,
    baseline: float = DEFAULT_BASELINE,
    *,
    ss: int = 2,
) -> StereoScene:
    """Lay out, render and measure one stereo scene (see the module docstring for the layout).

    ``seed``: an int or a ``numpy.random.Generator`` (the whole scene follows from it).
    ``baseline``: world units along the left camera's +X axis. ``ss``: image supersampling.
    """
    if not baseline > 0:
        raise UserError(f"stereo baseline {baseline} must be > 0 (world units)")
    if int(height) != height or int(width) != width or height < 8 or width < 8:
        raise UserError(f"stereo image size {height}x{width} must be integers of at least 8")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    left_cam = Camera(
        elevation_deg=float(rng.uniform(0.0, 20.0)),
        azimuth_deg=float(180.0 - 360.0 * rng.uniform()),
        distance=_CAMERA_DISTANCE,
        fov_deg=STEREO_FOV_DEG,
        height=int(height),
        width=int(width),
    )
    right_cam = stereo_pair(left_cam, baseline)
    scene = random_layout(rng, left_cam)
    m = left_cam.pose(torch.float64).numpy()
    # Fixed world light (direction towards it): behind the left camera, above and to the right.
    light = m[:3, 2] + 0.8 * np.array([0.0, 0.0, 1.0]) + 0.3 * m[:3, 0]
    light = light / np.linalg.norm(light)

    left_img = render(scene, left_cam, ss=ss, light=light).rgb
    right_img = render(scene, right_cam, ss=ss, light=light).rgb

    f = left_cam.focal_px
    fwd = -m[:3, 2]
    depths, points = [], []
    for cam in (left_cam, right_cam):  # exact point samples at pixel centres
        origins, dirs = cam.rays_numpy()
        hits = trace(scene, origins.reshape(-1, 3), dirs.reshape(-1, 3), with_albedo=False)
        if not (hits.index >= 0).all():  # pragma: no cover - the plane always covers the view
            raise RuntimeError("a stereo ray missed the back plane; the scene layout is broken")
        depths.append((hits.t * (dirs.reshape(-1, 3) @ fwd)).reshape(height, width))
        points.append(hits.points)
    depth_left, depth_right = depths

    # Occlusion: a left point is visible on the right if the ray from the right camera centre
    # towards it hits nothing nearer, and it projects inside the right image.
    o_r = right_cam.pose(torch.float64).numpy()[:3, 3]
    to_point = points[0] - o_r
    dist = np.linalg.norm(to_point, axis=-1)
    hits_r = trace(scene, np.broadcast_to(o_r, to_point.shape), to_point / dist[:, None], with_albedo=False)
    unoccluded = (hits_r.t >= dist * (1.0 - 1e-3)).reshape(height, width)
    disparity = f * baseline / depth_left
    column = np.arange(width) + 0.5
    in_view = (column[None, :] - disparity) >= 0.0

    return StereoScene(
        left=to_uint8(left_img),
        right=to_uint8(right_img),
        disparity=disparity.astype(np.float32),
        depth=depth_left.astype(np.float32),
        right_disparity=(f * baseline / depth_right).astype(np.float32),
        occlusion=unoccluded & in_view,
        focal_px=float(f),
        baseline=float(baseline),
        left_camera=left_cam,
        right_camera=right_cam,
        right_depth=depth_right.astype(np.float32),
        scene=scene,
        light=tuple(light.tolist()),
        seed=None if isinstance(seed, np.random.Generator) else int(seed),
    )
