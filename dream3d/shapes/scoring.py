"""Score a generated asset against the shapes world (the quality measures of ``docs/shapes-world.md``).

An exported mesh (glTF +Y-up, vertex colours = albedo) is brought back to the world frame,
voxelised on the measures' 128^3 grid over [-1, 1]^3 (open3d's inside test), and compared with the
prompt's object: best 3D IoU over rotations about Z and uniform scales, the best-IoU shape
among the five, and the colour error of the mean surface albedo (area-weighted vertex colours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh

from ..errors import UserError
from ..export.mesh import WORLD_TO_GLTF
from .metrics import best_iou, classify_shape, colour_error, grid_centres, nearest_colour
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


def mean_surface_albedo(mesh) -> np.ndarray:
    """Area-weighted mean of the vertex colours (linear RGB in [0, 1])."""
    colours = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
    face_rgb = colours[np.asarray(mesh.faces)].mean(axis=1)
    area = np.asarray(mesh.area_faces)
    return (face_rgb * area[:, None]).sum(0) / max(area.sum(), 1e-12)


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
        "predicted_colour": nearest_colour(albedo),
        "colour_right": nearest_colour(albedo) == colour,
    }
