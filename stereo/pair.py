"""One stereo training pair from one image and its monocular inverse depth.

:func:`make_pair` chains the stages of the method:

1. :func:`stereo.scale_disparity`: inverse depth -> disparity in pixels (scale drawn from the
   sample's generator unless given).
2. :func:`stereo.sharpen_disparity`: remove flying pixels on soft depth edges.
3. :func:`stereo.background.match_colour`: colour-match the background image to the view.
4. :func:`stereo.forward_warp`: synthesise the right view; holes from the background.
5. Crop: keep the first ``W - margin`` columns (margin = ``ceil(max_disparity)``) of
   everything, so every right pixel has a source when the disparity is at most the margin.

Conventions: the input image is the *left* view; disparity is in pixels, left-referenced
(``x_right = x_left - d``); ``visible`` is left-referenced, ``holes`` right-referenced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._arrays import as_map, as_rgb_uint8, check_mode
from .background import match_colour_uint8
from .disparity import MAX_DISPARITY, draw_scale, scale_disparity
from .resize import resize_map
from .sharpen import sharpen_disparity
from .warp import forward_warp


@dataclass
class StereoPair:
    """A synthesised pair (numpy arrays, all H x W after the crop).

    Attributes:
        left: H x W x 3 uint8 left view (the input image, cropped).
        right: H x W x 3 uint8 synthesised right view.
        disparity: H x W float32 disparity in pixels, left-referenced (after sharpening).
        visible: H x W bool, left pixels visible in the right view.
        holes: H x W bool, right pixels filled from the background.
        scale: the disparity scale used (pixels).
        mode: ``"default"`` or ``"reference"``.
        seed: the seed of the generator, when one was given as ``seed=``.
    """

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    visible: np.ndarray
    holes: np.ndarray
    scale: float
    mode: str
    seed: int | None = None


def crop_margin(max_disparity: float) -> int:
    """Columns dropped on the right by the crop: ``ceil(max_disparity)``."""
    return int(math.ceil(max_disparity))


def make_pair(
    image: Any,
    inverse_depth: Any,
    background: Any = None,
    *,
    mode: str = "default",
    scale: float | None = None,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    max_disparity: float = MAX_DISPARITY,
    crop: bool = True,
    sharpen: bool = True,
    fill_cracks: bool = False,
) -> StereoPair:
    """Make a stereo pair from ``image`` (the left view) and its inverse depth.

    Args:
        image: H x W x 3 uint8 image (numpy or torch). With ``crop=True`` it must be wider than
            the margin: the pair is ``W - ceil(max_disparity)`` wide.
        inverse_depth: inverse depth (larger = nearer), any scale; resized to the image if needed.
        background: image for the disoccluded holes (any size; resized and colour-matched).
            ``None`` uses ``image`` itself.
        mode: ``"default"`` (faults fixed) or ``"reference"`` (published behaviour).
        scale: disparity of the nearest pixel; ``None`` draws it (see :func:`stereo.draw_scale`).
        rng: generator for the scale; ``seed`` makes one (``numpy.random.default_rng(seed)``).
        max_disparity: top of the usual scale range and width of the crop margin (192).
        crop: keep the first ``W - margin`` columns (the published pipeline's crop).
        sharpen: apply :func:`stereo.sharpen_disparity` (on by default, as published).
        fill_cracks: fill one-pixel cracks of the warp (see :func:`stereo.forward_warp`).
    """
    check_mode(mode)
    left = as_rgb_uint8(image, "image")
    height, width = left.shape[:2]
    inverse = as_map(inverse_depth, "inverse_depth")
    if inverse.shape != (height, width):
        inverse = resize_map(np.asarray(inverse, dtype=np.float32), height, width)
    margin = crop_margin(max_disparity) if crop else 0
    if crop and width <= margin:
        raise ValueError(
            f"image is {width} px wide; with crop=True it must be wider than the margin of {margin} px "
            f"(max_disparity): resize it first or pass crop=False"
        )
    if rng is None:
        rng = np.random.default_rng(seed)
    if scale is None:
        scale = draw_scale(rng, max_disparity)
    disparity = scale_disparity(inverse, scale=scale, mode=mode)
    if sharpen:
        disparity = sharpen_disparity(disparity, mode=mode)
    bg = match_colour_uint8(left if background is None else background, left, mode=mode)
    warped = forward_warp(left, disparity, bg, mode=mode, fill_cracks=fill_cracks)
    keep = slice(0, width - margin)
    return StereoPair(
        left=np.ascontiguousarray(left[:, keep]),
        right=np.ascontiguousarray(warped.right[:, keep]),
        disparity=np.ascontiguousarray(disparity[:, keep], dtype=np.float32),
        visible=np.ascontiguousarray(warped.visible[:, keep]),
        holes=np.ascontiguousarray(warped.holes[:, keep]),
        scale=float(scale),
        mode=mode,
        seed=seed,
    )
