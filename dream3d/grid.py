"""Image grids: sample sheets, validation grids (RGB | normal | opacity), previews."""

from __future__ import annotations

import numpy as np


def make_grid(images, cols: int, pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile images into rows of ``cols``; returns an (H, W, 3) uint8 array.

    ``images``: a float tensor/array (N, 3, H, W) or (N, H, W, 3) in [0, 1], a uint8 array
    (N, H, W, 3), or a list of PIL images / arrays of one size.
    """
    arr = _to_uint8_nhwc(images)
    n, h, w = arr.shape[:3]
    rows = -(-n // cols)
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), background, np.uint8)
    for i, img in enumerate(arr):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return grid


def _to_uint8_nhwc(images) -> np.ndarray:
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im) for im in images])
    if hasattr(images, "detach"):  # torch tensor
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr
