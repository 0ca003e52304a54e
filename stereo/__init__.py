"""Stereo training pairs from single images (Watson et al., "Learning Stereo from Single Images").

Written from the algorithm as ``docs/stereo.md`` states it (numbered sections); the published
code was not used.
Conventions everywhere: the input image is the LEFT view (H x W x 3 uint8); disparity ``d >= 0``
is in pixels and left-referenced, a left pixel at column ``x`` lands at ``x - d`` in the right
view. Functions take numpy arrays or torch tensors and return numpy arrays. Randomness comes
from an explicit ``numpy.random.Generator`` (or a seed), never from global state.

Core (each with ``mode="default"`` or ``mode="reference"``; the reference mode reproduces the
published behaviour bit for bit, the default mode fixes its faults):

- :func:`scale_disparity` - monocular inverse depth -> disparity in pixels.
- :func:`sharpen_disparity` - remove flying pixels on soft depth edges.
- :func:`forward_warp` - occlusion-aware forward warp; returns ``.right``, ``.visible``, ``.holes``.
- :func:`make_pair` - scale, sharpen, colour-matched background, warp and crop.

Around it: :mod:`stereo.depth_sources` (depth maps on disk, transformers models),
:mod:`stereo.writer` (data-set writer behind ``dream3d stereo generate``),
:class:`stereo.dataset.StereoPairDataset` (PyTorch, pairs on the fly), :mod:`stereo.pfm` and
:mod:`stereo.kitti_png` (disparity files), :mod:`stereo.preview` (colour-mapped previews).
"""

from .background import match_colour
from .disparity import MAX_DISPARITY, draw_scale, scale_disparity
from .kitti_png import read_disparity_png, write_disparity_png
from .pair import StereoPair, make_pair
from .pfm import read_pfm, write_pfm
from .preview import disparity_preview
from .sharpen import sharpen_disparity, sobel_magnitude
from .warp import WarpResult, forward_warp

__all__ = [
    "MAX_DISPARITY",
    "StereoPair",
    "StereoPairDataset",
    "WarpResult",
    "disparity_preview",
    "draw_scale",
    "forward_warp",
    "make_pair",
    "match_colour",
    "read_disparity_png",
    "read_pfm",
    "scale_disparity",
    "sharpen_disparity",
    "sobel_magnitude",
    "write_disparity_png",
    "write_pfm",
]


def __getattr__(name):
    if name == "StereoPairDataset":  # the `dream3d stereo` commands never need it
        from .dataset import StereoPairDataset  # noqa: PLC0415 - deferred: imports torch (~1 s)

        return StereoPairDataset
    raise AttributeError(f"module 'stereo' has no attribute '{name}'")
