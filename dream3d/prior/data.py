"""Training and evaluation images of the shapes world: renders of the 30 objects with captions.

Each object is rendered from cameras drawn from the training ranges
(:func:`dream3d.cameras.sample_cameras`, :class:`~dream3d.cameras.CameraRanges`), at ``size * ss`` pixels and box-downsampled to
``size`` (anti-aliased), shaded with the renderer's headlight on a white background, stored as
linear RGB uint8. Captions carry the view word: "a red cube, side view".

A set is defined by (views per object, size, ss, camera ranges, seed) and cached as one ``.npz``
file, so the expensive rendering happens once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cameras import CameraRanges, sample_cameras
from ..io import atomic_path
from ..shapes.captions import caption
from ..shapes.objects import COLOURS, SHAPES, all_objects
from ..shapes.render import render, to_uint8

ARRAYS = ("images", "shape_index", "colour_index", "elevation", "azimuth", "distance", "fov")  # and captions


@dataclass
class ShapesImages:
    """N renders: ``images`` (N, size, size, 3) uint8 and per-image labels."""

    images: np.ndarray
    captions: list[str]
    shape_index: np.ndarray  # (N,) index into dream3d.shapes.SHAPES
    colour_index: np.ndarray  # (N,) index into list(dream3d.shapes.COLOURS)
    elevation: np.ndarray  # (N,) degrees
    azimuth: np.ndarray  # (N,) degrees
    distance: np.ndarray  # (N,) world units
    fov: np.ndarray  # (N,) degrees, vertical

    def __len__(self) -> int:
        return len(self.images)

    @property
    def overhead(self) -> np.ndarray:
        return self.elevation > 60.0

    def tensors(self) -> torch.Tensor:
        """Images as float (N, 3, H, W) in [0, 1]."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 255.0


def render_views(
    views_per_object: int,
    size: int = 32,
    ss: int = 4,
    ranges: CameraRanges = CameraRanges(),
    seed: int = 0,
    progress: bool = True,
) -> ShapesImages:
    """Render every object from ``views_per_object`` random cameras (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    colours = list(COLOURS)
    images, captions, shape_idx, colour_idx, cams = [], [], [], [], []
    objects = all_objects()
    bar = tqdm(total=len(objects) * views_per_object, desc="rendering", unit="img", disable=not progress)
    for obj in objects:
        for cam in sample_cameras(views_per_object, generator, height=size, width=size, ranges=ranges):
            images.append(to_uint8(render(obj, cam, ss=ss).rgb))
            captions.append(caption(obj, cam))
            shape_idx.append(SHAPES.index(obj.shape))
            colour_idx.append(colours.index(obj.colour))
            cams.append(cam.spherical)
            bar.update()
    bar.close()
    elev, azim, dist, fov = np.array(cams, dtype=np.float32).T
    return ShapesImages(np.stack(images), captions, np.array(shape_idx), np.array(colour_idx), elev, azim, dist, fov)


def cached_views(
    cache_dir: str | Path,
    views_per_object: int,
    size: int = 32,
    ss: int = 4,
    ranges: CameraRanges = CameraRanges(),
    seed: int = 0,
    progress: bool = True,
) -> ShapesImages:
    """:func:`render_views`, cached in ``cache_dir`` under a name made of its parameters."""
    key = hashlib.sha256(repr((ranges, ARRAYS)).encode()).hexdigest()[:8]
    name = f"shapes-v{views_per_object}-s{size}-ss{ss}-cams{key}-seed{seed}.npz"
    path = Path(cache_dir) / name
    if path.is_file():
        d = np.load(path)
        return ShapesImages(captions=[str(c) for c in d["captions"]], **{k: d[k] for k in ARRAYS})
    data = render_views(views_per_object, size, ss, ranges, seed, progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, captions=np.array(data.captions), **{k: getattr(data, k) for k in ARRAYS})
    return data
