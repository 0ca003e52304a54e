"""Watertight triangle meshes of the five shapes, built once and cached.

Each mesh is centred at the origin with the shape's axis along +Z and the dimensions of
:mod:`dream3d.shapes.objects`. Every vertex lies exactly on the true surface; flat faces (box
faces, cylinder and cone caps) are exact and curved ones are finely tessellated, so a face is at
most ~2e-4 world units inside the true surface. The renderer snaps ray hits onto the exact SDF, so
this only matters for silhouettes.

Meshes are cached (``functools.lru_cache``): building them costs ~100-200 ms, a cached lookup is
free. The cached object is shared; call ``.copy()`` before modifying it.
"""

from __future__ import annotations

import functools

import trimesh

from .objects import (
    CONE_HALF_HEIGHT,
    CONE_RADIUS,
    CUBE_HALF_SIDE,
    CYLINDER_HALF_HEIGHT,
    CYLINDER_RADIUS,
    SPHERE_RADIUS,
    TORUS_MAJOR,
    TORUS_MINOR,
    check_shape,
)

SPHERE_SUBDIVISIONS = 5  # icosphere, 20480 faces
ROUND_SECTIONS = 256  # segments around the axis of the cylinder, cone and torus
TORUS_MINOR_SECTIONS = 64  # segments around the torus tube


@functools.cache
def shape_mesh(shape: str):
    """A watertight ``trimesh.Trimesh`` of ``shape`` (cached and shared: do not modify it)."""
    check_shape(shape)
    if shape == "cube":
        mesh = trimesh.creation.box(extents=(2 * CUBE_HALF_SIDE,) * 3)
    elif shape == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=SPHERE_SUBDIVISIONS, radius=SPHERE_RADIUS)
    elif shape == "cylinder":
        mesh = trimesh.creation.cylinder(
            radius=CYLINDER_RADIUS, height=2 * CYLINDER_HALF_HEIGHT, sections=ROUND_SECTIONS
        )
    elif shape == "cone":
        # trimesh's cone has its base at z = 0 and apex at z = height: shift it down by half.
        mesh = trimesh.creation.cone(radius=CONE_RADIUS, height=2 * CONE_HALF_HEIGHT, sections=ROUND_SECTIONS)
        mesh.apply_translation((0.0, 0.0, -CONE_HALF_HEIGHT))
    else:  # torus: a parametric grid with every vertex on the surface
        mesh = trimesh.creation.torus(
            major_radius=TORUS_MAJOR,
            minor_radius=TORUS_MINOR,
            major_sections=ROUND_SECTIONS,
            minor_sections=TORUS_MINOR_SECTIONS,
        )
    if not mesh.is_watertight:  # pragma: no cover - guards against a trimesh change
        raise RuntimeError(f"the {shape} mesh is not watertight; check the installed trimesh version")
    return mesh
