"""Score a generated asset against the shapes world (the quality measures of ``docs/shapes-world.md``).

An exported mesh (glTF +Y-up, vertex colours = albedo) is brought back to the world frame,
voxelised on the measures' 128^3 grid over [-1, 1]^3 (open3d's inside test), and compared with the
prompt's object: best 3D IoU over rotations about Z and uniform scales, the best-IoU shape
among the five, the colour error of the mean surface albedo (area-weighted vertex colours) and the
saturation error (the area-weighted mean HSV saturation of the surface colours minus the colour's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh

from ..errors import UserError
from ..export.mesh import WORLD_TO_GLTF
from .metrics import best_iou, classify_shape, colour_error, grid_centres, nearest_colour, saturation, saturation_error
from .objects import parse_prompt


def load_asset(path: str | Path):
    """A mesh file written by the exporter, back in the world frame (+Z up)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mesh '{path}' does not exist; pass the mesh.ply or mesh.glb of a run")
    mesh = trimesh.load(path, force="mesh", process=False)
    mesh.vertices = np.asarray(mesh.vertices) @ WORLD_TO_GLTF  # the inverse of the export's rotation
    return mesh


def mesh_occupancy(mesh, res: int = 128) -> np.ndarray:
    """Boolean (res, res, res) occupancy of a watertight-ish world-frame mesh at the voxel centres."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)), o3d.core.Tensor(np.asarray(mesh.faces, np.uint32))
    )
    pts = grid_centres(res).reshape(-1, 3)
    occ = scene.compute_occupancy(o3d.core.Tensor(pts)).numpy()
    return occ.reshape(res, res, res) > 0.5


def _face_colours(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Each face's colour (the mean of its vertex colours, linear RGB in [0, 1]) and area weight."""
    colours = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
    area = np.asarray(mesh.area_faces)
    return colours[np.asarray(mesh.faces)].mean(axis=1), area / max(area.sum(), 1e-12)


def mean_surface_albedo(mesh) -> np.ndarray:
    """Area-weighted mean of the vertex colours (linear RGB in [0, 1])."""
    face_rgb, weight = _face_colours(mesh)
    return (face_rgb * weight[:, None]).sum(0)


def mean_surface_saturation(mesh) -> float:
    """Area-weighted mean HSV saturation of the surface colours (of each face's colour, not of the
    mean colour: a surface of saturated patches of two hues stays saturated)."""
    face_rgb, weight = _face_colours(mesh)
    return float((saturation(face_rgb) * weight).sum())


def score_asset(mesh, prompt: str, res: int = 128) -> dict:
    """The quality measures for ``mesh`` (world frame) generated from ``prompt`` ("a red cube ...")."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise UserError(f"prompt {prompt!r} is not a shapes-world prompt; use 'a {{colour}} {{shape}}'")
    shape, colour = parsed
    occ = mesh_occupancy(mesh, res)
    match = best_iou(occ, shape)
    predicted, scores = classify_shape(occ)
    albedo = mean_surface_albedo(mesh)
    sat = mean_surface_saturation(mesh)
    return {
        "shape": shape,
        "colour": colour,
        "iou": match.iou,
        "iou_angle_deg": match.angle_deg,
        "iou_scale": match.scale,
        "predicted_shape": predicted,
        "shape_right": predicted == shape,
        "shape_ious": scores,
        "mean_albedo": albedo.tolist(),
        "colour_error": colour_error(albedo, colour),
        "saturation": sat,
        "saturation_error": saturation_error(sat, colour),
        "predicted_colour": nearest_colour(albedo),
        "colour_right": nearest_colour(albedo) == colour,
    }
