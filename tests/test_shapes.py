"""Shapes world: objects, exact SDFs, meshes, cameras, captions and the renderer against analytic facts."""

import math

import numpy as np
import pytest
import torch

from dream3d.errors import UserError
from dream3d.shapes import (
    AMBIENT,
    COLOURS,
    DIFFUSE,
    SHAPES,
    Camera,
    Placement,
    Scene,
    ShapeObject,
    all_objects,
    c2w_to_spherical,
    caption,
    occupancy,
    parse_prompt,
    rays_batch,
    render,
    sample_cameras,
    sdf,
    shape_mesh,
    spherical_to_c2w,
    stack_cameras,
    stereo_pair,
    to_uint8,
    view_word,
    wrap_azimuth,
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


# ----------------------------------------------------------------------------- camera


def test_view_words_at_boundaries():
    assert view_word(60.0, 0) == "front" and view_word(60.001, 0) == "overhead"
    assert view_word(80, 180) == "overhead"
    assert view_word(0, 44.99) == "front" and view_word(0, 45) == "side" and view_word(0, -45) == "side"
    assert view_word(0, -44.99) == "front"
    assert view_word(0, 135) == "side" and view_word(0, 135.01) == "back" and view_word(0, -135.01) == "back"
    assert view_word(0, 180) == "back" and view_word(0, -180) == "back"
    assert view_word(0, 360) == "front" and view_word(0, 225) == "side" and view_word(0, 300) == "side"
    assert view_word(-10, 90) == "side"
    assert wrap_azimuth(-180.0) == 180.0 and wrap_azimuth(190.0) == -170.0 and wrap_azimuth(540.0) == 180.0


def test_camera_pose_conventions():
    cam = Camera(elevation_deg=30, azimuth_deg=120, distance=2.0, fov_deg=50, height=65, width=97)
    m = cam.pose(torch.float64)
    e, a = math.radians(30), math.radians(120)
    expected_pos = 2.0 * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    np.testing.assert_allclose(m[:3, 3].numpy(), expected_pos, atol=1e-12)
    r = m[:3, :3].numpy()
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], expected_pos / 2.0, atol=1e-12)  # +Z_cam points back at the camera
    assert abs(r[2, 0]) < 1e-12 and r[2, 1] > 0  # right is horizontal, up points up
    np.testing.assert_allclose((cam.w2c @ cam.c2w).numpy(), np.eye(4), atol=1e-6)
    # the origin projects to the image centre at depth = distance
    uv, z = cam.project(torch.zeros(3))
    np.testing.assert_allclose(uv.numpy(), [97 / 2, 65 / 2], atol=1e-5)
    assert float(z) == pytest.approx(2.0)
    # intrinsics agree with project(): K @ (x, -y, -z)
    p = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    cam_pt = (cam.w2c.double() @ torch.cat([p, torch.ones(1, dtype=torch.float64)]))[:3]
    k_uv = cam.intrinsics.double() @ (cam_pt * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    np.testing.assert_allclose((k_uv[:2] / k_uv[2]).numpy(), cam.project(p)[0].numpy(), atol=1e-4)
    assert cam.focal_px == pytest.approx(0.5 * 65 / math.tan(math.radians(25)))
    # a point above the target appears above the image centre (smaller row)
    assert cam.project(torch.tensor([0.0, 0.0, 0.3]))[0][1] < 65 / 2
    # straight overhead is well defined
    top = Camera(90, 37).pose(torch.float64)
    assert torch.isfinite(top).all() and torch.allclose(top[:3, 2], torch.tensor([0, 0, 1.0], dtype=torch.float64))


def test_spherical_round_trip():
    gen = torch.Generator().manual_seed(3)
    for cam in sample_cameras(50, gen, overhead_fraction=0.3):
        e, a, r = c2w_to_spherical(cam.pose(torch.float64))
        assert e == pytest.approx(cam.elevation_deg, abs=1e-9)
        assert a == pytest.approx(cam.azimuth_deg, abs=1e-9)
        assert r == pytest.approx(cam.distance, abs=1e-12)
    for e, a in [(90.0, 37.0), (-90.0, -120.0), (0.0, 180.0), (0.0, -180.0)]:
        e2, a2, _ = c2w_to_spherical(spherical_to_c2w(e, a, 2.0, dtype=torch.float64))
        assert e2 == pytest.approx(e) and a2 == pytest.approx(wrap_azimuth(a))
    batch = spherical_to_c2w(torch.tensor([10.0, 20.0]), torch.tensor([0.0, 90.0]), torch.tensor([1.5, 2.0]))
    assert batch.shape == (2, 4, 4)
    torch.testing.assert_close(batch[1], Camera(20, 90, 2.0).c2w)


def test_rays():
    cam = Camera(15, -40, 1.7, 60, 33, 47)
    o, d = cam.rays()
    assert o.shape == d.shape == (33, 47, 3) and o.dtype == torch.float32
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(33, 47))
    torch.testing.assert_close(d[16, 23], -cam.c2w[:3, 2])  # odd size: centre pixel looks forward
    # each ray projects back onto its own pixel centre
    uv, _ = cam.project(o[5, 7].double() + 0.9 * d[5, 7].double())
    np.testing.assert_allclose(uv.numpy(), [7.5, 5.5], atol=1e-3)
    # batched form matches, and normalize=False gives unit forward component
    cams = [cam, Camera(40, 100, 2.0, 60, 33, 47)]
    c2w, focal = stack_cameras(cams)
    ob, db = rays_batch(c2w, focal, 33, 47)
    assert db.shape == (2, 33, 47, 3)
    torch.testing.assert_close(db[0], d)
    torch.testing.assert_close(ob[1, 0, 0], cams[1].position)
    _, dz = rays_batch(c2w, focal, 33, 47, normalize=False)
    fwd = -c2w[:, :3, 2]
    torch.testing.assert_close((dz * fwd[:, None, None, :]).sum(-1), torch.ones(2, 33, 47))


