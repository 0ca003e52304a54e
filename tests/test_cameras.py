"""The camera convention: view words, poses, projection, rays, batches and random training cameras."""

import math

import numpy as np
import pytest
import torch

from dream3d.cameras import (
    Camera,
    CameraRanges,
    Cameras,
    CameraSampling,
    c2w_to_spherical,
    rays_batch,
    sample_cameras,
    spherical_to_c2w,
    stereo_pair,
    view_word,
    wrap_azimuth,
)
from dream3d.errors import UserError


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
    for cam in sample_cameras(50, gen, ranges=CameraRanges(overhead_fraction=0.3)):
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
    batch = Cameras.stack(cams)
    c2w, focal = batch.c2w, batch.focal_px
    ob, db = rays_batch(c2w, focal, 33, 47)
    torch.testing.assert_close(batch.rays()[1], db)
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
    ranges = CameraRanges(overhead_fraction=0.25)
    cams = sample_cameras(400, torch.Generator().manual_seed(0), ranges=ranges)
    again = sample_cameras(400, torch.Generator().manual_seed(0), ranges=ranges)
    assert cams == again
    e = np.array([c.elevation_deg for c in cams])
    over = e > 45
    assert 0.15 < over.mean() < 0.35
    assert (e[~over] >= -10).all() and (e[over] > 60).all() and (e <= 80).all()
    assert all(-180 < c.azimuth_deg <= 180 and 1.5 <= c.distance <= 2.0 and 40 <= c.fov_deg <= 70 for c in cams)
    assert {c.view_word for c in cams} == {"front", "side", "back", "overhead"}
    with pytest.raises(UserError, match="Generator"):
        sample_cameras(3, None)


def test_bad_camera_input():
    for kwargs in [dict(elevation_deg=95), dict(distance=0), dict(fov_deg=180), dict(height=0)]:
        with pytest.raises(UserError):
            Camera(**kwargs)


def test_camera_batches_and_sampling_config():
    cams = [Camera(44.9999999, 44.9999999, 1.8, 50.0, 8, 8), Camera(70.0, -135.0, 2.0, 60.0, 8, 8)]
    batch = Cameras.stack(cams)
    assert len(batch) == 2 and batch.c2w.shape == (2, 4, 4) and batch.elevation_deg.dtype == torch.float64
    assert batch.view_words() == [c.view_word for c in cams] == ["front", "overhead"]  # float64: no boundary flip
    torch.testing.assert_close(batch.positions, torch.stack([c.position for c in cams]))
    with pytest.raises(UserError, match="one image size"):
        Cameras.stack([Camera(height=8, width=8), Camera(height=9, width=8)])
    sampling = CameraSampling(height=12, width=10, batch=3)
    drawn = sampling.sample(torch.Generator().manual_seed(5))
    expect = Cameras.stack(sample_cameras(3, torch.Generator().manual_seed(5), height=12, width=10, ranges=sampling))
    assert (drawn.height, drawn.width, len(drawn)) == (12, 10, 3)
    torch.testing.assert_close(drawn.c2w, expect.c2w)
    for bad in (dict(overhead_fraction=1.5), dict(distance_range=(2.0, 1.0)), dict(fov_range=(0.0, 50.0))):
        with pytest.raises(UserError):
            CameraRanges(**bad)
    with pytest.raises(UserError):
        CameraSampling(batch=0)


def test_render_size_follows_the_resolution_milestones():
    sampling = CameraSampling(height=32, width=24, batch=1, resolution_milestones=(3, 5), milestone_sizes=(64, 128))
    assert [sampling.size(s) for s in (0, 2, 3, 4, 5, 99)] == [(32, 24)] * 2 + [(64, 64)] * 2 + [(128, 128)] * 2
    cameras = sampling.sample(torch.Generator().manual_seed(0), step=3)
    assert (cameras.height, cameras.width) == (64, 64)
    with pytest.raises(UserError, match="milestone_sizes"):
        CameraSampling(resolution_milestones=(5000,), milestone_sizes=())
