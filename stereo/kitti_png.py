"""KITTI-style 16-bit PNG disparity: ``uint16 = round(disparity * 256)``, 0 = invalid.

The format stores disparities from 1/256 to 255.996 pixels in steps of 1/256. A valid
disparity that would round to 0 (below 1/512 px) is stored as 1 (1/256 px) so it is not
mistaken for an invalid pixel; values above the range are clipped to 65535.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ._arrays import as_map

SCALE = 256.0


def encode_disparity_png(disparity: Any, valid: Any = None) -> np.ndarray:
    """H x W uint16 KITTI encoding of ``disparity``; ``valid`` (default: finite and >= 0) marks kept pixels."""
    d = np.asarray(as_map(disparity, "disparity"), dtype=np.float64)
    ok = np.isfinite(d) & (d >= 0)
    if valid is not None:
        ok &= np.asarray(as_map(valid, "valid"), dtype=bool)
    code = np.clip(np.rint(np.where(ok, d, 0.0) * SCALE), 1, 65535)
    return np.where(ok, code, 0).astype(np.uint16)


def decode_disparity_png(code: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_disparity_png`: (float32 disparity with 0 where invalid, valid mask)."""
    c = np.asarray(as_map(code, "code"))
    valid = c > 0
    return (c.astype(np.float32) / np.float32(SCALE)) * valid, valid


def write_disparity_png(path: str | os.PathLike, disparity: Any, valid: Any = None) -> None:
    """Write a KITTI-style 16-bit disparity PNG (wrap ``path`` in ``atomic_path`` for atomicity)."""
    Image.fromarray(encode_disparity_png(disparity, valid)).save(path, format="PNG")


def read_disparity_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI-style 16-bit disparity PNG: (float32 disparity, valid mask)."""
    with Image.open(path) as im:
        code = np.array(im)
    if code.dtype != np.uint16 and code.dtype != np.int32:
        raise ValueError(f"{path}: not a 16-bit disparity PNG (mode {code.dtype})")
    return decode_disparity_png(code)
