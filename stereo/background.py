"""Background image for the disoccluded holes of the right view (``docs/stereo.md``, section 4).

The holes of a forward warp (regions the right camera sees but the left does not) are filled
from another image of the data set: chosen at random (possibly the same image), resized to the
left view's size and colour-matched to it so the fill is not an obvious patch.

Colour match, per channel, on the [0, 1] scale:
``out = (bg - mean_bg) * (std_left / std_bg) + mean_left``, clipped to [0, 1].

- ``mode="default"``: true per-channel standard deviations over all pixels, with
  ``std_bg`` floored at ``STD_EPSILON`` (a flat background cannot divide by zero).
- ``mode="reference"``: the published statistic, the standard deviation (over columns) of the
  per-column standard deviations (over rows), per channel, without an epsilon.

The image is uint8, so the match is a per-channel function of 256 levels: it is computed once as
a table and looked up (:func:`colour_lut`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_rgb_uint8, check_mode
from .resize import resize_rgb

STD_EPSILON = 1e-6


def channel_stats(image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of an H x W x 3 uint8 image on the [0, 1] scale (float64).

    ``"default"``: mean and standard deviation over all pixels, from the exact 256-bin
    histogram of each channel. ``"reference"``: the mean, and the standard deviation over
    columns of the per-column standard deviations over rows (from exact integer sums).
    """
    h, w, _ = image.shape
    levels = np.arange(256, dtype=np.float64) / 255.0
    if mode == "reference":
        column_sum = image.sum(axis=0, dtype=np.int64).astype(np.float64)  # W x 3
        column_sq = np.einsum("hwc,hwc->wc", image, image, dtype=np.int64).astype(np.float64)
        column_mean = column_sum / h
        column_var = np.maximum(column_sq / h - column_mean * column_mean, 0.0)
        column_std = np.sqrt(column_var) / 255.0
        mean = column_sum.sum(axis=0) / (h * w) / 255.0
        return mean, column_std.std(axis=0)
    mean = np.empty(3)
    std = np.empty(3)
    for c in range(3):
        counts = np.bincount(image[..., c].reshape(-1), minlength=256).astype(np.float64)
        mean[c] = counts @ levels / counts.sum()
        std[c] = np.sqrt(counts @ (levels - mean[c]) ** 2 / counts.sum())
    return mean, std


def colour_lut(background: np.ndarray, left: np.ndarray, mode: str) -> np.ndarray:
    """3 x 256 float64 table: the colour-matched value on [0, 1] of each level of each channel."""
    mean_l, std_l = channel_stats(left, mode)
    mean_b, std_b = channel_stats(background, mode)
    if mode == "default":
        std_b = np.maximum(std_b, STD_EPSILON)
    levels = np.arange(256, dtype=np.float64) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        table = (levels[None, :] - mean_b[:, None]) * (std_l / std_b)[:, None] + mean_l[:, None]
    return np.clip(table, 0.0, 1.0)


def _apply(table: np.ndarray, image: np.ndarray) -> np.ndarray:
    out = np.empty(image.shape, dtype=table.dtype)
    for c in range(3):
        out[..., c] = table[c][image[..., c]]
    return out


def match_colour(background: Any, left: Any, mode: str = "default") -> np.ndarray:
    """Colour-match ``background`` to ``left``; both H x W x 3 (resized to ``left`` if needed).

    Returns:
        H x W x 3 float64 on the [0, 1] scale (pass it to :func:`stereo.forward_warp`, which
        takes float backgrounds on that scale).
    """
    check_mode(mode)
    left = as_rgb_uint8(left, "left")
    background = resize_rgb(as_rgb_uint8(background, "background"), *left.shape[:2])
    return _apply(colour_lut(background, left, mode), background)


def match_colour_uint8(background: Any, left: Any, mode: str = "default") -> np.ndarray:
    """:func:`match_colour` quantised as the warp's hole fill quantises a float background.

    ``round(255 * value)`` in the default mode, ``trunc(255 * value)`` in the reference mode, so
    ``forward_warp(..., match_colour_uint8(bg, left, mode), mode)`` equals
    ``forward_warp(..., match_colour(bg, left, mode), mode)`` and is cheaper (a 256-entry table).
    """
    check_mode(mode)
    left = as_rgb_uint8(left, "left")
    background = resize_rgb(as_rgb_uint8(background, "background"), *left.shape[:2])
    scaled = colour_lut(background, left, mode) * 255.0
    table = np.trunc(np.nan_to_num(scaled)) if mode == "reference" else np.rint(np.clip(scaled, 0.0, 255.0))
    return _apply(table.astype(np.uint8), background)
