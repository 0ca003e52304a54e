"""Photo-like inputs for image to 3D: a shapes-world object rendered as a cut-out product photo.

:func:`object_rgba` is a clean render as an RGBA image (straight colour, the coverage as alpha).
:func:`photo_like` adds what a real cut-out photo has and a render has not: texture noise on the
object (smooth blotches and per-pixel grain, multiplying its colour) and a soft contact shadow on
the ground under it (a blurred flat ellipse below the object's lowest pixels, semi-transparent and
dark, so the alpha channel holds it as a real matte with a shadow does). The object's true shape
and mean colour are unchanged, so the shapes world's measures still score what is reconstructed
from it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from ..cameras import Camera
from .objects import ShapeObject
from .render import render


def object_rgba(obj: ShapeObject, camera: Camera, ss: int = 4) -> np.ndarray:
    """``(H, W, 4)`` float32 RGBA in [0, 1]: the render's straight colour and its coverage."""
    out = render(obj, camera, background=(0.0, 0.0, 0.0), ss=ss)  # premultiplied colour over black
    alpha = out.alpha[..., None]
    rgb = np.where(alpha > 1e-6, out.rgb / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0, 1), alpha], axis=-1).astype(np.float32)


def photo_like(
    obj: ShapeObject,
    camera: Camera,
    seed: int = 0,
    noise: float = 0.15,
    grain: float = 0.03,
    shadow: float = 0.45,
    ss: int = 4,
) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA: :func:`object_rgba` with texture noise (``noise``: the blotches'
    standard deviation as a fraction of the colour; ``grain``: per-pixel) and a soft shadow of peak
    opacity ``shadow`` (module docstring), drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    rgba = object_rgba(obj, camera, ss)
    h, w = rgba.shape[:2]
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    coarse = rng.normal(0.0, 1.0, (max(2, h // 8), max(2, w // 8)))
    blotches = zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1]), order=1)[:h, :w]
    blotches = blotches / max(float(blotches.std()), 1e-6)
    texture = 1.0 + noise * blotches[..., None] + grain * rng.normal(0.0, 1.0, (h, w, 1))
    rgb = np.clip(rgb * texture, 0.0, 1.0)

    rows, cols = np.nonzero(alpha >= 0.5)
    shadow_alpha = np.zeros((h, w))
    if rows.size:
        width = cols.max() - cols.min() + 1
        yy, xx = np.mgrid[0:h, 0:w]
        cx, cy = cols.mean(), rows.max() - 0.02 * h
        ellipse = ((xx - cx) / (0.6 * width)) ** 2 + ((yy - cy) / (0.12 * width)) ** 2 <= 1.0
        shadow_alpha = shadow * np.clip(gaussian_filter(ellipse.astype(np.float64), 0.04 * h) * 1.6, 0.0, 1.0)
    shade = np.full_like(rgb, 0.05)  # a dark grey shadow
    out_alpha = alpha + (1 - alpha) * shadow_alpha
    premult = rgb * alpha[..., None] + shade * ((1 - alpha) * shadow_alpha)[..., None]
    out_rgb = np.where(out_alpha[..., None] > 1e-6, premult / np.maximum(out_alpha[..., None], 1e-6), 0.0)
    out = np.concatenate([out_rgb, out_alpha[..., None]], axis=-1)
    return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)
