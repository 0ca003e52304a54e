"""The shapes world: a small 3D domain with exact ground truth (``docs/shapes-world.md``).

Five shapes x six colours centred at the origin (:mod:`.objects`), their meshes (:mod:`.meshes`),
a ray-cast renderer (:mod:`.render`), captions (:mod:`.captions`), stereo scenes with true
disparity (:mod:`.stereo_scene`) and the quality measures (:mod:`.metrics`, :mod:`.scoring`). It
uses the project's one camera convention (:mod:`dream3d.cameras`) and shading rule
(:func:`dream3d.renderers.materials.lambert`). open3d loads on first render.
"""

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
    saturation,
    saturation_error,
)
from .objects import COLOURS, SHAPES, ShapeObject, all_objects, occupancy, parse_prompt, sdf
from .render import Placement, Plane, RenderOutput, Scene, render, to_uint8, trace
from .stereo_scene import DEFAULT_BASELINE, StereoScene, make_stereo_scene

__all__ = [
    "COLOURS",
    "DEFAULT_BASELINE",
    "SHAPES",
    "IoUMatch",
    "Placement",
    "Plane",
    "RenderOutput",
    "Scene",
    "ShapeObject",
    "StereoScene",
    "all_objects",
    "best_iou",
    "caption",
    "classify_shape",
    "colour_error",
    "grid_centres",
    "iou_3d",
    "make_stereo_scene",
    "nearest_colour",
    "saturation",
    "saturation_error",
    "occupancy",
    "occupancy_grid",
    "parse_prompt",
    "render",
    "sdf",
    "shape_mesh",
    "to_uint8",
    "trace",
    "view_caption",
]
