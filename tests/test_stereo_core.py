"""Core stages of `stereo`: equivalence with a straightforward implementation of the spec, and
one test per fixed fault of the published behaviour.

The oracles below follow the algorithm of docs/stereo.md literally (Python loops over rows,
columns and sets); they are slow and only run on small inputs.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

import stereo
import stereo.sharpen
import stereo.warp
from stereo import forward_warp, make_pair, scale_disparity, sharpen_disparity, sobel_magnitude
from stereo.background import match_colour, match_colour_uint8
from stereo.disparity import draw_scale
from stereo.sharpen import nearest_valid_indices

# ----------------------------------------------------------------------------------------------
# Oracles (straightforward implementations of the spec)


def oracle_scale(inverse_depth, scale):
    """Section 1 as published: shift if min < 0, divide by max (NaN for max 0), times scale."""
    x = np.array(inverse_depth, dtype=np.float64)
    if x.min() < 0:
        x = x + abs(x.min())
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / x.max()
    return (x * scale).astype(np.float32)


def oracle_sobel(d, zero_border):
    """scikit-image's Sobel magnitude written out: [1, 0, -1] x [1, 2, 1] / 4, sqrt((gx^2 + gy^2) / 2)."""
    H, W = d.shape
    p = np.pad(d.astype(np.float64), 1, mode="symmetric")
    mag = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            py, px = y + 1, x + 1
            gx = (p[py - 1, px + 1] - p[py - 1, px - 1]) * 0.25 + (p[py, px + 1] - p[py, px - 1]) * 0.5
            gx = gx + (p[py + 1, px + 1] - p[py + 1, px - 1]) * 0.25
            gy = (p[py + 1, px - 1] - p[py - 1, px - 1]) * 0.25 + (p[py + 1, px] - p[py - 1, px]) * 0.5
            gy = gy + (p[py + 1, px + 1] - p[py - 1, px + 1]) * 0.25
            mag[y, x] = math.sqrt((gx * gx + gy * gy) / 2)
    if zero_border:
        mag[0, :] = mag[-1, :] = 0
        mag[:, 0] = mag[:, -1] = 0
    return mag


def oracle_sharpen_candidates(d, reference, threshold=3.0):
    """Section 2 by brute force. Returns, per pixel, the set of values the nearest fill may give
    (one value unless several valid pixels are equally near), or None when nothing is filled."""
    d = d.astype(np.float64).copy()
    mag = oracle_sobel(d, zero_border=reference)
    edges = mag > threshold
    if reference:
        d[edges] = 0
        invalid = d <= 0
    else:
        invalid = edges
    if invalid.all() or not invalid.any():
        return None, d
    vy, vx = np.nonzero(~invalid)
    out = {}
    for y, x in zip(*np.nonzero(invalid)):
        dist2 = (vy - y) ** 2 + (vx - x) ** 2
        nearest = dist2 == dist2.min()
        out[(y, x)] = set(d[vy[nearest], vx[nearest]].tolist())
    return out, d


