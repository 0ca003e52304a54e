"""Shapes world: objects, exact SDFs, meshes, captions and the renderer against analytic facts."""

import math

import numpy as np
import pytest
import torch

from dream3d.cameras import Camera, view_word
from dream3d.errors import UserError
from dream3d.renderers.materials import AMBIENT, DIFFUSE
from dream3d.shapes import (
    COLOURS,
    SHAPES,
    Placement,
    Scene,
    ShapeObject,
    all_objects,
    caption,
    occupancy,
    parse_prompt,
    render,
    sdf,
    shape_mesh,
    to_uint8,
)

# ----------------------------------------------------------------------------- objects and SDFs

SDF_FACTS = {
    # shape: [(point, exact signed distance)]
    "cube": [
        ((0, 0, 0), -0.4),
        ((1, 0, 0), 0.6),
        ((0, 0, -0.1), -0.3),
        ((0.6, 0.6, 0), math.sqrt(0.08)),
        ((1, 1, 1), math.sqrt(3) * 0.6),
        ((0.4, 0.4, 0.4), 0.0),
    ],
    "sphere": [((0, 0, 0), -0.5), ((1, 0, 0), 0.5), ((0, 0.3, 0.4), 0.0), ((0, 0, -2), 1.5)],
    "cylinder": [
        ((0, 0, 0), -0.4),
        ((0.3, 0, 0), -0.1),
        ((0, 0, 1), 0.6),
        ((1, 0, 0), 0.6),
        ((0.7, 0, 0.8), 0.5),  # nearest point: the rim
        ((0, 0.35, -0.38), -0.02),
    ],
    "cone": [
        ((0, 0, 0), -0.2025 / math.sqrt(1.0125)),  # distance to the slanted side
        ((0, 0, 0.45), 0.0),  # apex
        ((0, 0, 1), 0.55),
        ((0, 0, -1), 0.55),
        ((1, 0, -0.45), 0.55),  # nearest point: the base rim
        ((0.225 + 0.2 / math.sqrt(5), 0, 0.1 / math.sqrt(5)), 0.1),  # 0.1 along the side's normal
        ((0, 0.1, -0.4), -0.05),  # nearest: the base
    ],
    "torus": [((0.35, 0, 0), -0.15), ((0, 0, 0), 0.2), ((0, 0.35, 0.5), 0.35), ((1, 0, 0), 0.5)],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_sdf_values_at_known_points(shape):
    points = np.array([p for p, _ in SDF_FACTS[shape]], dtype=np.float64)
    expected = np.array([d for _, d in SDF_FACTS[shape]])
    np.testing.assert_allclose(sdf(shape, points), expected, atol=1e-9)
    # the same numbers from torch, dtype and shape kept
    t = sdf(shape, torch.from_numpy(points))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-9)
    np.testing.assert_array_equal(occupancy(shape, points), expected < 0)
    assert sdf(shape, points.reshape(1, -1, 3).astype(np.float32)).shape == (1, len(points))


