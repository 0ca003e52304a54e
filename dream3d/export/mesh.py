"""Mesh files in glTF's +Y-up frame: ``mesh.glb``, ``mesh.obj``, ``mesh.ply``.

:func:`write_mesh` writes a world-frame (+Z up) mesh with vertex colours as ``mesh.glb`` (vertex
colours as ``COLOR_0``), ``mesh.obj`` (vertex colours as ``v x y z r g b``) and ``mesh.ply``, each
atomically; world ``(x, y, z)`` is written as ``(x, z, -y)`` (a proper rotation, so face winding
is kept), so assets stand upright in Blender and web viewers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from ..errors import UserError
from ..io import atomic_path

# world (x, y, z) -> glTF (x, z, -y): rows are the new axes
WORLD_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def to_gltf_frame(mesh):
    """A copy of a world-frame (+Z up) mesh in glTF's +Y-up frame: ``(x, y, z) -> (x, z, -y)``."""
    out = mesh.copy()
    out.vertices = np.asarray(mesh.vertices) @ WORLD_TO_GLTF.T
    return out


def write_mesh(
    mesh_world, folder: str | Path, name: str = "mesh", formats: tuple[str, ...] = ("glb", "obj", "ply")
) -> dict[str, Path]:
    """Write ``{folder}/{name}.glb|.obj|.ply`` in the +Y-up frame, atomically. Returns the paths."""
    folder = Path(folder)
    mesh = to_gltf_frame(mesh_world)
    paths = {}
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "obj":
                text = trimesh.exchange.obj.export_obj(
                    mesh, include_color=True, include_normals=False, include_texture=False
                )
                tmp.write_text(text, encoding="utf-8")
            elif fmt in ("glb", "ply"):
                mesh.export(tmp, file_type=fmt)
            else:
                raise UserError(f"mesh format '{fmt}' is not supported; use glb, obj or ply")
        paths[fmt] = path
    return paths
