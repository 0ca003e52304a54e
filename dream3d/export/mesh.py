"""Mesh files in glTF's +Y-up frame: ``mesh.glb``, ``mesh.obj`` (+ ``mesh.mtl``, ``mesh.png``), ``mesh.ply``.

:func:`write_mesh` writes a world-frame (+Z up) mesh; world ``(x, y, z)`` is written as
``(x, z, -y)`` (a proper rotation, so face winding is kept), so assets stand upright in Blender
and web viewers. Every file is written atomically (a temporary file renamed over the target).

- A vertex-coloured mesh: ``mesh.glb`` (vertex colours as ``COLOR_0``), ``mesh.obj`` (vertex
  colours as ``v x y z r g b``) and ``mesh.ply``.
- A textured mesh (``TextureVisuals`` with an image, :func:`dream3d.export.texture.textured_mesh`):
  ``mesh.glb`` (``TEXCOORD_0``, ``NORMAL``, a PBR material whose ``baseColorTexture`` is the PNG
  embedded in the binary chunk), ``mesh.obj`` + ``mesh.mtl`` + ``mesh.png`` (the OBJ names the
  MTL with ``mtllib mesh.mtl``, the MTL the image with ``map_Kd mesh.png``, both relative to the
  folder; ``vt`` holds OBJ-style uvs, ``v`` up) and ``mesh.ply``, the same surface welded at the
  uv seams with vertex colours sampled from the texture (what the shapes scorer reads).
  The PNG is written first and the OBJ last, so an OBJ on disk always finds its material.

:func:`load_mesh_world` reads a file written here back into the world frame, keeping its uvs,
texture and normals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from ..errors import UserError
from ..io import atomic_path, write_text
from .texture import is_textured, welded_vertex_colours

# world (x, y, z) -> glTF (x, z, -y): rows are the new axes
WORLD_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

MATERIAL_NAME = "baked"


def _rotated(mesh, rotation: np.ndarray):
    """A copy of ``mesh`` with vertices (and, for textured meshes, the vertex normals it carries)
    rotated by the 3x3 ``rotation``. Textured meshes keep their normals explicitly: trimesh's copy
    drops cached normals, and normals recomputed on a mesh cut at uv seams would show the seams."""
    if not is_textured(mesh):
        out = mesh.copy()
        out.vertices = np.asarray(mesh.vertices) @ rotation.T
        return out
    return trimesh.Trimesh(
        np.asarray(mesh.vertices) @ rotation.T,
        np.asarray(mesh.faces),
        vertex_normals=np.asarray(mesh.vertex_normals) @ rotation.T,
        visual=mesh.visual.copy(),
        process=False,
    )


def to_gltf_frame(mesh):
    """A copy of a world-frame (+Z up) mesh in glTF's +Y-up frame: ``(x, y, z) -> (x, z, -y)``."""
    return _rotated(mesh, WORLD_TO_GLTF)


def from_gltf_frame(mesh):
    """The inverse of :func:`to_gltf_frame`: ``(x, y, z) -> (x, -z, y)``."""
    return _rotated(mesh, WORLD_TO_GLTF.T)


def write_mesh(
    mesh_world, folder: str | Path, name: str = "mesh", formats: tuple[str, ...] = ("glb", "obj", "ply")
) -> dict[str, Path]:
    """Write ``{folder}/{name}.glb|.obj|.ply`` in the +Y-up frame, atomically (module docstring).
    Returns the paths by kind: ``glb``, ``obj``, ``ply`` and, for a textured mesh's OBJ, ``mtl`` and
    ``png``."""
    folder = Path(folder)
    bad = [f for f in formats if f not in ("glb", "obj", "ply")]
    if bad:
        raise UserError(f"mesh format(s) {bad} are not supported; use glb, obj or ply")
    textured = is_textured(mesh_world)
    mesh = to_gltf_frame(mesh_world)
    paths = {}
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        if textured and fmt == "obj":
            paths.update(write_textured_obj(mesh, folder, name))
            continue
        with atomic_path(path) as tmp:
            if fmt == "obj":
                text = trimesh.exchange.obj.export_obj(
                    mesh, include_color=True, include_normals=False, include_texture=False
                )
                tmp.write_text(text, encoding="utf-8")
            elif fmt == "glb" and textured:
                mesh.export(tmp, file_type="glb", include_normals=True)
            elif fmt == "ply" and textured:
                welded_vertex_colours(mesh).export(tmp, file_type="ply")
            else:
                mesh.export(tmp, file_type=fmt)
        paths[fmt] = path
    return paths


def write_textured_obj(mesh, folder: str | Path, name: str = "mesh") -> dict[str, Path]:
    """``{name}.png`` (the texture), ``{name}.mtl`` (``map_Kd {name}.png``) and ``{name}.obj``
    (``mtllib {name}.mtl``; ``v``, ``vt``, ``vn`` and ``f v/vt/vn``, one uv and normal per vertex)
    of a textured mesh, as it is (no change of frame), each atomically, in that order."""
    folder = Path(folder)
    material = mesh.visual.material
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    paths = {"png": folder / f"{name}.png", "mtl": folder / f"{name}.mtl", "obj": folder / f"{name}.obj"}
    with atomic_path(paths["png"]) as tmp:
        image.convert("RGB").save(tmp, format="PNG")
    mtl = [
        "# dream3d baked texture",
        f"newmtl {MATERIAL_NAME}",
        "Ka 0.000000 0.000000 0.000000",
        "Kd 1.000000 1.000000 1.000000",
        "Ks 0.000000 0.000000 0.000000",
        "d 1.000000",
        "illum 1",
        f"map_Kd {paths['png'].name}",
    ]
    write_text(paths["mtl"], "\n".join(mtl) + "\n")
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    uv = np.asarray(mesh.visual.uv, dtype=np.float64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    idx = np.asarray(mesh.faces, dtype=np.int64) + 1  # OBJ indices start at 1
    lines = [
        "# dream3d textured mesh, glTF +Y-up frame: world (x, y, z) -> (x, z, -y)",
        f"mtllib {paths['mtl'].name}",
        f"usemtl {MATERIAL_NAME}",
    ]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in verts]
    lines += [f"vt {u:.7f} {v:.7f}" for u, v in uv]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in idx]
    write_text(paths["obj"], "\n".join(lines) + "\n")
    return paths


def load_mesh_world(path: str | Path) -> trimesh.Trimesh:
    """A mesh file written by :func:`write_mesh` (``.glb``, ``.obj`` or ``.ply``; one mesh) back in
    the world frame (+Z up), with its colours or uvs and texture, and the normals the file holds."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mesh '{path}' does not exist; export the run first")
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        nodes = loaded.graph.nodes_geometry
        if len(nodes) != 1:
            raise UserError(f"'{path}' holds {len(nodes)} meshes; expected the one mesh the exporter writes")
        transform, geometry_name = loaded.graph[nodes[0]]
        mesh = loaded.geometry[geometry_name]
        if not np.allclose(transform, np.eye(4)):  # not one of ours: place it (normals are recomputed)
            mesh = mesh.copy()
            mesh.apply_transform(transform)
    else:
        mesh = loaded
    return from_gltf_frame(mesh)
