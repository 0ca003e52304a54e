"""The shapes world's stereo scenes as a no-download input for the pair generator.

``dream3d.shapes.stereo_scene.make_stereo_scene(seed)`` renders a textured back plane with a few
objects from two cameras and gives the exact left-referenced disparity. Written to a folder as
photos plus inverse-depth maps (the true disparity *is* an inverse depth), it feeds
``dream3d stereo generate --depth-dir`` and :class:`stereo.dataset.StereoPairDataset` with
nothing downloaded. The true right views are written too, to compare with the synthesised ones.

Layout of ``out_dir``::

    images/scene-<seed>.png   rendered left view
    depth/scene-<seed>.pfm    true disparity (inverse depth, kind "inverse")
    truth/scene-<seed>.png    rendered right view
"""

from __future__ import annotations

import os
from pathlib import Path

from dream3d.io import atomic_path, save_image

from .pfm import write_pfm


def write_shapes_inputs(
    out_dir: str | os.PathLike, count: int, seed: int = 0, height: int = 256, width: int = 512
) -> list[str]:
    """Render ``count`` scenes (seeds ``seed .. seed + count - 1``) into ``out_dir``; returns the stems."""
    from dream3d.shapes.stereo_scene import make_stereo_scene  # noqa: PLC0415 - deferred: loads torch (~1.5 s)

    out_dir = Path(out_dir)
    stems = []
    for s in range(seed, seed + count):
        scene = make_stereo_scene(s, height=height, width=width)
        stem = f"scene-{s:05d}"
        save_image(out_dir / "images" / f"{stem}.png", scene.left)
        save_image(out_dir / "truth" / f"{stem}.png", scene.right)
        with atomic_path(out_dir / "depth" / f"{stem}.pfm") as tmp:
            write_pfm(tmp, scene.disparity)
        stems.append(stem)
    return stems
