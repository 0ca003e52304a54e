"""The five shapes and six colours of the shapes world, with their exact signed distance functions.

Conventions (fixed by ``docs/shapes-world.md``):

- Right-handed world, +Z up; every object is centred at the origin with its axis along Z.
- Dimensions in world units: cube of side 0.8; sphere of radius 0.5; cylinder of radius 0.4 and
  height 0.8; cone of base radius 0.45 and height 0.9, apex up, spanning z in [-0.45, 0.45];
  torus of major radius 0.35 and minor radius 0.15 lying in the XY plane.
- Colours are linear-RGB albedos.
- A signed distance is negative inside, zero on the surface, positive outside, and exact (the true
  Euclidean distance to the surface), so it can drive sphere tracing and surface snapping.

Every SDF takes points of shape ``(..., 3)`` as a numpy array or a torch tensor and returns
distances of shape ``(...)`` of the same kind, dtype and device. The formulas are vectorised and
follow Inigo Quilez's exact distance functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "torus")

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.08, 0.08),
    "green": (0.10, 0.65, 0.12),
    "blue": (0.10, 0.20, 0.80),
    "yellow": (0.85, 0.75, 0.08),
    "purple": (0.50, 0.12, 0.65),
    "orange": (0.90, 0.45, 0.05),
}

# Dimensions of the objects' table in docs/shapes-world.md (world units).
CUBE_HALF_SIDE = 0.4
SPHERE_RADIUS = 0.5
CYLINDER_RADIUS = 0.4
CYLINDER_HALF_HEIGHT = 0.4
CONE_RADIUS = 0.45
CONE_HALF_HEIGHT = 0.45
TORUS_MAJOR = 0.35
TORUS_MINOR = 0.15

# Radius of the smallest origin-centred ball that holds each shape (used for bounds and layout).
BOUNDING_RADIUS: dict[str, float] = {
    "cube": CUBE_HALF_SIDE * 3**0.5,
    "sphere": SPHERE_RADIUS,
    "cylinder": (CYLINDER_RADIUS**2 + CYLINDER_HALF_HEIGHT**2) ** 0.5,
    "cone": (CONE_RADIUS**2 + CONE_HALF_HEIGHT**2) ** 0.5,
    "torus": TORUS_MAJOR + TORUS_MINOR,
}


def _xp(p):
    """The array module of ``p``: torch for tensors, numpy otherwise."""
    return torch if isinstance(p, torch.Tensor) else np


def _as_points(points):
    if not isinstance(points, torch.Tensor):
        points = np.asarray(points)
        if not np.issubdtype(points.dtype, np.floating):
            points = points.astype(np.float64)
    if points.shape[-1] != 3:
        raise UserError(f"points must have shape (..., 3), got {tuple(points.shape)}; pass xyz coordinates")
    return points


def _length2(x, y):
    return (x * x + y * y) ** 0.5


def _length3(x, y, z):
    return (x * x + y * y + z * z) ** 0.5


def sdf_cube(p):
    """Exact SDF of the axis-aligned box of side 0.8: |max(q, 0)| + min(max(q), 0), q = |p| - 0.4."""
    xp = _xp(p)
    qx, qy, qz = (xp.abs(p[..., k]) - CUBE_HALF_SIDE for k in range(3))
    outside = _length3(qx.clip(min=0), qy.clip(min=0), qz.clip(min=0))
    inside = xp.maximum(qx, xp.maximum(qy, qz)).clip(max=0)
    return outside + inside


def sdf_sphere(p):
    """Exact SDF of the sphere of radius 0.5."""
    return _length3(p[..., 0], p[..., 1], p[..., 2]) - SPHERE_RADIUS


def sdf_cylinder(p):
    """Exact SDF of the capped cylinder of radius 0.4 and height 0.8 along Z."""
    xp = _xp(p)
    dx = _length2(p[..., 0], p[..., 1]) - CYLINDER_RADIUS
    dz = xp.abs(p[..., 2]) - CYLINDER_HALF_HEIGHT
    return xp.maximum(dx, dz).clip(max=0) + _length2(dx.clip(min=0), dz.clip(min=0))


def sdf_cone(p):
    """Exact SDF of the capped cone: base radius 0.45 at z = -0.45, apex at z = +0.45."""
    xp = _xp(p)
    h, r1, r2 = CONE_HALF_HEIGHT, CONE_RADIUS, 0.0
    qx = _length2(p[..., 0], p[..., 1])
    qy = p[..., 2]
    # Radial offset from the cap disc on the near side: the base (radius r1) below z = 0, the
    # apex (radius r2 = 0) above, i.e. qx - min(qx, cap radius).
    cax = xp.where(qy < 0, (qx - r1).clip(min=0), qx)
    cay = xp.abs(qy) - h
    # Distance to the slanted side, the segment from (r1, -h) to (r2, h) in the (radius, z) plane.
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    t = (((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)).clip(min=0.0, max=1.0)
    cbx = qx - k1x + k2x * t
    cby = qy - k1y + k2y * t
    inside = (cbx < 0) & (cay < 0)
    dist = xp.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby) ** 0.5
    return xp.where(inside, -dist, dist)


def sdf_torus(p):
    """Exact SDF of the torus of major radius 0.35 and minor radius 0.15 in the XY plane."""
    qx = _length2(p[..., 0], p[..., 1]) - TORUS_MAJOR
    return _length2(qx, p[..., 2]) - TORUS_MINOR


SDFS: dict[str, Callable] = {
    "cube": sdf_cube,
    "sphere": sdf_sphere,
    "cylinder": sdf_cylinder,
    "cone": sdf_cone,
    "torus": sdf_torus,
}


def check_shape(shape: str) -> str:
    """Return ``shape`` if it is one of :data:`SHAPES`, else raise :class:`UserError`."""
    if shape not in SDFS:
        raise UserError(f"unknown shape '{shape}'; choose one of {', '.join(SHAPES)}")
    return shape


def check_colour(colour: str) -> str:
    """Return ``colour`` if it is a key of :data:`COLOURS`, else raise :class:`UserError`."""
    if colour not in COLOURS:
        raise UserError(f"unknown colour '{colour}'; choose one of {', '.join(COLOURS)}")
    return colour


def sdf(shape: str, points):
    """Exact signed distance from ``points`` (..., 3) to ``shape`` (negative inside)."""
    return SDFS[check_shape(shape)](_as_points(points))


def occupancy(shape: str, points):
    """Boolean occupancy (strictly inside, ``sdf < 0``) of ``shape`` at ``points`` (..., 3)."""
    return sdf(shape, points) < 0


@dataclass(frozen=True)
class ShapeObject:
    """One of the 30 objects of the shapes world: a shape in a colour, centred at the origin."""

    shape: str
    colour: str

    def __post_init__(self):
        check_shape(self.shape)
        check_colour(self.colour)

    @property
    def prompt(self) -> str:
        """The prompt, "a {colour} {shape}" (always "a", e.g. "a orange cube")."""
        return f"a {self.colour} {self.shape}"

    @property
    def albedo(self) -> tuple[float, float, float]:
        """Linear-RGB albedo of the colour."""
        return COLOURS[self.colour]

    def sdf(self, points):
        """Exact signed distance to this object's surface (see :func:`sdf`)."""
        return sdf(self.shape, points)


def all_objects() -> list[ShapeObject]:
    """The 30 objects, shape-major: cube in each colour, then sphere, ... (colours in table order)."""
    return [ShapeObject(s, c) for s in SHAPES for c in COLOURS]


_PROMPT_RE = re.compile(r"^\s*(?:an?\s+)?(?P<colour>[a-z]+)\s+(?P<shape>[a-z]+)\s*(?:,\s*(?:[a-z]+)\s+view\s*)?\.?\s*$")


def parse_prompt(text: str) -> tuple[str, str] | None:
    """Parse "a {colour} {shape}" (optionally ", {view} view") into ``(shape, colour)``.

    Case and surrounding whitespace are ignored, "an" is accepted for "a"; returns ``None`` for
    anything that does not name one of the 30 objects.
    """
    if not isinstance(text, str):
        return None
    m = _PROMPT_RE.match(text.lower())
    if m is None or m["shape"] not in SDFS or m["colour"] not in COLOURS:
        return None
    return m["shape"], m["colour"]
