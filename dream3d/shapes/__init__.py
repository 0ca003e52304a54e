"""The shapes world: a small 3D domain with exact ground truth (``/work/shared/specs/shapes-world.md``).

Five shapes x six colours centred at the origin (:mod:`.objects`), their meshes (:mod:`.meshes`),
the project's camera model (:mod:`.camera`), a ray-cast renderer (:mod:`.render`), captions
(:mod:`.captions`), stereo scenes with true disparity (:mod:`.stereo_scene`) and the quality
measures (:mod:`.metrics`). open3d and trimesh load on first render.
"""

from .camera import (
    Camera,
    c2w_to_spherical,
    focal_from_fov,
    rays_batch,
    sample_cameras,
    spherical_to_c2w,
    stack_cameras,
    stereo_pair,
    view_word,
    wrap_azimuth,
)
from .captions import caption, view_caption
from .meshes import shape_mesh
from .metrics import (
    IoUMatch,
    best_iou,
    classify_shape,
    colour_error,
    grid_centres,
    iou_3d,
    nearest_colour,
    occupancy_grid,
)
from .objects import COLOURS, SHAPES, ShapeObject, all_objects, occupancy, parse_prompt, sdf
from .render import AMBIENT, DIFFUSE, Placement, Plane, RenderOutput, Scene, render, shade, to_uint8, trace
from .stereo_scene import DEFAULT_BASELINE, StereoScene, make_stereo_scene

__all__ = [
    "AMBIENT",
    "COLOURS",
    "DEFAULT_BASELINE",
    "DIFFUSE",
    "SHAPES",
    "Camera",
    "IoUMatch",
    "Placement",
    "Plane",
    "RenderOutput",
    "Scene",
    "ShapeObject",
    "StereoScene",
    "all_objects",
    "best_iou",
    "c2w_to_spherical",
    "caption",
    "classify_shape",
    "colour_error",
    "focal_from_fov",
    "grid_centres",
    "iou_3d",
    "make_stereo_scene",
    "nearest_colour",
    "occupancy",
    "occupancy_grid",
    "parse_prompt",
    "rays_batch",
    "render",
    "sample_cameras",
    "sdf",
    "shade",
    "shape_mesh",
    "spherical_to_c2w",
    "stack_cameras",
    "stereo_pair",
    "to_uint8",
    "trace",
    "view_caption",
    "view_word",
    "wrap_azimuth",
]