def oracle_warp(left, disp, bg, mode="reference"):
    """Section 3, row by row and column by column, with Python sets for the occlusion test."""
    ref = mode == "reference"
    H, W = disp.shape
    s = np.arange(W, dtype=np.float64)[None, :] - disp.astype(np.float64)
    visible = np.zeros((H, W), bool)
    U = np.zeros((H, W, 3))
    D = np.zeros((H, W, 3))
    wU = np.full((H, W), 10000.0)
    wD = np.full((H, W), 10000.0)
    hitU = np.zeros((H, W), bool)
    hitD = np.zeros((H, W), bool)
    for r in range(H):
        for c in range(W):
            sc = float(s[r, c])
            if not math.isfinite(sc) or not ((sc > 0) if ref else (sc >= 0)) or not sc <= W - 1:
                continue
            T = set()
            for c2 in range(c + 2, W):
                v = float(s[r, c2])
                if math.isfinite(v):
                    T.add(math.floor(v))
                    T.add(math.ceil(v))
            if math.floor(sc) not in T or math.ceil(sc) not in T:
                visible[r, c] = True
        for c in range(W - 1, -1, -1):  # right to left
            if not visible[r, c]:
                continue
            sc = float(s[r, c])
            colour = left[r, c] / 255.0 if ref else left[r, c].astype(np.float64)
            t = math.ceil(sc)
            dist = t - sc
            if wU[r, t] > dist:
                wU[r, t], U[r, t], hitU[r, t] = dist, colour, True
            t = math.floor(sc)
            dist = 1 - (math.ceil(sc) - sc)
            if wD[r, t] > dist:
                wD[r, t], D[r, t], hitD[r, t] = dist, colour, True
    bg255 = bg.astype(np.float64) if bg.dtype == np.uint8 else bg.astype(np.float64) * 255.0
    if ref:
        total = wU + wD + 1e-7
        nU, nD = wU / total, wD / total
        out = (U * nD[..., None] + D * nU[..., None]) * 255.0
        holes = np.all(out == 0, axis=-1)
        out[holes] = bg255[holes]
        return out.astype(np.uint8), visible, holes
    out = np.zeros((H, W, 3))
    holes = ~(hitU | hitD)
    for r in range(H):
        for c in range(W):
            if hitU[r, c] and hitD[r, c]:
                out[r, c] = (U[r, c] * wD[r, c] + D[r, c] * wU[r, c]) / (wU[r, c] + wD[r, c])
            elif hitU[r, c]:
                out[r, c] = U[r, c]
            elif hitD[r, c]:
                out[r, c] = D[r, c]
            else:
                out[r, c] = bg255[r, c] if bg.dtype == np.uint8 else np.rint(np.clip(bg255[r, c], 0, 255))
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8), visible, holes


