"""Quality measures of the shapes world: occupancy grids, 3D IoU with the rotation/scale search,
shape classification and colour error."""

import numpy as np
import pytest

from dream3d.errors import UserError
from dream3d.shapes import (
    COLOURS,
    SHAPES,
    best_iou,
    classify_shape,
    colour_error,
    grid_centres,
    iou_3d,
    nearest_colour,
    occupancy_grid,
    saturation,
    saturation_error,
    sdf,
)
from dream3d.shapes.metrics import _inside, _true_count


def _transformed_grid(shape, angle_deg, scale, res=128):
    """Grid of ``shape`` rotated about Z by ``angle_deg`` and scaled, straight from the SDF."""
    a = np.radians(angle_deg)
    p = grid_centres(res).astype(np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    local = np.stack([np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y, z], -1) / scale
    return sdf(shape, local) < 0


def test_grid_convention():
    c = grid_centres(4)
    assert c.shape == (4, 4, 4, 3)
    np.testing.assert_allclose(c[:, 0, 0, 0], [-0.75, -0.25, 0.25, 0.75])  # axis 0 is x
    np.testing.assert_allclose(c[0, 0, :, 2], [-0.75, -0.25, 0.25, 0.75])
    occ = occupancy_grid("cube", 128)
    # the cube of side 0.8 covers the centres -1 + (i + 0.5) / 64 with |.| < 0.4: i = 38..89
    assert occ.sum() == 52**3
    assert occupancy_grid("sphere", 128).sum() / 128**3 * 8 == pytest.approx(4 / 3 * np.pi * 0.125, rel=0.01)


@pytest.mark.parametrize("shape", SHAPES)
def test_iou_with_itself_is_one(shape):
    occ = occupancy_grid(shape)
    assert iou_3d(occ, occ) == 1.0
    match = best_iou(occ, shape)
    assert match.iou == pytest.approx(1.0) and match.scale == pytest.approx(1.0) and match.angle_deg == 0.0


def test_rotated_scaled_cube_is_found():
    occ = _transformed_grid("cube", 30.0, 1.1)
    assert iou_3d(occ, occupancy_grid("cube")) < 0.8
    match = best_iou(occ, "cube")
    assert match.iou > 0.98 and match.angle_deg == 30.0 and match.scale == pytest.approx(1.1, abs=0.01)
    # 120 degrees is the same cube: the symmetric search reports 30
    assert best_iou(_transformed_grid("cube", 120.0, 1.1), "cube").angle_deg == 30.0


def test_explicit_scales_and_symmetry():
    occ = _transformed_grid("cone", 0.0, 0.9)
    assert best_iou(occ, "cone", scales=[0.9]).iou == pytest.approx(1.0)
    assert best_iou(occ, "cone", scales=[1.0, 1.2]).scale == 1.0
    big = _transformed_grid("sphere", 0.0, 1.6)
    assert best_iou(big, "sphere", scales=[1.6]).iou == pytest.approx(1.0)
    # a step that does not divide 90 still covers every multiple of it (mod the cube's symmetry)
    assert best_iou(_transformed_grid("cube", 21.0, 1.0), "cube", rot_step_deg=7.0).angle_deg == 21.0
    # the cube's 90-degree symmetry holds on the grid, so angles in [0, 90) suffice
    pts = grid_centres(64).reshape(-1, 3)
    np.testing.assert_array_equal(_inside("cube", pts, 20.0, 1.1), _inside("cube", pts, 110.0, 1.1))
    # the prism shortcut for the true voxel count equals a full count
    for shape, angle, scale in [("cube", 17.0, 1.13), ("cylinder", 0.0, 0.87)]:
        assert _true_count(shape, 64, angle, scale) == np.count_nonzero(_inside(shape, pts, angle, scale))


@pytest.mark.parametrize("shape", SHAPES)
def test_classify_shape(shape):
    best, scores = classify_shape(occupancy_grid(shape))
    assert best == shape and set(scores) == set(SHAPES)
    assert scores[shape] == pytest.approx(1.0) and max(v for k, v in scores.items() if k != shape) < 0.9


def test_classify_transformed_and_coarse_grids():
    assert classify_shape(_transformed_grid("cylinder", 0.0, 0.85))[0] == "cylinder"
    assert classify_shape(_transformed_grid("cube", 40.0, 1.2))[0] == "cube"
    assert classify_shape(occupancy_grid("torus", 64))[0] == "torus"


def test_iou_edge_cases():
    empty = np.zeros((16, 16, 16), bool)
    assert iou_3d(empty, empty) == 1.0
    assert best_iou(empty, "sphere").iou == 0.0
    half = np.zeros((4, 4, 4), bool)
    half[:2] = True
    assert iou_3d(half, np.ones((4, 4, 4), bool)) == 0.5
    with pytest.raises(UserError, match="differ in shape"):
        iou_3d(empty, np.zeros((8, 8, 8), bool))
    with pytest.raises(UserError, match="cubic"):
        best_iou(np.zeros((4, 4, 5), bool), "cube")


def test_saturation_of_the_colour_table():
    assert saturation(COLOURS["red"]) == pytest.approx((0.80 - 0.08) / 0.80)
    assert saturation((0.0, 0.0, 0.0)) == 0.0 and saturation((0.5, 0.5, 0.5)) == 0.0
    assert saturation_error(1.0, "red") == pytest.approx(0.1)
    assert saturation(np.stack([COLOURS["blue"], (0.2, 0.1, 0.0)])).tolist() == pytest.approx([0.875, 1.0])


def test_colour_error_and_nearest():
    assert colour_error(COLOURS["red"], "red") == 0.0
    assert colour_error((0.8, 0.08, 0.08), (0.8, 0.08, 0.38)) == pytest.approx(0.3)
    assert colour_error("red", "green") == pytest.approx(np.linalg.norm(np.subtract(COLOURS["red"], COLOURS["green"])))
    for name, rgb in COLOURS.items():
        assert nearest_colour(rgb) == name
        assert nearest_colour(np.array(rgb) * 0.9 + 0.02) == name
    with pytest.raises(UserError):
        colour_error((1, 2), "red")
    with pytest.raises(UserError, match="unknown colour"):
        colour_error((0, 0, 0), "pink")
