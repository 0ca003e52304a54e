"""Truth test on the shapes world's stereo scenes (exact disparity, true right view, true
occlusion): warping the rendered left view with the true disparity reproduces the rendered right
view, and the warp's occlusion test agrees with the geometry.

The warp gets the continuous true disparity (no scaling, no sharpening). "Visible in both" is
judged on the right view: pixels the warp covered (not holes) whose true source in the left
view - column ``x + right_disparity``, both neighbouring pixels - is visible in the right view.
"""

import numpy as np
import pytest

from dream3d.shapes import stereo_scene
from stereo import forward_warp

SEEDS = [0, 1, 2]
MIN_PSNR_DB = 30.0
MIN_IOU = 0.9


@pytest.fixture(scope="module", params=SEEDS)
def scene(request):
    return stereo_scene.make_stereo_scene(request.param)


def visible_in_both(scene, holes):
    H, W = scene.disparity.shape
    source = np.arange(W)[None, :] + scene.right_disparity  # left column of each right pixel
    lo, hi = np.floor(source).astype(int), np.ceil(source).astype(int)
    inside = (lo >= 0) & (hi < W)
    rows = np.arange(H)[:, None]
    seen = scene.occlusion[rows, np.clip(lo, 0, W - 1)] & scene.occlusion[rows, np.clip(hi, 0, W - 1)]
    return ~holes & inside & seen


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("mode", ["default", "reference"])
def test_warp_reproduces_the_rendered_right_view(scene, mode):
    result = forward_warp(scene.left, scene.disparity, np.zeros_like(scene.left), mode=mode)
    both = visible_in_both(scene, result.holes)
    assert both.mean() > 0.85
    value = psnr(result.right[both], scene.right[both])
    print(f"PSNR {mode}: {value:.2f} dB on {both.mean():.1%} of the right view")
    assert value >= MIN_PSNR_DB
    # the comparison has teeth: a warp with the disparity off by 2 px is far worse
    wrong = forward_warp(scene.left, scene.disparity + 2.0, np.zeros_like(scene.left), mode=mode)
    assert psnr(wrong.right[both], scene.right[both]) < value - 6


def test_visible_agrees_with_true_occlusion(scene):
    result = forward_warp(scene.left, scene.disparity, np.zeros_like(scene.left))
    truth = scene.occlusion
    iou = (result.visible & truth).sum() / (result.visible | truth).sum()
    print(f"occlusion IoU: {iou:.4f}")
    assert iou >= MIN_IOU
    assert not (~truth).all()  # the scenes do have occluded pixels
    assert (~result.visible & ~truth).sum() / (~truth).sum() > 0.5  # and the warp finds most of them