def random_disparity(rng, H, W, kind):
    if kind == 0:  # continuous, large
        return rng.uniform(0, W, (H, W))
    if kind == 1:  # integers: many exact ties in the splat
        return rng.integers(0, 6, (H, W)).astype(np.float32)
    if kind == 2:  # quarter pixels
        return np.round(rng.uniform(0, 8, (H, W)) * 4) / 4
    if kind == 3:  # small, float32
        return rng.uniform(0, 3, (H, W)).astype(np.float32)
    # smooth with a step, like a real scene
    x = np.linspace(0, 1, W)[None, :] * rng.uniform(0, 6) + rng.uniform(0, 3)
    d = np.repeat(x, H, axis=0)
    d[:, W // 2 :] += rng.uniform(0, 10)
    return d


# ----------------------------------------------------------------------------------------------
# Equivalence


@pytest.mark.parametrize("mode", ["reference", "default"])
def test_warp_matches_oracle_on_random_inputs(mode):
    rng = np.random.default_rng(1)
    for case in range(150):
        H, W = int(rng.integers(1, 5)), int(rng.integers(1, 36))
        d = random_disparity(rng, H, W, case % 5)
        left = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        left[rng.random((H, W)) < 0.2] = 0  # black pixels
        bg = rng.random((H, W, 3)) if case % 2 else rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        want_right, want_visible, want_holes = oracle_warp(left, d, bg, mode)
        got = forward_warp(left, d, bg, mode=mode)
        assert got.right.dtype == np.uint8 and got.visible.dtype == bool and got.holes.dtype == bool
        np.testing.assert_array_equal(got.visible, want_visible, err_msg=f"case {case}")
        np.testing.assert_array_equal(got.holes, want_holes, err_msg=f"case {case}")
        np.testing.assert_array_equal(got.right, want_right, err_msg=f"case {case}")


def test_warp_matches_oracle_across_row_blocks(monkeypatch):
    """Rows are processed in blocks; a block boundary inside the image changes nothing."""
    rng = np.random.default_rng(2)
    H, W = 7, 30
    d = rng.uniform(0, 12, (H, W))
    left = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    bg = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    monkeypatch.setattr(stereo.warp, "ROW_BLOCK_PIXELS", 2 * W)
    for mode in ("reference", "default"):
        want = oracle_warp(left, d, bg, mode)
        got = forward_warp(left, d, bg, mode=mode)
        for a, b in zip(want, (got.right, got.visible, got.holes)):
            np.testing.assert_array_equal(a, b)


def test_sobel_matches_oracle():
    rng = np.random.default_rng(3)
    for case in range(10):
        d = rng.uniform(0, 20, (int(rng.integers(3, 9)), int(rng.integers(3, 11))))
        if case % 2:
            d = np.round(d)
        for zero_border in (True, False):
            want = oracle_sobel(d, zero_border)
            got = sobel_magnitude(d, border="zero" if zero_border else "reflect")
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fill", ["sparse", "edt"])
@pytest.mark.parametrize("mode", ["reference", "default"])
def test_sharpen_matches_oracle_up_to_equidistant_ties(mode, fill, monkeypatch):
    monkeypatch.setattr(stereo.sharpen, "SPARSE_FILL_FRACTION", 1.0 if fill == "sparse" else 0.0)
    rng = np.random.default_rng(4)
    ties = 0
    for case in range(40):
        H, W = int(rng.integers(3, 12)), int(rng.integers(3, 14))
        d = rng.uniform(0, 3, (H, W))
        d[:, int(rng.integers(1, W)) :] += rng.uniform(0, 20)  # a depth edge
        if case % 3 == 0:
            d[rng.random((H, W)) < 0.2] = 0.0  # legitimately-zero pixels
        if case % 4 == 1:
            d = np.round(d)
        candidates, before = oracle_sharpen_candidates(d, reference=mode == "reference")
        got = sharpen_disparity(d, mode=mode)
        if candidates is None:
            expect = before if mode == "reference" else d
            np.testing.assert_array_equal(got, expect)
            continue
        for y in range(H):
            for x in range(W):
                if (y, x) in candidates:
                    options = candidates[(y, x)]
                    ties += len(options) > 1
                    assert got[y, x] in options, (case, y, x)
                else:
                    assert got[y, x] == before[y, x], (case, y, x)
    assert ties > 0  # the cases exercise equidistant ties


def test_reference_sharpening_breaks_ties_as_the_published_kd_tree():
    """Reference mode fills like the published code: scipy's nearest-neighbour interpolation, a k-d
    tree over the (row, col) of the pixels that keep their value, ties included (inputs are
    integer-valued, so equidistant candidates with different values are common)."""
    rng = np.random.default_rng(7)
    ties = 0
    for _ in range(60):
        H, W = int(rng.integers(4, 16)), int(rng.integers(4, 18))
        d = np.round(rng.uniform(0, 4, (H, W)))
        d[:, int(rng.integers(1, W)) :] += np.round(rng.uniform(5, 20))
        candidates, before = oracle_sharpen_candidates(d, reference=True)
        if candidates is None:
            continue
        keep = np.argwhere(before > 0)
        fill = np.array(sorted(candidates))
        _, nearest = cKDTree(keep).query(fill)
        expect = before.copy()
        expect[fill[:, 0], fill[:, 1]] = before[keep[nearest, 0], keep[nearest, 1]]
        np.testing.assert_array_equal(sharpen_disparity(d, mode="reference"), expect.astype(np.float32))
        ties += sum(len(options) > 1 for options in candidates.values())
    assert ties > 20


def test_nearest_valid_indices_is_exact(monkeypatch):
    """The sparse search finds pixels exactly as near as scipy's Euclidean distance transform."""
    rng = np.random.default_rng(16)
    for case in range(60):
        H, W = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        invalid = rng.random((H, W)) < [0.01, 0.1, 0.5, 0.95][case % 4]
        if case % 3 == 0:
            invalid = ndimage.binary_dilation(rng.random((H, W)) < 0.03, iterations=int(rng.integers(1, 9)))
        if invalid.all():
            continue
        want_r, want_c = ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True)
        for fraction, radius in ((1.0, 16), (1.0, 2), (0.3, 16)):
            monkeypatch.setattr(stereo.sharpen, "SPARSE_FILL_FRACTION", fraction)
            monkeypatch.setattr(stereo.sharpen, "SPARSE_FILL_RADIUS", radius)
            r, c, sr, sc = nearest_valid_indices(invalid)
            np.testing.assert_array_equal(np.stack([r, c]), np.nonzero(invalid))
            assert not invalid[sr, sc].any()
            np.testing.assert_array_equal(
                (sr - r) ** 2 + (sc - c) ** 2, (want_r[r, c] - r) ** 2 + (want_c[r, c] - c) ** 2
            )


