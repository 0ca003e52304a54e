"""Training views of the shapes world for the view-conditioned prior (``dream3d prior train --kind view``).

Every object is rendered from ``views_per_object`` random cameras at the image-to-3D reference
camera's distance and field of view (:data:`VIEW_DISTANCE`, :data:`VIEW_FOV`), elevations from the
project's camera ranges (:class:`~dream3d.cameras.CameraRanges`: [-10, 45] degrees, 15% overhead
views in (60, 80]), azimuths uniform; white background, headlight shading, as the text prior's
images. Each view is kept twice, at 32 px:

- as a **target**: the render box-downsampled from 4x (``ss=4``), as the text prior sees it;
- as a **conditioning image**: the same render framed by
  :func:`~dream3d.diffusion.framing.frame_object` (alpha box centred, larger side ``object_fraction``
  of the frame) from 128 px, on white: exactly what an input image goes through at inference.

Training pairs (conditioning view, target view) of one object are drawn at training time from
these views, so ``V`` views give ``V^2`` pairs per object.

**Held-out cameras** (:data:`HELD_OUT_CAMERAS`): training views whose viewing direction lies within
:data:`HELD_OUT_RADIUS` degrees of one of them are redrawn, so no training image is taken from (near)
them. The view prior's eval and the image-to-3D benchmark condition on :data:`HELD_OUT_CAMERA` and
score targets at the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..cameras import Camera, CameraRanges, sample_cameras
from ..diffusion.framing import frame_object, on_background
from ..io import atomic_path
from ..shapes.objects import all_objects
from ..shapes.render import render

VIEW_DISTANCE = 1.8  # the image-to-3D reference camera's defaults
VIEW_FOV = 50.0
# (elevation, azimuth) in degrees; the first conditions the eval and the image-to-3D benchmark
HELD_OUT_CAMERAS: tuple[tuple[float, float], ...] = (
    (15.0, 35.0),
    (5.0, 125.0),
    (30.0, -145.0),
    (0.0, -55.0),
    (40.0, 80.0),
    (70.0, -100.0),
)
HELD_OUT_CAMERA = HELD_OUT_CAMERAS[0]
HELD_OUT_RADIUS = 6.0  # degrees between viewing directions
RENDER_SCALE = 4  # conditioning images are framed from renders at 4x the size
ARRAYS = ("targets", "conditions", "object_index", "elevation", "azimuth", "box_fraction")


def held_out_camera(index: int = 0, size: int = 32) -> Camera:
    """The ``index``-th held-out camera (0: :data:`HELD_OUT_CAMERA`) at ``size`` px."""
    e, a = HELD_OUT_CAMERAS[index]
    return Camera(e, a, VIEW_DISTANCE, VIEW_FOV, size, size)


def _directions(elevation, azimuth) -> np.ndarray:
    e, a = np.deg2rad(np.asarray(elevation, dtype=np.float64)), np.deg2rad(np.asarray(azimuth, dtype=np.float64))
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)


def near_held_out(elevation, azimuth, radius: float = HELD_OUT_RADIUS) -> np.ndarray:
    """Whether each view (degrees) lies within ``radius`` degrees of a held-out camera's direction."""
    held = _directions(*zip(*HELD_OUT_CAMERAS))
    cos = _directions(elevation, azimuth) @ held.T
    return (cos > math.cos(math.radians(radius))).any(axis=-1)


def training_cameras(n: int, generator: torch.Generator, ranges: CameraRanges, size: int) -> list[Camera]:
    """``n`` cameras from ``ranges`` at the view distance and fov, none near a held-out camera."""
    fixed = CameraRanges(
        elevation_range=ranges.elevation_range,
        overhead_fraction=ranges.overhead_fraction,
        overhead_range=ranges.overhead_range,
        distance_range=(VIEW_DISTANCE, VIEW_DISTANCE),
        fov_range=(VIEW_FOV, VIEW_FOV),
    )
    cams: list[Camera] = []
    while len(cams) < n:
        batch = sample_cameras(n, generator, height=size, width=size, ranges=fixed)
        near = near_held_out([c.elevation_deg for c in batch], [c.azimuth_deg for c in batch])
        cams += [c for c, bad in zip(batch, near) if not bad]
    return cams[:n]


