"""Resizing and cropping images and maps to the size a pair is made at.

A pair of output width W is warped from a view ``W + margin`` wide (margin = the maximum
disparity, 192) whose first W columns are kept, so every right pixel has a source.
:func:`cover_crop` brings a photo and its depth to that size: it scales them (keeping the aspect
ratio) just enough to cover ``height x (width + margin)`` and crops the rest, centred or at a
random offset.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an H x W x 3 uint8 image to ``height`` x ``width`` (bilinear; no-op if equal)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an H x W float map to ``height`` x ``width`` (float32; no-op if equal)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    return np.asarray(Image.fromarray(values, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def cover_crop(
    image: np.ndarray,
    inverse_depth: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``image`` and ``inverse_depth`` (same size) to cover ``height x width``, then crop.

    Scaling keeps the aspect ratio and is skipped when the image already covers the size (it is
    then only cropped, at full resolution). The crop is centred, or at a uniformly random offset
    when ``rng`` is given (two integers drawn).
    """
    h, w = image.shape[:2]
    if inverse_depth.shape != (h, w):
        inverse_depth = resize_map(inverse_depth, h, w)
    if h < height or w < width:
        factor = max(height / h, width / w)
        new_h, new_w = max(height, math.ceil(h * factor - 1e-9)), max(width, math.ceil(w * factor - 1e-9))
        image = resize_rgb(image, new_h, new_w)
        inverse_depth = resize_map(inverse_depth, new_h, new_w)
        h, w = new_h, new_w
    if rng is None:
        top, left = (h - height) // 2, (w - width) // 2
    else:
        top, left = int(rng.integers(h - height + 1)), int(rng.integers(w - width + 1))
    return (
        np.ascontiguousarray(image[top : top + height, left : left + width]),
        np.ascontiguousarray(inverse_depth[top : top + height, left : left + width]),
    )
