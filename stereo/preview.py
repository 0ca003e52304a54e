"""Colour-mapped previews of disparity maps (PNG), for looking at a data set.

Near (large disparity) is warm and bright, far (small disparity) is dark blue; invalid pixels
(non-finite, or masked) are black. The colour map is a piecewise-linear ramp through fixed
anchor colours, so previews of different samples with the same ``max_disparity`` compare.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dream3d.io import save_image

from ._arrays import as_map

# Anchors from far (0) to near (1): dark blue, blue, cyan, green, yellow, orange, red, white-ish.
_ANCHORS = np.array(
    [
        [0.05, 0.03, 0.30],
        [0.10, 0.25, 0.85],
        [0.05, 0.70, 0.90],
        [0.20, 0.80, 0.35],
        [0.95, 0.90, 0.20],
        [0.98, 0.55, 0.10],
        [0.85, 0.10, 0.08],
        [1.00, 0.85, 0.80],
    ]
)


def colour_map(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped) to H x W x 3 uint8 colours; NaN -> black."""
    v = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(v)
    t = np.clip(np.where(bad, 0.0, v), 0.0, 1.0) * (len(_ANCHORS) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(_ANCHORS) - 2)
    f = (t - i)[..., None]
    rgb = _ANCHORS[i] * (1.0 - f) + _ANCHORS[i + 1] * f
    rgb[bad] = 0.0
    return np.rint(rgb * 255.0).astype(np.uint8)


def disparity_preview(disparity: Any, max_disparity: float | None = None, valid: Any = None) -> np.ndarray:
    """H x W x 3 uint8 preview of a disparity map.

    Args:
        disparity: H x W disparity in pixels.
        max_disparity: the value shown as the nearest colour; default the map's maximum.
        valid: optional H x W mask; pixels outside it are black.
    """
    d = np.asarray(as_map(disparity, "disparity"), dtype=np.float64)
    if valid is not None:
        d = np.where(np.asarray(as_map(valid, "valid"), dtype=bool), d, np.nan)
    finite = np.isfinite(d)
    top = max_disparity if max_disparity is not None else (float(d[finite].max()) if finite.any() else 1.0)
    top = top if top > 0 else 1.0
    return colour_map(d / top)


def save_disparity_preview(
    path: str | os.PathLike, disparity: Any, max_disparity: float | None = None, valid: Any = None
) -> None:
    """Write :func:`disparity_preview` as a PNG, atomically."""
    save_image(path, disparity_preview(disparity, max_disparity=max_disparity, valid=valid))
