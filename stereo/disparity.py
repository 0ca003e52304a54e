"""Monocular inverse depth -> disparity in pixels (``docs/stereo.md``, section 1).

Conventions: the input is an *inverse* depth map (larger = nearer) of any scale and offset,
H x W. The output is a disparity map in pixels, float32, referenced to the left view, with
values in ``[0, scale]``: the nearest pixel gets ``scale``, the farthest (after the shift)
gets 0.

Steps: shift so the minimum is 0 when it is negative (no shift otherwise), divide by the
maximum, multiply by ``scale``. ``scale`` is drawn by :func:`draw_scale` unless given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import as_map, check_mode

MAX_DISPARITY = 192.0
"""The largest disparity (pixels) of the published method; also the crop margin of a pair."""

MIN_SCALE_FRACTION = 50.0 / 192.0
"""The usual scale range is ``[50, 192)`` for a maximum of 192: the lower end as a fraction."""

LARGE_SCALE_PROBABILITY = 0.01
LARGE_SCALE_RANGE = (1.05, 1.15)


def draw_scale(rng: np.random.Generator | None = None, max_disparity: float = MAX_DISPARITY) -> float:
    """Draw the disparity scale (pixels) as the published method does.

    With probability 0.01 the scale is uniform in ``[1.05 * max, 1.15 * max)``; otherwise it is
    uniform in ``[50 / 192 * max, max)``, which is ``[50, 192)`` for the default maximum.
    Exactly two numbers are drawn from ``rng`` (the coin, then the value), so a seeded generator
    gives the same scale everywhere.
    """
    rng = np.random.default_rng() if rng is None else rng
    max_disparity = float(max_disparity)
    if max_disparity <= 0:
        raise ValueError(f"max_disparity must be positive, got {max_disparity}")
    if rng.random() < LARGE_SCALE_PROBABILITY:
        lo, hi = LARGE_SCALE_RANGE
        return float(rng.uniform(lo * max_disparity, hi * max_disparity))
    return float(rng.uniform(MIN_SCALE_FRACTION * max_disparity, max_disparity))


def normalise_inverse_depth(inverse_depth: Any, mode: str = "default") -> np.ndarray:
    """Shift (only if the minimum is negative) and divide by the maximum: float64 in ``[0, 1]``.

    ``mode="reference"`` reproduces the published arithmetic, including the NaN map that a map
    whose maximum is 0 (all zeros, or all equal and negative) produces. ``mode="default"``
    never returns NaN: such a map becomes all zeros (everything infinitely far), NaN inputs
    are taken as the farthest value and +inf as the nearest finite value.
    """
    check_mode(mode)
    x = np.array(as_map(inverse_depth, "inverse_depth"), dtype=np.float64)
    if mode == "default":
        finite = np.isfinite(x)
        if not finite.any():
            return np.zeros_like(x)
        if not finite.all():
            lo, hi = x[finite].min(), x[finite].max()
            x = np.where(np.isposinf(x), hi, np.where(finite, x, lo))
    lowest = x.min()
    if lowest < 0:
        x = x + abs(lowest)
    highest = x.max()
    if mode == "default" and not highest > 0:
        return np.zeros_like(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / highest


def scale_disparity(
    inverse_depth: Any,
    scale: float | None = None,
    rng: np.random.Generator | None = None,
    *,
    max_disparity: float = MAX_DISPARITY,
    mode: str = "default",
) -> np.ndarray:
    """Turn a monocular inverse-depth estimate into a disparity map in pixels (float32, H x W).

    Args:
        inverse_depth: H x W inverse depth (larger = nearer), any scale; numpy or torch.
        scale: the disparity of the nearest pixel, in pixels. ``None`` draws it with
            :func:`draw_scale` from ``rng`` (pass the sample's generator to record the seed).
        rng: a ``numpy.random.Generator``; only used when ``scale`` is ``None``. ``None``
            means a fresh, unseeded generator (never the global numpy state).
        max_disparity: the maximum of the usual scale range (192).
        mode: ``"reference"`` keeps the published NaN for a map whose maximum is 0;
            ``"default"`` returns zeros for it (see :func:`normalise_inverse_depth`).

    Returns:
        float32 disparity in pixels, left-referenced, in ``[0, scale]``.
    """
    normalised = normalise_inverse_depth(inverse_depth, mode=mode)
    if scale is None:
        scale = draw_scale(rng, max_disparity)
    return (normalised * float(scale)).astype(np.float32)
