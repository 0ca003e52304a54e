"""Stereo scenes of the shapes world: true disparity, re-rendered right views, occlusion."""

import numpy as np
import pytest
import torch

from dream3d.errors import UserError
from dream3d.shapes import StereoScene, make_stereo_scene


@pytest.fixture(scope="module")
def scene() -> StereoScene:
    return make_stereo_scene(0)  # default size 256 x 512


def _sample_rows(img: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``img`` (H, W, ...) along each row at float column indices (H, W)."""
    h, w = cols.shape
    c0 = np.clip(np.floor(cols).astype(int), 0, w - 2)
    frac = np.clip(cols - c0, 0.0, 1.0)
    rows = np.arange(h)[:, None]
    a, b = img[rows, c0].astype(np.float64), img[rows, c0 + 1].astype(np.float64)
    if img.ndim == 3:
        frac = frac[..., None]
    return a * (1 - frac) + b * frac


def test_layout_and_types(scene):
    h, w = 256, 512
    assert scene.left.shape == scene.right.shape == (h, w, 3) and scene.left.dtype == np.uint8
    for name in ("disparity", "depth", "right_disparity"):
        arr = getattr(scene, name)
        assert arr.shape == (h, w) and arr.dtype == np.float32 and np.isfinite(arr).all() and (arr > 0).all()
    assert scene.occlusion.shape == (h, w) and scene.occlusion.dtype == bool
    assert 2 <= len(scene.scene.objects) <= 5
    assert scene.baseline == pytest.approx(0.2) and scene.focal_px == pytest.approx(scene.left_camera.focal_px)
    # disparities in the intended range at 256 x 512
    assert 4.0 < scene.disparity.min() and scene.disparity.max() < 70.0
    assert scene.disparity.max() - scene.disparity.min() > 15.0


def test_disparity_is_focal_baseline_over_depth(scene):
    np.testing.assert_allclose(scene.disparity, scene.focal_px * scene.baseline / scene.depth, rtol=1e-6)
    np.testing.assert_allclose(scene.right_disparity, scene.focal_px * scene.baseline / scene.right_depth, rtol=1e-6)
    # geometry: back-project left pixels with their depth and project them into the right camera
    cam, right = scene.left_camera, scene.right_camera
    o, d = cam.rays(dtype=torch.float64, normalize=False)  # forward component 1: t = z-depth
    rows, cols = np.meshgrid(np.arange(0, 256, 17), np.arange(0, 512, 23), indexing="ij")
    pts = o[rows, cols] + torch.from_numpy(scene.depth[rows, cols].astype(np.float64))[..., None] * d[rows, cols]
    uv, z = right.project(pts)
    np.testing.assert_allclose(z.numpy(), scene.depth[rows, cols], rtol=1e-5)
    np.testing.assert_allclose(uv[..., 1].numpy(), rows + 0.5, atol=1e-3)  # rectified: same row
    np.testing.assert_allclose(uv[..., 0].numpy(), cols + 0.5 - scene.disparity[rows, cols], atol=1e-3)


def test_right_view_is_the_left_warped_by_true_disparity(scene):
    visible = scene.occlusion
    cols = np.arange(512)[None, :] - scene.disparity  # right pixel index (centres at +0.5 both sides)
    warped = _sample_rows(scene.right, cols)
    err = np.abs(warped - scene.left).mean(-1)
    # exclude the sub-pixel band at depth edges, where anti-aliased colours mix two surfaces
    gy, gx = np.gradient(scene.disparity)
    smooth = visible & (np.hypot(gx, gy) < 0.5)
    smooth[:, :2] = smooth[:, -2:] = False
    assert smooth.mean() > 0.7
    assert np.mean(err[smooth]) < 2.0  # grey levels (of 255)
    in_frame = cols >= 1
    assert np.mean(err[~visible & in_frame]) > 10 * np.mean(err[smooth])  # occluded: another surface
    wrong = np.abs(_sample_rows(scene.right, cols + 3.0) - scene.left).mean(-1)
    assert np.mean(wrong[smooth]) > 5 * np.mean(err[smooth])
    # the right-referenced disparity agrees where the left pixel is visible
    back = _sample_rows(scene.right_disparity, cols)
    assert np.median(np.abs(back - scene.disparity)[smooth]) < 0.05


def test_occlusion_from_geometry(scene):
    visible = scene.occlusion
    assert 0.8 < visible.mean() < 0.995
    cols = np.arange(512)[None, :] + 0.5
    assert not visible[cols - scene.disparity < 0].any()  # lands left of the right image
    # occluded pixels lie just left of a nearer surface (the right camera sees it shift left)
    hidden = ~visible & (cols - scene.disparity >= 1)
    rows, cs = np.nonzero(hidden)
    ahead = np.max(np.stack([scene.disparity[rows, np.minimum(cs + k, 511)] for k in range(1, 80)]), 0)
    assert (ahead > scene.disparity[rows, cs] + 0.5).mean() > 0.95


def test_determinism_and_seeds():
    a = make_stereo_scene(5, height=32, width=64, ss=1)
    b = make_stereo_scene(np.random.default_rng(5), height=32, width=64, ss=1)
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.disparity, b.disparity)
    c = make_stereo_scene(6, height=32, width=64, ss=1)
    assert not np.array_equal(a.left, c.left)
    wide = make_stereo_scene(5, height=32, width=64, baseline=0.4, ss=1)
    np.testing.assert_allclose(wide.disparity, 2 * a.disparity, rtol=1e-5)
    with pytest.raises(UserError, match="baseline"):
        make_stereo_scene(0, baseline=0.0)
