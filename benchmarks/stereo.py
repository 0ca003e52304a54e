"""Speed of `stereo` (scale, sharpen, forward warp) against a column-loop implementation of the spec.

Two column-loop baselines of the warp live in this file, written straight from the algorithm
(``docs/stereo.md``, section 3) with a Python loop over columns (each step
vectorised over rows):

- ``column_loop_warp``: the occlusion test as section 3 states it - every column is compared with
  the targets of all columns to its right (O(H * W^2) work, like the published code) - then the
  splat visits columns right to left.
- ``column_sweep_warp``: the same, but the set of claimed targets is grown column by column while
  sweeping right to left (O(H * W) work; still a Python loop over columns).

Both are checked to give outputs identical to ``stereo.forward_warp`` (``right``, ``visible`` and
``holes``, in both modes) before anything is timed; the script exits with 1 otherwise.

Input: a synthetic 512 x 1024 scene (blurred discs at several depths over a slanted ground,
random texture), deterministic. Timings are medians over ``--repeats`` runs in this process,
baselines measured in the same run.

    python benchmarks/stereo.py                    # 512 x 1024
    python benchmarks/stereo.py --height 256 --width 512 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, median, print_table, write_results  # noqa: E402

from stereo import forward_warp, make_pair, scale_disparity, sharpen_disparity  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Baselines: straightforward column loops of section 3


def _targets(disparity, reference):
    H, W = disparity.shape
    s = np.arange(W, dtype=np.float64)[None, :] - np.asarray(disparity, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        in_view = ((s > 0) if reference else (s >= 0)) & (s <= W - 1)
    return s, np.floor(s), np.ceil(s), in_view


def _splat_and_blend(left, background, s, floor_s, ceil_s, kept, reference):
    """Section 3.2-3.4: visit kept pixels right to left (one column at a time, all rows at once)."""
    H, W = s.shape
    rows = np.arange(H)
    w_u = np.full((H, W), 10000.0)
    w_d = np.full((H, W), 10000.0)
    u = np.zeros((H, W, 3))
    d = np.zeros((H, W, 3))
    hit_u = np.zeros((H, W), bool)
    hit_d = np.zeros((H, W), bool)
    for c in range(W - 1, -1, -1):
        r = rows[kept[:, c]]
        if r.size == 0:
            continue
        sc = s[r, c]
        colour = left[r, c] / 255.0 if reference else left[r, c].astype(np.float64)
        t = ceil_s[r, c].astype(np.intp)
        dist = t - sc
        better = w_u[r, t] > dist  # strictly nearer: on a tie the pixel further right stays
        w_u[r[better], t[better]] = dist[better]
        u[r[better], t[better]] = colour[better]
        hit_u[r[better], t[better]] = True
        t = floor_s[r, c].astype(np.intp)
        dist = 1 - (ceil_s[r, c] - sc)
        better = w_d[r, t] > dist
        w_d[r[better], t[better]] = dist[better]
        d[r[better], t[better]] = colour[better]
        hit_d[r[better], t[better]] = True
    bg = background.astype(np.float64) if background.dtype == np.uint8 else background * 255.0
    if reference:
        total = w_u + w_d + 1e-7
        norm_u, norm_d = w_u / total, w_d / total
        out = (u * norm_d[..., None] + d * norm_u[..., None]) * 255.0
        holes = np.all(out == 0, axis=-1)
        out[holes] = bg[holes]
        return out.astype(np.uint8), holes
    both = hit_u & hit_d
    holes = ~(hit_u | hit_d)
    a_u = np.where(both, w_d, 1.0)[..., None]
    a_d = np.where(both, w_u, 1.0)[..., None]
    out = np.where(both[..., None], (u * a_u + d * a_d) / (a_u + a_d), np.where(hit_u[..., None], u, d))
    if background.dtype != np.uint8:
        bg = np.rint(np.clip(bg, 0, 255))
    out[holes] = bg[holes]
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8), holes


def column_loop_warp(left, disparity, background, mode="default"):
    """Section 3.1's occlusion test literally: each column against all columns >= c + 2 (O(H W^2))."""
    reference = mode == "reference"
    s, floor_s, ceil_s, in_view = _targets(disparity, reference)
    H, W = s.shape
    kept = np.zeros((H, W), bool)
    for c in range(W):
        if c >= W - 2:
            kept[:, c] = in_view[:, c]
            continue
        f, e = floor_s[:, c : c + 1], ceil_s[:, c : c + 1]
        right_f, right_c = floor_s[:, c + 2 :], ceil_s[:, c + 2 :]
        f_claimed = (right_f == f).any(axis=1) | (right_c == f).any(axis=1)
        c_claimed = (right_f == e).any(axis=1) | (right_c == e).any(axis=1)
        kept[:, c] = in_view[:, c] & ~(f_claimed & c_claimed)
    right, holes = _splat_and_blend(left, background, s, floor_s, ceil_s, kept, reference)
    return right, kept, holes