def test_sharpen_keeps_dtype_and_accepts_torch():
    d = np.linspace(0, 10, 48, dtype=np.float32).reshape(6, 8)
    assert sharpen_disparity(d).dtype == np.float32
    assert sharpen_disparity(d.astype(np.float64)).dtype == np.float64
    np.testing.assert_array_equal(sharpen_disparity(torch.from_numpy(d)), sharpen_disparity(d))


def test_sharpen_turns_a_soft_edge_into_a_step():
    x = np.arange(40, dtype=np.float64)
    row = np.clip((x - 15) * 8.0, 0, 80) + 10  # a ramp of 8 px/px from 10 to 90
    d = np.repeat(row[None], 6, axis=0)
    out = sharpen_disparity(d)
    values = np.unique(out)
    assert set(values.tolist()) <= set(np.unique(d).tolist())
    assert 10 in values and 90 in values
    assert (np.diff(out[3]) >= 0).all()
    steep = np.abs(np.diff(out[3])) > 2.2
    assert steep.sum() <= 1  # at most one jump: a clean step, no slope left


def test_scale_disparity_matches_oracle_and_range():
    rng = np.random.default_rng(5)
    for _ in range(20):
        inv = rng.normal(0, 3, (5, 7))
        scale = float(rng.uniform(50, 192))
        for mode in ("reference", "default"):
            np.testing.assert_array_equal(scale_disparity(inv, scale=scale, mode=mode), oracle_scale(inv, scale))
        out = scale_disparity(inv, scale=scale)
        assert out.dtype == np.float32 and out.min() >= 0 and np.isclose(out.max(), scale)
    pos = rng.uniform(1, 2, (4, 4))  # positive minimum: no shift
    np.testing.assert_allclose(scale_disparity(pos, scale=100.0), pos / pos.max() * 100.0, rtol=1e-6)


def test_draw_scale_distribution():
    rng = np.random.default_rng(6)
    scales = np.array([draw_scale(rng) for _ in range(20000)])
    usual = scales[scales < 192]
    large = scales[scales >= 192]
    assert usual.min() >= 50 and usual.max() < 192
    assert large.min() >= 1.05 * 192 and large.max() < 1.15 * 192
    assert 0.005 < len(large) / len(scales) < 0.016  # probability 0.01
    assert abs(usual.mean() - 121) < 2


