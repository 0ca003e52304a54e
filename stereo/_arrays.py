"""Small helpers that turn caller input (numpy arrays or torch tensors) into numpy arrays.

Every public function of :mod:`stereo` takes numpy arrays or torch tensors and returns numpy
arrays; this module does the conversion in one place. Torch tensors are detached and copied to
the CPU; images given channel-first (3 x H x W, as torch code usually holds them) are moved to
channel-last (H x W x 3).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of ``x`` (numpy array, torch tensor or nested sequence)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_map(x: Any, name: str) -> np.ndarray:
    """An H x W map (disparity, depth). H x W x 1 and 1 x H x W inputs are squeezed."""
    a = to_numpy(x)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:]) if a.shape[0] == 1 else a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be an H x W map, got shape {tuple(a.shape)}")
    return a


def as_rgb_uint8(x: Any, name: str) -> np.ndarray:
    """An H x W x 3 uint8 image.

    uint8 input is used as is; floating-point input is taken to be on the [0, 1] scale and
    rounded to the nearest level; channel-first (3 x H x W) input is transposed.
    """
    a = to_numpy(x)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = np.moveaxis(a, 0, -1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must be an H x W x 3 image, got shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return np.clip(a, 0, 255).astype(np.uint8)
    raise ValueError(f"{name} has unsupported dtype {a.dtype}")


def check_mode(mode: str) -> str:
    """Validate the ``mode`` argument shared by all stages."""
    if mode not in ("default", "reference"):
        raise ValueError(f"mode must be 'default' or 'reference', got {mode!r}")
    return mode
