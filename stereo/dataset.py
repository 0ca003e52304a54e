"""PyTorch ``Dataset`` that makes stereo pairs on the fly from photos and their depth.

Each item: load the photo and its inverse depth, cut a window of ``feed_size`` plus the crop
margin (random position when training, centred otherwise; the photo is scaled up first if it
is smaller), make the pair (random scale, random background from the same photo list), keep
the first ``width`` columns, and - only when training - augment it (:mod:`stereo.augment`).

Randomness: every item has its own ``numpy.random.Generator`` seeded from
``(seed, stem, epoch)`` when training and ``(seed, stem)`` otherwise, so DataLoader workers
never share noise, a run is reproducible, and call :meth:`StereoPairDataset.set_epoch` each
epoch to get new crops and scales (validation items are the same every epoch).

Returned dict (tensors): ``left`` and ``right`` 3 x H x W float32 in [0, 1], ``disparity``
1 x H x W float32 (pixels, left-referenced), ``visible`` and ``holes`` H x W bool, plus
``scale`` (float), ``seed`` (int) and ``stem`` (str).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import augment_pair
from .depth_sources import DepthDir
from .disparity import MAX_DISPARITY, draw_scale
from .images import is_image_path, load_rgb
from .pair import crop_margin, make_pair
from .resize import cover_crop, resize_rgb
from .seeds import sample_seed


class StereoPairDataset(Dataset):
    """Stereo pairs synthesised on the fly.

    Args:
        images: a folder of photos or a list of image paths.
        depth: a depth source (``depth(stem, image) -> inverse depth``, see
            :mod:`stereo.depth_sources`) or a folder of ``<stem>.npy/.pfm/.png`` inverse depth.
        feed_size: ``(height, width)`` of the pairs returned (the network's input size).
        training: random crops and photometric augmentation; otherwise centred crops, none.
        seed: global seed.
        mode: ``"default"`` or ``"reference"``.
        max_disparity: top of the scale range and crop margin (192).
        fill_cracks: fill one-pixel cracks of the warp.
    """

    def __init__(
        self,
        images: str | os.PathLike | Sequence[str | os.PathLike],
        depth: Any,
        *,
        feed_size: tuple[int, int] = (256, 512),
        training: bool = True,
        seed: int = 0,
        mode: str = "default",
        max_disparity: float = MAX_DISPARITY,
        fill_cracks: bool = False,
    ):
        if isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            if not folder.is_dir():
                raise FileNotFoundError(f"images folder '{folder}' does not exist")
            paths = sorted(
                p for p in folder.iterdir() if p.is_file() and is_image_path(p) and not p.name.startswith(".")
            )
        else:
            paths = [Path(p) for p in images]
        if not paths:
            raise ValueError("no images given")
        self.paths = paths
        self.depth = DepthDir(depth) if isinstance(depth, (str, os.PathLike)) else depth
        self.feed_size = (int(feed_size[0]), int(feed_size[1]))
        self.training = training
        self.seed = int(seed)
        self.mode = mode
        self.max_disparity = float(max_disparity)
        self.fill_cracks = fill_cracks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training items of another epoch get other crops, scales and noise."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def item_seed(self, index: int) -> int:
        stem = self.paths[index].stem
        return sample_seed(self.seed, f"{stem}@{self.epoch}" if self.training else stem)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        seed = self.item_seed(index)
        rng = np.random.default_rng(seed)
        height, width = self.feed_size
        margin = crop_margin(self.max_disparity)
        image = load_rgb(path)
        inverse = self.depth(path.stem, image)
        image, inverse = cover_crop(image, inverse, height, width + margin, rng=rng if self.training else None)
        scale = draw_scale(rng, self.max_disparity)
        bg_path = self.paths[int(rng.integers(len(self.paths)))]
        background = image if bg_path == path else resize_rgb(load_rgb(bg_path), height, width + margin)
        pair = make_pair(
            image,
            inverse,
            background,
            mode=self.mode,
            scale=scale,
            max_disparity=self.max_disparity,
            crop=True,
            fill_cracks=self.fill_cracks,
        )
        left = pair.left.astype(np.float32) / 255.0
        right = pair.right.astype(np.float32) / 255.0
        if self.training:
            left, right = augment_pair(left, right, rng)
        return {
            "left": torch.from_numpy(np.ascontiguousarray(left.transpose(2, 0, 1))),
            "right": torch.from_numpy(np.ascontiguousarray(right.transpose(2, 0, 1))),
            "disparity": torch.from_numpy(pair.disparity[None].copy()),
            "visible": torch.from_numpy(pair.visible.copy()),
            "holes": torch.from_numpy(pair.holes.copy()),
            "scale": pair.scale,
            "seed": seed,
            "stem": path.stem,
        }