@pytest.mark.parametrize("shape", SHAPES)
def test_sdf_is_exact_unit_gradient(shape):
    """An exact SDF has |grad| = 1 almost everywhere (a bound, e.g. max(|x|) - 0.4, would not)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, (4000, 3))
    eps = 1e-6
    grad = np.stack([(sdf(shape, p + eps * e) - sdf(shape, p - eps * e)) / (2 * eps) for e in np.eye(3)], -1)
    norm = np.linalg.norm(grad, axis=-1)
    assert np.mean(np.abs(norm - 1) < 1e-4) > 0.99


@pytest.mark.parametrize("shape", SHAPES)
def test_meshes_are_watertight_on_the_surface_and_cached(shape):
    mesh = shape_mesh(shape)
    assert mesh.is_watertight
    assert np.abs(sdf(shape, mesh.vertices)).max() < 1e-9
    assert shape_mesh(shape) is mesh  # cached
    lo, hi = mesh.bounds
    zmax = {"cube": 0.4, "sphere": 0.5, "cylinder": 0.4, "cone": 0.45, "torus": 0.15}[shape]
    assert lo[2] == pytest.approx(-zmax, abs=1e-3) and hi[2] == pytest.approx(zmax, abs=1e-3)


def test_objects_prompts_and_parser():
    objs = all_objects()
    assert len(objs) == 30 and len(set(objs)) == 30
    assert ShapeObject("cube", "red").prompt == "a red cube"
    assert ShapeObject("cone", "orange").albedo == (0.90, 0.45, 0.05)
    assert COLOURS["green"] == (0.10, 0.65, 0.12)
    for obj in objs:
        assert parse_prompt(obj.prompt) == (obj.shape, obj.colour)
        assert parse_prompt(obj.prompt + ", side view") == (obj.shape, obj.colour)
    assert parse_prompt("  A Blue Torus, overhead view ") == ("torus", "blue")
    assert parse_prompt("an orange cone, back view") == ("cone", "orange")
    for bad in ["a pink cube", "a red cubes", "a red", "", "the red cube is big", "a red cube, side", None]:
        assert parse_prompt(bad) is None, bad
    with pytest.raises(UserError, match="unknown colour"):
        ShapeObject("cube", "pink")
    with pytest.raises(UserError, match="unknown shape"):
        sdf("pyramid", np.zeros(3))


# ----------------------------------------------------------------------------- captions


def test_captions():
    red_cube = ShapeObject("cube", "red")
    assert caption(red_cube) == "a red cube"
    assert caption(red_cube, Camera(10, 20)) == "a red cube, front view"
    assert caption(ShapeObject("torus", "blue"), Camera(70, 20)) == "a blue torus, overhead view"
    assert caption(ShapeObject("cone", "orange"), Camera(0, -170)) == "a orange cone, back view"
    assert caption(red_cube, Camera(0, 90)).endswith(", side view")


@pytest.mark.parametrize("shape", ["cube", "cone", "torus"])
def test_a_mirrored_view_is_the_view_from_the_negated_azimuth(shape):
    """What the prior's training relies on when it flips images and keeps their captions: the view from
    -a has the same view word as the view from a, and it is the mirror image."""
    obj = ShapeObject(shape, "blue")
    for elevation, azimuth in [(20, 30), (-5, 110), (40, -160)]:
        a = render(obj, Camera(elevation, azimuth, height=48, width=48), ss=2).rgb
        b = render(obj, Camera(elevation, -azimuth, height=48, width=48), ss=2).rgb
        assert np.abs(np.flip(a, axis=1) - b).max() < 0.02 and view_word(elevation, azimuth) == view_word(
            elevation, -azimuth
        )
        assert np.abs(a - b).max() > 0.1 or shape != "cube"  # the cube really looks different from a and -a


# ----------------------------------------------------------------------------- renderer


def test_sphere_silhouette_depth_and_normal():
    d, fov, n = 2.0, 50.0, 129
    cam = Camera(20, 30, d, fov, n, n)
    out = render(ShapeObject("sphere", "green"), cam, ss=2)
    r_img = cam.focal_px * 0.5 / math.sqrt(d * d - 0.25)  # tangent cone of the sphere
    assert out.alpha.sum() == pytest.approx(math.pi * r_img**2, rel=0.01)
    out1 = render(ShapeObject("sphere", "green"), cam)
    assert out1.depth[64, 64] == pytest.approx(d - 0.5, abs=1e-6)
    np.testing.assert_allclose(out1.normal[64, 64], cam.position.numpy() / d, atol=1e-4)
    # headlight: the centre faces the light, so rgb = albedo * (AMBIENT + DIFFUSE)
    np.testing.assert_allclose(out1.rgb[64, 64], np.array(COLOURS["green"]) * (AMBIENT + DIFFUSE), atol=1e-4)


def test_cube_front_view_depth_and_square():
    d = 2.0
    cam = Camera(0, 0, d, 40, 101, 101)
    out = render(ShapeObject("cube", "blue"), cam)
    assert out.depth[50, 50] == pytest.approx(d - 0.4, abs=1e-6)
    np.testing.assert_allclose(out.normal[50, 50], [1, 0, 0], atol=1e-6)
    side = 2 * cam.focal_px * 0.4 / (d - 0.4)  # the front face hides the rest
    fine = render(ShapeObject("cube", "blue"), cam, ss=4)
    assert fine.alpha.sum() == pytest.approx(side**2, rel=0.01)
    assert np.isinf(out.depth[~out.mask]).all() and np.isfinite(out.depth[out.mask]).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_render_outputs_consistent(shape):
    cam = Camera(25, -60, 1.8, 55, 48, 40)
    out = render(ShapeObject(shape, "yellow"), cam, background=(0.0, 0.25, 1.0), ss=2)
    assert out.rgb.shape == out.albedo.shape == out.normal.shape == (48, 40, 3)
    assert out.rgb.dtype == out.depth.dtype == np.float32 and out.mask.dtype == bool
    assert 0.02 < out.mask.mean() < 0.8
    np.testing.assert_allclose(out.rgb[out.alpha == 0], np.tile([0.0, 0.25, 1.0], ((out.alpha == 0).sum(), 1)))
    np.testing.assert_allclose(np.linalg.norm(out.normal[out.mask], axis=-1), 1.0, atol=1e-5)
    assert (np.abs(out.normal[~out.mask]) == 0).all()
    # visible normals face the camera
    o, dirs = cam.rays()
    assert ((out.normal[out.mask] * dirs.numpy()[out.mask]).sum(-1) < 0.05).all()
    # every depth lies within the object's reach from the camera
    assert (out.depth[out.mask] > 1.8 - 0.7).all() and (out.depth[out.mask] < 1.8 + 0.7).all()
    assert (np.abs(out.albedo[out.alpha == 1] - COLOURS["yellow"]) < 1e-6).all()


def test_fixed_light_shading_and_placement():
    light = np.array([0.3, -0.5, 0.8])
    light = light / np.linalg.norm(light)
    cam = Camera(0, 0, 2.0, 40, 63, 63)
    sphere = Placement("sphere", COLOURS["red"], position=(0.3, 0.0, 0.0), scale=0.5, yaw_deg=30)
    out = render(Scene((sphere,)), cam, light=light)
    assert out.depth[31, 31] == pytest.approx(2.0 - 0.3 - 0.25, abs=1e-6)
    m = out.mask
    n_dot_l = np.clip(out.normal[m] @ light, 0, None)
    expected = np.array(COLOURS["red"]) * (AMBIENT + DIFFUSE * n_dot_l[:, None])
    np.testing.assert_allclose(out.rgb[m], expected, atol=1e-5)
    assert out.object_id[31, 31] == 0 and out.object_id[0, 0] == -1


def test_render_inputs_and_uint8():
    cam = Camera(height=16, width=16)
    assert render("a red cube, side view", cam).mask.any()
    with pytest.raises(UserError):
        render("a pink cube", cam)
    with pytest.raises(UserError, match="ss="):
        render(ShapeObject("cube", "red"), cam, ss=0)
    img = to_uint8(np.array([[[0.0, 0.5, 1.2]]]))
    assert img.dtype == np.uint8 and img.tolist() == [[[0, 128, 255]]]
    assert to_uint8(np.array([0.5]), srgb=True)[0] == 188
