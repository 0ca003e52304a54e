"""The project's one camera convention: spherical look-at cameras, poses, intrinsics, rays,
view words and random training cameras (``docs/cameras.md``).

World frame: right-handed, +Z up, objects at the origin.

Spherical parameters: elevation ``e`` (degrees above the XY plane, in [-90, 90]), azimuth ``a``
(degrees, counter-clockwise from +X towards +Y, reported wrapped to (-180, 180]), distance ``r``
and vertical field of view ``f``. The camera sits at ``target + r * (cos e cos a, cos e sin a,
sin e)`` and looks at ``target`` (the origin unless stated) with world +Z as up.

Camera axes (OpenGL / NeRF convention): the camera looks down its own -Z axis, +Y is up in the
image and +X is right. ``c2w`` (4x4 camera-to-world) holds these axes in its columns:
``c2w[:3, 0]`` = right, ``c2w[:3, 1]`` = up, ``c2w[:3, 2]`` = backward (= -viewing direction),
``c2w[:3, 3]`` = camera position. The right axis is ``(-sin a, cos a, 0)``, well defined even
straight overhead. ``w2c`` is its inverse.

Pixels: row ``i`` (downwards) and column ``j`` (rightwards) have their centre at
``(u, v) = (j + 0.5, i + 0.5)``. Square pixels; ``focal_px = 0.5 * height / tan(f / 2)`` (f is
the vertical field of view); the principal point is the image centre ``(width / 2, height / 2)``.
``intrinsics`` is the usual OpenCV matrix ``K``: it maps a camera-frame point ``(x, y, z)``
(OpenGL axes) to pixels as ``K @ (x, -y, -z)`` followed by division by the third component.
Depth is z-depth: the distance along the optical axis, ``-z`` in camera coordinates.

Training cameras (:func:`sample_cameras`, ranges in :class:`CameraRanges`): elevation uniform in
[-10, 45] degrees except a fraction (15%) of overhead views in (60, 80], azimuth uniform in
(-180, 180], distance in [1.5, 2.0], vertical field of view in [40, 70] degrees (DreamFusion's
ranges, which the bundled prior was trained on). View words (DreamFusion / threestudio):
"overhead" if e > 60, else "front" if |a| < 45, "back" if |a| > 135, else "side".

:class:`Camera` is one camera (frozen, plain floats); :class:`Cameras` a batch of one image size as
tensors, what renderers and guidance take.

Tensors are float32 unless a ``dtype`` is given; computations run in float64 first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .errors import UserError

VIEW_WORDS = ("front", "side", "back", "overhead")

# What a camera-conditioned prior sees of a camera (its UNet's class-embedding input), in order:
# elevation, azimuth with its 2nd and 4th harmonics (so that a view repeating every 180 or 90
# degrees, as a cube's does, is a linear function of the features), distance and field of view
# scaled so that the training ranges map to [-1, 1], and 1 for a camera (all zeros: no camera, any view).
AZIMUTH_HARMONICS = (1, 2, 4)
CAMERA_FEATURES = (
    "sin_elevation",
    "cos_elevation",
    *(f"{f}_azimuth_{k}" for k in AZIMUTH_HARMONICS for f in ("sin", "cos")),
    "distance",
    "fov",
    "present",
)


def camera_features(elevation_deg, azimuth_deg, distance, fov_deg) -> torch.Tensor:
    """``(B, 11)`` float32 :data:`CAMERA_FEATURES` of cameras given by ``(B,)`` tensors or sequences."""
    e = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64).reshape(-1))
    a = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1))
    r = torch.as_tensor(distance, dtype=torch.float64).reshape(-1)
    f = torch.as_tensor(fov_deg, dtype=torch.float64).reshape(-1)
    harmonics = [g(k * a) for k in AZIMUTH_HARMONICS for g in (torch.sin, torch.cos)]
    features = [e.sin(), e.cos(), *harmonics, (r - 1.75) / 0.25, (f - 55.0) / 15.0, torch.ones_like(e)]
    return torch.stack(features, -1).float()


def mirror_features(features: torch.Tensor) -> torch.Tensor:
    """The features of the mirrored view: mirroring an image left-right is the view from the negated
    azimuth (a shapes-world fact the prior's training uses), so every ``sin_azimuth_k`` changes sign."""
    sign = torch.tensor([-1.0 if n.startswith("sin_azimuth") else 1.0 for n in CAMERA_FEATURES], device=features.device)
    return features * sign


def wrap_azimuth(azim_deg):
    """Wrap degrees into (-180, 180] (works on floats, numpy arrays and tensors)."""
    return 180.0 - (180.0 - azim_deg) % 360.0


def view_word(elev_deg: float, azim_deg: float) -> str:
    """The view word: "overhead" if e > 60; else "front" if |a| < 45, "back" if |a| > 135,
    else "side" (``a`` wrapped to (-180, 180] first; the boundaries 45 and 135 are "side")."""
    if elev_deg > 60.0:
        return "overhead"
    a = abs(wrap_azimuth(float(azim_deg)))
    if a < 45.0:
        return "front"
    if a > 135.0:
        return "back"
    return "side"


def spherical_to_c2w(elev_deg, azim_deg, distance, target=None, dtype=torch.float32) -> torch.Tensor:
    """Look-at camera-to-world matrices (OpenGL axes) for batched spherical parameters.

    ``elev_deg``, ``azim_deg``, ``distance``: floats or tensors of shape ``(B,)``; ``target``:
    ``(3,)`` or ``(B, 3)``, default the origin. Returns ``(4, 4)`` for scalar input, else ``(B, 4, 4)``.
    """
    scalar = all(not isinstance(x, torch.Tensor) or x.ndim == 0 for x in (elev_deg, azim_deg, distance))
    e = torch.deg2rad(torch.as_tensor(elev_deg, dtype=torch.float64)).reshape(-1)
    a = torch.deg2rad(torch.as_tensor(azim_deg, dtype=torch.float64)).reshape(-1)
    r = torch.as_tensor(distance, dtype=torch.float64).reshape(-1)
    e, a, r = torch.broadcast_tensors(e, a, r)
    back = torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], -1)  # unit, camera +Z
    right = torch.stack([-a.sin(), a.cos(), torch.zeros_like(a)], -1)  # camera +X
    up = torch.linalg.cross(back, right)  # camera +Y = Z x X
    position = back * r[:, None]
    if target is not None:
        position = position + torch.as_tensor(target, dtype=torch.float64).reshape(-1, 3)
    c2w = torch.zeros(e.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, back, position
    c2w[:, 3, 3] = 1.0
    c2w = c2w.to(dtype)
    return c2w[0] if scalar else c2w


def c2w_to_spherical(c2w, target=(0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """(elevation_deg, azimuth_deg, distance) of a look-at pose about ``target``; inverts
    :func:`spherical_to_c2w`. Azimuth is wrapped to (-180, 180]; straight up or down (where the
    position has no azimuth) it is read from the camera's right axis."""
    m = torch.as_tensor(c2w, dtype=torch.float64)
    if m.shape != (4, 4):
        raise UserError(f"c2w must be a 4x4 matrix, got shape {tuple(m.shape)}; pass one camera pose")
    offset = m[:3, 3] - torch.as_tensor(target, dtype=torch.float64)
    dist = float(offset.norm())
    if dist == 0.0:
        raise UserError("the camera sits on its target; a look-at pose needs a distance > 0")
    elev = math.degrees(math.asin(max(-1.0, min(1.0, float(offset[2]) / dist))))
    if math.hypot(float(offset[0]), float(offset[1])) > 1e-9 * dist:
        azim = math.degrees(math.atan2(float(offset[1]), float(offset[0])))
    else:  # right axis = (-sin a, cos a, 0)
        azim = math.degrees(math.atan2(-float(m[0, 0]), float(m[1, 0])))
    return elev, float(wrap_azimuth(azim)), dist


def focal_from_fov(fov_deg, height):
    """Focal length in pixels for a vertical field of view: ``0.5 * height / tan(fov / 2)``."""
    if isinstance(fov_deg, torch.Tensor):
        return 0.5 * height / torch.tan(torch.deg2rad(fov_deg) / 2)
    return 0.5 * height / math.tan(math.radians(fov_deg) / 2)


def rays_batch(c2w, focal, height: int, width: int, normalize: bool = True):
    """Rays through every pixel centre of a batch of cameras.

    ``c2w``: ``(B, 4, 4)`` or ``(4, 4)``, a torch tensor (or a numpy array, then numpy comes back);
    ``focal``: pixels, a float or ``(B,)``. Returns ``(origins, directions)``, each ``(B, H, W, 3)``
    (or ``(H, W, 3)`` for one pose) in ``c2w``'s dtype and device. Directions are unit vectors, or
    with ``normalize=False`` scaled so that their component along the viewing direction is 1 (then
    ``t`` along them is z-depth).
    """
    if isinstance(c2w, torch.Tensor):
        focal = torch.as_tensor(focal, dtype=c2w.dtype, device=c2w.device)
        j = torch.arange(width, dtype=c2w.dtype, device=c2w.device)
        i = torch.arange(height, dtype=c2w.dtype, device=c2w.device)
    else:
        c2w = np.asarray(c2w)
        focal = np.asarray(focal, dtype=c2w.dtype)
        j, i = np.arange(width, dtype=c2w.dtype), np.arange(height, dtype=c2w.dtype)
    single = c2w.ndim == 2
    c2w = c2w.reshape(-1, 4, 4)
    focal = focal.reshape(-1, 1)  # (B or 1, 1)
    x = ((j + 0.5 - 0.5 * width)[None, :] / focal)[:, None, :, None]  # (B, 1, W, 1), camera frame
    y = (-(i + 0.5 - 0.5 * height)[None, :] / focal)[:, :, None, None]  # (B, H, 1, 1)
    axes = c2w[:, None, None, :3, :3]  # columns: right, up, backward
    directions = x * axes[..., 0] + y * axes[..., 1] - axes[..., 2]  # (B, H, W, 3)
    if normalize:
        d = directions
        directions = d / (d[..., 0:1] ** 2 + d[..., 1:2] ** 2 + d[..., 2:3] ** 2) ** 0.5
    origins = c2w[:, None, None, :3, 3]
    origins = (
        origins.expand_as(directions)
        if isinstance(origins, torch.Tensor)
        else np.broadcast_to(origins, directions.shape)
    )
    if single:
        return origins[0], directions[0]
    return origins, directions


@dataclass(frozen=True)
class Camera:
    """A pinhole camera orbiting ``target`` (default the origin), looking at it with +Z up.

    See the module docstring for the axis, pixel and depth conventions.
    """

    elevation_deg: float = 0.0
    azimuth_deg: float = 0.0
    distance: float = 2.0
    fov_deg: float = 50.0
    height: int = 128
    width: int = 128
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if not -90.0 <= self.elevation_deg <= 90.0:
            raise UserError(f"elevation {self.elevation_deg} is outside [-90, 90] degrees; pass a value in range")
        if not self.distance > 0:
            raise UserError(f"camera distance {self.distance} must be > 0")
        if not 0.0 < self.fov_deg < 180.0:
            raise UserError(f"field of view {self.fov_deg} must be in (0, 180) degrees")
        if int(self.height) != self.height or int(self.width) != self.width or self.height < 1 or self.width < 1:
            raise UserError(f"image size {self.height}x{self.width} must be positive integers")
        object.__setattr__(self, "target", tuple(float(t) for t in self.target))

    def pose(self, dtype=torch.float32) -> torch.Tensor:
        """Camera-to-world matrix in the given dtype (``c2w`` is ``pose(torch.float32)``)."""
        return spherical_to_c2w(self.elevation_deg, self.azimuth_deg, self.distance, self.target, dtype)

    @property
    def c2w(self) -> torch.Tensor:
        """4x4 camera-to-world (columns: right, up, backward, position)."""
        return self.pose()

    @property
    def w2c(self) -> torch.Tensor:
        """4x4 world-to-camera, the inverse of :attr:`c2w`."""
        m = self.pose(torch.float64)
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = m[:3, :3].T
        w2c[:3, 3] = -m[:3, :3].T @ m[:3, 3]
        return w2c.float()

    @property
    def spherical(self) -> tuple[float, float, float, float]:
        """``(elevation_deg, azimuth_deg, distance, fov_deg)``."""
        return self.elevation_deg, self.azimuth_deg, self.distance, self.fov_deg

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in world coordinates, shape (3,)."""
        return self.pose()[:3, 3]

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (vertical fov): ``0.5 * height / tan(fov / 2)``."""
        return focal_from_fov(self.fov_deg, self.height)

    @property
    def intrinsics(self) -> torch.Tensor:
        """3x3 OpenCV ``K`` (pixel centres at i + 0.5, principal point at the image centre)."""
        f = self.focal_px
        return torch.tensor([[f, 0.0, 0.5 * self.width], [0.0, f, 0.5 * self.height], [0.0, 0.0, 1.0]])

    @property
    def view_word(self) -> str:
        """ "front", "side", "back" or "overhead" (see :func:`view_word`)."""
        return view_word(self.elevation_deg, self.azimuth_deg)

    def rays(self, dtype=torch.float32, normalize: bool = True):
        """``(origins, directions)``, each ``(H, W, 3)`` torch: one ray per pixel centre, unit
        directions (see :func:`rays_batch`)."""
        origins, directions = self.rays_numpy(normalize)
        return torch.from_numpy(np.ascontiguousarray(origins)).to(dtype), torch.from_numpy(directions).to(dtype)

    def rays_numpy(self, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rays` as float64 numpy arrays (the renderer's input)."""
        return rays_batch(self.pose(torch.float64).numpy(), self.focal_px, self.height, self.width, normalize)

    def project(self, points) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points ``(..., 3)`` to pixel coordinates ``(u, v)`` (``(..., 2)``, column
        and row, pixel centres at +0.5) and their z-depth ``(...)`` (negative behind the camera)."""
        p = torch.as_tensor(points, dtype=torch.float64)
        m = self.pose(torch.float64)
        cam = (p - m[:3, 3]) @ m[:3, :3]  # camera frame (OpenGL axes)
        z = -cam[..., 2]
        f = self.focal_px
        uv = torch.stack([0.5 * self.width + f * cam[..., 0] / z, 0.5 * self.height - f * cam[..., 1] / z], -1)
        return uv.float(), z.float()

    def resized(self, height: int, width: int) -> Camera:
        """The same camera at another resolution (same field of view)."""
        return replace(self, height=height, width=width)


def stereo_pair(camera: Camera, baseline: float) -> Camera:
    """The right camera of a stereo pair: ``camera`` moved by ``baseline`` along its own +X axis,
    with the same orientation (and intrinsics). A point at z-depth ``z`` then appears
    ``focal_px * baseline / z`` pixels further left in the right image."""
    right = camera.pose(torch.float64)[:3, 0]
    target = torch.as_tensor(camera.target, dtype=torch.float64) + baseline * right
    return replace(camera, target=tuple(target.tolist()))


@dataclass(frozen=True)
class CameraRanges:
    """Where random training cameras come from (the one set of ranges; module docstring).

    Elevation is uniform in ``elevation_range`` except a fraction ``overhead_fraction`` of views
    drawn uniformly from ``overhead_range`` (60, 80]; azimuth is uniform in (-180, 180]; distance
    in ``distance_range``; vertical field of view in ``fov_range`` (degrees).
    """

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    overhead_fraction: float = 0.15
    overhead_range: tuple[float, float] = (60.0, 80.0)
    distance_range: tuple[float, float] = (1.5, 2.0)
    fov_range: tuple[float, float] = (40.0, 70.0)

    def __post_init__(self):
        if not 0.0 <= self.overhead_fraction <= 1.0:
            raise UserError(f"overhead_fraction {self.overhead_fraction} must be in [0, 1]")
        for name in ("elevation_range", "overhead_range", "distance_range", "fov_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise UserError(f"camera {name} ({lo}, {hi}) must be (low, high) with low <= high")
        if not self.distance_range[0] > 0:
            raise UserError(f"camera distance_range {self.distance_range} must be > 0")
        if not (0 < self.fov_range[0] and self.fov_range[1] < 180):
            raise UserError(f"camera fov_range {self.fov_range} must lie in (0, 180) degrees")


@dataclass(frozen=True)
class CameraSampling(CameraRanges):
    """Random training views of a text-to-3D run: ``batch`` cameras per step rendered at
    ``height`` x ``width``, drawn from the ranges; from step ``resolution_milestones[i]`` on, at
    ``milestone_sizes[i]`` pixels square instead (ProlificDreamer's 64 then 512 px)."""

    height: int = 32
    width: int = 32
    batch: int = 2
    resolution_milestones: tuple[int, ...] = ()
    milestone_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if self.height < 1 or self.width < 1 or self.batch < 1:
            raise UserError(f"cameras need height, width and batch >= 1, got {self.height}, {self.width}, {self.batch}")
        steps, sizes = list(self.resolution_milestones), list(self.milestone_sizes)
        if len(steps) != len(sizes) or steps != sorted(steps) or any(s < 1 for s in sizes):
            raise UserError(
                f"cameras.resolution_milestones {steps} and cameras.milestone_sizes {sizes} need one positive "
                f"size per milestone, milestones increasing; e.g. resolution_milestones=[5000] milestone_sizes=[512]"
            )

    def size(self, step: int = 0) -> tuple[int, int]:
        """``(height, width)`` of the renders at optimisation ``step``."""
        passed = [s for m, s in zip(self.resolution_milestones, self.milestone_sizes) if step >= m]
        return (passed[-1], passed[-1]) if passed else (self.height, self.width)

    def sample(self, generator: torch.Generator, step: int = 0) -> Cameras:
        """Step ``step``'s cameras, drawn with ``generator``."""
        height, width = self.size(step)
        return Cameras.stack(sample_cameras(self.batch, generator, height=height, width=width, ranges=self))


def sample_cameras(
    n: int, generator: torch.Generator, *, height: int = 128, width: int = 128, ranges: CameraRanges = CameraRanges()
) -> list[Camera]:
    """Draw ``n`` cameras from ``ranges`` (:class:`CameraRanges`) with an explicit ``torch.Generator``."""
    if not isinstance(generator, torch.Generator):
        raise UserError("sample_cameras needs an explicit torch.Generator; pass torch.Generator().manual_seed(seed)")
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64)
    lo, hi = ranges.elevation_range
    elev = lo + (hi - lo) * u[:, 0]
    olo, ohi = ranges.overhead_range
    elev = torch.where(u[:, 1] < ranges.overhead_fraction, ohi - (ohi - olo) * u[:, 2], elev)  # (olo, ohi]
    azim = 180.0 - 360.0 * u[:, 3]  # (-180, 180]
    dlo, dhi = ranges.distance_range
    dist = dlo + (dhi - dlo) * u[:, 4]
    flo, fhi = ranges.fov_range
    fov = flo + (fhi - flo) * u[:, 5]
    return [
        Camera(float(e), float(a), float(r), float(f), height, width)
        for e, a, r, f in zip(elev.tolist(), azim.tolist(), dist.tolist(), fov.tolist())
    ]


@dataclass
class Cameras:
    """A batch of ``B`` look-at cameras of one image size, as tensors on one device.

    ``c2w (B, 4, 4)`` (the convention above), ``focal_px (B,)``, and the spherical parameters
    ``elevation_deg``, ``azimuth_deg``, ``distance``, ``fov_deg`` (each ``(B,)``, float64, so that
    view words at the 45-degree boundaries read as they do for :class:`Camera`) that view words
    and camera-conditioned priors read. Renderers and guidance take this.
    """

    c2w: torch.Tensor
    focal_px: torch.Tensor
    elevation_deg: torch.Tensor
    azimuth_deg: torch.Tensor
    distance: torch.Tensor
    fov_deg: torch.Tensor
    height: int
    width: int

    @classmethod
    def stack(cls, cameras: Sequence[Camera] | Camera, dtype=torch.float32) -> Cameras:
        """The batch of a list of :class:`Camera` of one size (or of one camera)."""
        cameras = [cameras] if isinstance(cameras, Camera) else list(cameras)
        if not cameras or any((c.height, c.width) != (cameras[0].height, cameras[0].width) for c in cameras):
            raise UserError("a camera batch needs at least one camera, all of one image size")

        def column(name, dtype=torch.float64):
            return torch.tensor([float(getattr(c, name)) for c in cameras], dtype=dtype)

        return cls(
            c2w=torch.stack([c.pose(dtype) for c in cameras]),
            focal_px=column("focal_px", dtype),
            elevation_deg=column("elevation_deg"),
            azimuth_deg=column("azimuth_deg"),
            distance=column("distance"),
            fov_deg=column("fov_deg"),
            height=cameras[0].height,
            width=cameras[0].width,
        )

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device) -> Cameras:
        return replace(
            self,
            **{
                k: getattr(self, k).to(device)
                for k in ("c2w", "focal_px", "elevation_deg", "azimuth_deg", "distance", "fov_deg")
            },
        )

    @property
    def positions(self) -> torch.Tensor:
        """Camera centres ``(B, 3)``."""
        return self.c2w[:, :3, 3]

    def resized(self, height: int, width: int) -> Cameras:
        """The same cameras at another resolution (same vertical field of view)."""
        return replace(self, focal_px=self.focal_px * (height / self.height), height=height, width=width)

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(origins, directions)``, each ``(B, H, W, 3)``, unit directions (:func:`rays_batch`)."""
        return rays_batch(self.c2w, self.focal_px, self.height, self.width)

    def view_words(self) -> list[str]:
        return [view_word(e, a) for e, a in zip(self.elevation_deg.tolist(), self.azimuth_deg.tolist())]

    def features(self) -> torch.Tensor:
        """``(B, 11)`` :func:`camera_features`, on the batch's device."""
        features = camera_features(
            self.elevation_deg.cpu(), self.azimuth_deg.cpu(), self.distance.cpu(), self.fov_deg.cpu()
        )
        return features.to(self.device)