@dataclass
class ViewSet:
    """N views: ``targets`` and ``conditions`` (N, size, size, 3) uint8 and per-view labels."""

    targets: np.ndarray
    conditions: np.ndarray  # framed to object_fraction, on white
    object_index: np.ndarray  # (N,) index into dream3d.shapes.all_objects()
    elevation: np.ndarray  # (N,) degrees
    azimuth: np.ndarray  # (N,) degrees
    box_fraction: np.ndarray  # (N,) the unframed render's larger box side / frame (what framing changes)

    def __len__(self) -> int:
        return len(self.targets)

    @staticmethod
    def as_float(images: np.ndarray) -> torch.Tensor:
        """Images as float (N, 3, H, W) in [0, 1], contiguous (one memory layout whether the views
        were just rendered or read from the cache, so that a resumed run computes what a fresh one did)."""
        return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0).contiguous()


def render_view(obj, camera: Camera, fraction: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(target, condition, box_fraction)`` of one view: uint8 (size, size, 3) images (module docstring)."""
    size = camera.height
    out = render(obj, camera.resized(size * RENDER_SCALE, size * RENDER_SCALE))
    rgba = torch.cat([torch.from_numpy(out.rgb).permute(2, 0, 1), torch.from_numpy(out.alpha)[None]])
    target = F.avg_pool2d(rgba[None, :3], RENDER_SCALE)[0]
    condition = on_background(frame_object(rgba, fraction, size=size))
    mask = out.alpha >= 0.5
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / mask.shape[0]
    return to_uint8(target), to_uint8(condition), float(box)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))


@dataclass(frozen=True)
class ViewSetSpec:
    """What defines a set of training views (and its cache file)."""

    views_per_object: int
    fraction: float  # the conditioning images' object fraction
    size: int = 32
    ranges: CameraRanges = CameraRanges()
    seed: int = 0
    objects: int = 30  # the first N of the 30 objects


def render_view_set(spec: ViewSetSpec, progress: bool = True) -> ViewSet:
    """Render each of the first ``spec.objects`` objects from ``spec.views_per_object`` random cameras (seeded)."""
    generator = torch.Generator().manual_seed(spec.seed)
    objects = all_objects()[: spec.objects]
    rows = []
    bar = tqdm(total=len(objects) * spec.views_per_object, desc="rendering views", unit="img", disable=not progress)
    for k, obj in enumerate(objects):
        for cam in training_cameras(spec.views_per_object, generator, spec.ranges, spec.size):
            rows.append((*render_view(obj, cam, spec.fraction), k, cam.elevation_deg, cam.azimuth_deg))
            bar.update()
    bar.close()
    targets, conditions, box, index, elev, azim = zip(*rows)
    return ViewSet(
        np.stack(targets),
        np.stack(conditions),
        np.array(index),
        np.array(elev, dtype=np.float32),
        np.array(azim, dtype=np.float32),
        np.array(box, dtype=np.float32),
    )


def cached_view_set(cache_dir: str | Path, spec: ViewSetSpec, progress: bool = True) -> ViewSet:
    """:func:`render_view_set`, cached in ``cache_dir`` under a name made of its parameters."""
    ranges, fraction = spec.ranges, spec.fraction
    key = hashlib.sha256(repr((ranges, fraction, HELD_OUT_CAMERAS, HELD_OUT_RADIUS, ARRAYS)).encode()).hexdigest()[:8]
    count = "" if spec.objects == 30 else f"-o{spec.objects}"
    path = Path(cache_dir) / f"views-v{spec.views_per_object}{count}-s{spec.size}-{key}-seed{spec.seed}.npz"
    if path.is_file():
        d = np.load(path)
        return ViewSet(**{k: d[k] for k in ARRAYS})
    data = render_view_set(spec, progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: getattr(data, k) for k in ARRAYS})
    return data