def test_torch_inputs_give_the_same_result():
    rng = np.random.default_rng(7)
    left = rng.integers(0, 256, (6, 20, 3)).astype(np.uint8)
    d = rng.uniform(0, 5, (6, 20)).astype(np.float32)
    bg = rng.integers(0, 256, (6, 20, 3)).astype(np.uint8)
    a = forward_warp(left, d, bg)
    b = forward_warp(torch.from_numpy(left).permute(2, 0, 1), torch.from_numpy(d), torch.from_numpy(bg))
    for x, y in zip((a.right, a.visible, a.holes), (b.right, b.visible, b.holes)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(scale_disparity(torch.from_numpy(d), scale=60.0), scale_disparity(d, scale=60.0))


# ----------------------------------------------------------------------------------------------
# Each fixed fault: the check holds in the default mode and fails on the published behaviour.


def _both_modes(fn):
    return fn("default"), fn("reference")


def test_fault1_black_pixels_are_kept_not_replaced():
    left = np.full((4, 30, 3), 120, np.uint8)
    left[:, 10:20] = 0  # a truly black object
    d = np.full((4, 30), 3.0)
    bg = np.full((4, 30, 3), 255, np.uint8)

    def check(mode):
        r = forward_warp(left, d, bg, mode=mode)
        return (r.right[:, 7:17] == 0).all() and not r.holes[:, 7:17].any()

    default_ok, reference_ok = _both_modes(check)
    assert default_ok and not reference_ok


def test_fault2_no_darkening_exact_rounding():
    left = np.full((3, 40, 3), 200, np.uint8)
    bg = np.zeros((3, 40, 3), np.uint8)

    def check(mode):
        ok = True
        for shift in (2.0, 2.5, 3.25):  # integer and fractional disparities
            r = forward_warp(left, np.full((3, 40), shift), bg, mode=mode)
            ok &= bool((r.right[:, 5:30] == 200).all())
        return ok

    default_ok, reference_ok = _both_modes(check)
    assert default_ok and not reference_ok


def test_fault3_column_zero_is_written():
    rng = np.random.default_rng(8)
    left = rng.integers(1, 256, (5, 30, 3)).astype(np.uint8)
    d = np.full((5, 30), 4.0)
    bg = np.zeros((5, 30, 3), np.uint8)

    def check(mode):
        r = forward_warp(left, d, bg, mode=mode)
        return not r.holes[:, 0].any() and (r.right[:, 0] == left[:, 4]).all()

    default_ok, reference_ok = _both_modes(check)
    assert default_ok and not reference_ok


def test_fault4_legitimate_zero_disparity_survives_sharpening():
    d = np.zeros((8, 16))
    d[:, 8:] = 1.0  # far plane at exactly 0 and a plane at 1 px: no edge anywhere

    def check(mode):
        return bool((sharpen_disparity(d, mode=mode) == d).all())

    default_ok, reference_ok = _both_modes(check)
    assert default_ok and not reference_ok


def test_fault5_constant_map_gives_no_nan():
    image = np.random.default_rng(9).integers(0, 256, (6, 40, 3)).astype(np.uint8)
    for constant in (0.0, -2.0):
        inverse = np.full((6, 40), constant)

        def check(mode):
            pair = make_pair(image, inverse, mode=mode, scale=100.0, crop=False)
            return bool(
                np.isfinite(pair.disparity).all() and (pair.disparity == 0).all() and (pair.right == image).all()
            )

        default_ok, reference_ok = _both_modes(check)
        assert default_ok and not reference_ok


def test_fault5_nothing_to_fill_from_is_handled():
    d = np.zeros((6, 6))  # every pixel <= 0: the published fill has nothing to fill from
    assert (sharpen_disparity(d, mode="default") == 0).all()
    x = np.arange(12, dtype=np.float64)
    ramp = np.repeat((x * 10.0)[None], 12, axis=0)  # every pixel is an edge in the default mode
    np.testing.assert_array_equal(sharpen_disparity(ramp, mode="default"), ramp)
    assert np.isfinite(sharpen_disparity(np.full((4, 4), np.nan), mode="default")).sum() == 0  # stays as given
    assert np.isfinite(sharpen_disparity(np.where(ramp > 50, np.nan, 1.0), mode="default")).all()


def test_fault8_randomness_is_per_sample_not_global():
    """Forked workers inherit the same global numpy state; per-sample generators still differ,
    and the pipeline never reads or advances the global state."""
    image = np.random.default_rng(10).integers(0, 256, (8, 260, 3)).astype(np.uint8)
    inverse = np.random.default_rng(11).random((8, 260))

    def worker(sample_seed):
        np.random.seed(1234)  # what every forked worker has
        pair = make_pair(image, inverse, seed=sample_seed)
        return pair.scale, np.random.get_state()[1][:4].copy()

    (s1, g1), (s2, g2) = worker(1), worker(2)
    (s1_again, _) = worker(1)
    assert s1 != s2 and s1 == s1_again
    np.random.seed(1234)
    untouched = np.random.get_state()[1][:4]
    np.testing.assert_array_equal(g1, untouched)
    np.testing.assert_array_equal(g2, untouched)


def test_fault7_crack_filling_is_optional():
    x = np.arange(40, dtype=np.float64)
    d = np.repeat(np.clip(30 - 1.5 * x, 0, None)[None], 3, axis=0)  # falls 1.5 px per px
    left = np.random.default_rng(12).integers(1, 256, (3, 40, 3)).astype(np.uint8)
    bg = np.zeros((3, 40, 3), np.uint8)
    plain = forward_warp(left, d, bg)
    filled = forward_warp(left, d, bg, fill_cracks=True)
    reference = forward_warp(left, d, bg, mode="reference")
    cracks = plain.holes[:, 1:-1] & ~plain.holes[:, :-2] & ~plain.holes[:, 2:]
    assert cracks.any() and reference.holes[:, 1:-1][cracks].all()
    assert not (filled.holes[:, 1:-1] & ~filled.holes[:, :-2] & ~filled.holes[:, 2:]).any()
    assert (filled.holes <= plain.holes).all()


# ----------------------------------------------------------------------------------------------
# make_pair and the small pieces


def test_make_pair_shapes_crop_and_determinism():
    rng = np.random.default_rng(13)
    image = rng.integers(0, 256, (16, 250, 3)).astype(np.uint8)
    inverse = rng.random((8, 125))  # other size: resized
    bg = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    a = make_pair(image, inverse, bg, seed=5)
    b = make_pair(image, inverse, bg, seed=5)
    assert a.left.shape == a.right.shape == (16, 58, 3)
    assert a.disparity.shape == a.visible.shape == a.holes.shape == (16, 58)
    assert a.disparity.dtype == np.float32
    np.testing.assert_array_equal(a.left, image[:, :58])
    np.testing.assert_array_equal(a.right, b.right)
    assert a.scale == b.scale and 50 <= a.scale < 1.15 * 192 and a.seed == 5
    with pytest.raises(ValueError, match="wider than the margin"):
        make_pair(image[:, :150], inverse, seed=0)


def test_match_colour_statistics():
    rng = np.random.default_rng(17)
    left = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    bg = (rng.integers(0, 256, (20, 30, 3)) // 2 + 60).astype(np.uint8)
    lf, bf = left / 255.0, bg / 255.0
    want = (bf - bf.mean((0, 1))) * (lf.std((0, 1)) / bf.std((0, 1))) + lf.mean((0, 1))
    np.testing.assert_allclose(match_colour(bg, left), np.clip(want, 0, 1), atol=1e-12)
    ref_std = lambda x: x.std(axis=0).std(axis=0)  # noqa: E731 - std over columns of column stds
    want = (bf - bf.mean((0, 1))) * (ref_std(lf) / ref_std(bf)) + lf.mean((0, 1))
    np.testing.assert_allclose(match_colour(bg, left, mode="reference"), np.clip(want, 0, 1), atol=1e-12)
    out = match_colour(bg, left)
    assert np.allclose(out.mean((0, 1)), lf.mean((0, 1)), atol=0.02)
    flat = np.full((20, 30, 3), 90, np.uint8)  # zero std: no NaN in the default mode
    assert np.isfinite(match_colour(flat, left)).all()
    # the uint8 shortcut gives the same warp as the float background
    d = rng.uniform(0, 6, (20, 30))
    for mode in ("default", "reference"):
        a = forward_warp(left, d, match_colour(bg, left, mode), mode=mode)
        b = forward_warp(left, d, match_colour_uint8(bg, left, mode), mode=mode)
        np.testing.assert_array_equal(a.right, b.right)


def test_warp_zero_disparity_is_identity_in_default_mode():
    rng = np.random.default_rng(14)
    left = rng.integers(0, 256, (5, 17, 3)).astype(np.uint8)
    r = forward_warp(left, np.zeros((5, 17)), np.zeros((5, 17, 3), np.uint8))
    np.testing.assert_array_equal(r.right, left)
    assert r.visible.all() and not r.holes.any()


def test_warp_occlusion_marks_the_hidden_background():
    # A near square (d = 10) in front of a far plane (d = 2): background pixels just left of the
    # square land under it in the right view and are occluded.
    H, W = 4, 60
    d = np.full((H, W), 2.0)
    d[:, 30:40] = 10.0
    left = np.random.default_rng(15).integers(1, 256, (H, W, 3)).astype(np.uint8)
    r = forward_warp(left, d, np.zeros((H, W, 3), np.uint8))
    assert r.visible[:, 30:40].all()  # the near square is visible
    assert not r.visible[:, 23:29].any()  # background behind it is hidden
    assert r.visible[:, 5:20].all()
    assert r.holes[:, 32:37].all()  # disoccluded strip right of the square in the right view
    np.testing.assert_array_equal(r.right[:, 20:30], left[:, 30:40])


def test_public_api():
    for name in ("scale_disparity", "sharpen_disparity", "forward_warp", "make_pair", "read_pfm", "write_pfm"):
        assert callable(getattr(stereo, name))
        assert getattr(stereo, name).__doc__
    with pytest.raises(ValueError, match="mode"):
        forward_warp(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), np.zeros((2, 2, 3), np.uint8), mode="fast")