def test_stereo_pair_moves_along_own_x():
    cam = Camera(25, 70, 2.0, 50, 64, 64)
    right = stereo_pair(cam, 0.3)
    torch.testing.assert_close(right.c2w[:3, :3], cam.c2w[:3, :3])
    torch.testing.assert_close(right.position - cam.position, 0.3 * cam.c2w[:3, 0])
    p = torch.tensor([0.1, 0.2, -0.1])
    (ul, vl), zl = cam.project(p)
    (ur, vr), zr = right.project(p)
    assert float(zl) == pytest.approx(float(zr), abs=1e-5) and float(vl) == pytest.approx(float(vr), abs=1e-4)
    assert float(ul - ur) == pytest.approx(cam.focal_px * 0.3 / float(zl), rel=1e-5)
    assert right.view_word == cam.view_word


def test_sample_cameras_ranges_and_determinism():
    cams = sample_cameras(400, torch.Generator().manual_seed(0), overhead_fraction=0.25)
    again = sample_cameras(400, torch.Generator().manual_seed(0), overhead_fraction=0.25)
    assert cams == again
    e = np.array([c.elevation_deg for c in cams])
    over = e > 45
    assert 0.15 < over.mean() < 0.35
    assert (e[~over] >= -10).all() and (e[over] > 60).all() and (e <= 80).all()
    assert all(-180 < c.azimuth_deg <= 180 and 1.5 <= c.distance <= 2.0 and 40 <= c.fov_deg <= 70 for c in cams)
    assert {c.view_word for c in cams} == {"front", "side", "back", "overhead"}
    with pytest.raises(UserError, match="Generator"):
        sample_cameras(3, None)


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
        assert np.abs(np.flip(a, axis=1) - b).max() < 0.02 and view_word(elevation, azimuth) == view_word(elevation, -azimuth)
        assert np.abs(a - b).max() > 0.1 or shape != "cube"  # the cube really looks different from a and -a


def test_bad_camera_input():
    for kwargs in [dict(elevation_deg=95), dict(distance=0), dict(fov_deg=180), dict(height=0)]:
        with pytest.raises(UserError):
            Camera(**kwargs)


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