def column_sweep_warp(left, disparity, background, mode="default"):
    """The same with the claimed targets grown while sweeping columns right to left (O(H W))."""
    reference = mode == "reference"
    s, floor_s, ceil_s, in_view = _targets(disparity, reference)
    H, W = s.shape
    rows = np.arange(H)
    claimed = np.zeros((H, W + 2), bool)  # target t at index t + 1; out-of-range targets at the ends
    f_idx = np.clip(np.nan_to_num(floor_s, nan=-1.0), -1, W).astype(np.intp) + 1
    c_idx = np.clip(np.nan_to_num(ceil_s, nan=-1.0), -1, W).astype(np.intp) + 1
    finite = np.isfinite(s)
    kept = np.zeros((H, W), bool)
    for c in range(W - 1, -1, -1):
        if c + 2 < W:  # column c + 2 joins the claimers of column c
            r = rows[finite[:, c + 2]]
            claimed[r, f_idx[r, c + 2]] = True
            claimed[r, c_idx[r, c + 2]] = True
        kept[:, c] = in_view[:, c] & ~(claimed[rows, f_idx[:, c]] & claimed[rows, c_idx[:, c]])
    right, holes = _splat_and_blend(left, background, s, floor_s, ceil_s, kept, reference)
    return right, kept, holes


# ----------------------------------------------------------------------------------------------


def synthetic_scene(height, width, seed=0):
    """A textured image and a plausible inverse depth: a slanted ground plus blurred discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    inverse = 0.2 + 0.6 * yy / height
    for _ in range(10):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        radius = rng.integers(height // 16, height // 4)
        inverse = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2, rng.uniform(0.3, 1.0), inverse)
    inverse = ndimage.gaussian_filter(inverse, 2.0)  # soft edges, as a network predicts them
    texture = ndimage.gaussian_filter(rng.random((height, width, 3)), (1.5, 1.5, 0))
    image = np.clip((texture - texture.mean()) * 4 * 255 + 128, 0, 255).astype(np.uint8)
    background = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    return image, inverse, background


def timeit(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times) * 1000.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of our code (median)")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="timed runs of each baseline (median)")
    parser.add_argument("--scale", type=float, default=150.0, help="disparity scale (pixels)")
    args = parser.parse_args(argv)

    H, W = args.height, args.width
    image, inverse, background = synthetic_scene(H, W)
    results = {"size": [H, W], "scale": args.scale, "rows": []}
    rows = []

    # 1. identical outputs
    for mode in ("default", "reference"):
        disparity = sharpen_disparity(scale_disparity(inverse, scale=args.scale, mode=mode), mode=mode)
        ours = forward_warp(image, disparity, background, mode=mode)
        for name, baseline in (("column loop", column_loop_warp), ("column sweep", column_sweep_warp)):
            right, visible, holes = baseline(image, disparity, background, mode=mode)
            same = (
                np.array_equal(right, ours.right)
                and np.array_equal(visible, ours.visible)
                and np.array_equal(holes, ours.holes)
            )
            print(f"{mode:9s} {name:12s} identical to stereo.forward_warp: {same}")
            if not same:
                print("outputs differ: not timing", file=sys.stderr)
                return 1
    results["identical"] = True

    # 2. timings
    for mode in ("default", "reference"):
        disparity = sharpen_disparity(scale_disparity(inverse, scale=args.scale, mode=mode), mode=mode)
        t_scale = timeit(lambda: scale_disparity(inverse, scale=args.scale, mode=mode), args.repeats)
        t_sharpen = timeit(lambda: sharpen_disparity(disparity, mode=mode), args.repeats)
        t_warp = timeit(lambda: forward_warp(image, disparity, background, mode=mode), args.repeats)
        t_loop = timeit(lambda: column_loop_warp(image, disparity, background, mode=mode), args.baseline_repeats)
        t_sweep = timeit(lambda: column_sweep_warp(image, disparity, background, mode=mode), args.baseline_repeats)

        def pair():
            d = sharpen_disparity(scale_disparity(inverse, scale=args.scale, mode=mode), mode=mode)
            return forward_warp(image, d, background, mode=mode)

        t_pair = timeit(pair, args.repeats)
        t_pair_loop = t_scale + t_sharpen + t_loop
        wide_image, wide_inverse, wide_bg = synthetic_scene(H, W + 192, seed=1)
        t_make_pair = timeit(
            lambda: make_pair(wide_image, wide_inverse, wide_bg, mode=mode, scale=args.scale), args.repeats
        )
        size = f"{H}x{W}"
        entries = [
            ("warp", "column loop (O(HW^2))", t_loop, t_warp),
            ("warp", "column sweep (O(HW))", t_sweep, t_warp),
            ("scale", "-", None, t_scale),
            ("sharpen", "-", None, t_sharpen),
            ("pair: scale+sharpen+warp", "column loop warp", t_pair_loop, t_pair),
            (f"make_pair {H}x{W + 192} -> {size}", "-", None, t_make_pair),
        ]
        for stage, baseline, t_base, t_ours in entries:
            ratio = t_base / t_ours if t_base else None
            rows.append(
                [
                    mode,
                    stage,
                    size,
                    baseline,
                    f"{t_base:.1f}" if t_base else "-",
                    f"{t_ours:.1f}",
                    f"{ratio:.1f}x" if ratio else "-",
                ]
            )
            results["rows"].append(
                {
                    "mode": mode,
                    "stage": stage,
                    "size": size,
                    "baseline": baseline,
                    "baseline_ms": t_base,
                    "ours_ms": t_ours,
                    "speedup": ratio,
                }
            )

    print(f"\nmachine: {machine()}")
    print_table(["mode", "stage", "size", "baseline", "baseline ms", "ours ms", "speed-up"], rows)
    write_results("stereo", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
