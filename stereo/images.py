"""Reading source photos as H x W x 3 uint8 RGB, whatever their format.

Handles what photo folders contain: EXIF orientation (the pixels are rotated/flipped as a
viewer shows them), grayscale (replicated to three channels), palette images, RGBA and LA
(composited over white), CMYK, and 16-bit or 32-bit integer grayscale (scaled to 8 bits).
16-bit RGB PNGs are reduced to 8 bits per channel by Pillow. A file that cannot be decoded
raises :class:`UnreadableImage` with a one-line reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset(
    ".png .jpg .jpeg .jpe .bmp .tif .tiff .webp .ppm .pgm .pbm .pnm .gif .tga .jp2 .j2k .heic .heif .avif .exr .svg .ico".split()
)
"""Suffixes treated as images when a folder is listed (decoding may still fail: ``.heic``,
``.svg`` or ``.exr`` need codecs Pillow may not have, and are then reported as unsupported)."""


class UnreadableImage(Exception):
    """An image file that cannot be read (corrupt, truncated or an unsupported format)."""


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to H x W x 3 uint8 (see the module docstring)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.rint(np.clip(a, 0, top) * (255.0 / top)).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if mode == "F":
        a = np.asarray(image, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        a = np.rint(np.clip(a / top, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as H x W x 3 uint8 RGB, upright per its EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # a malformed EXIF block: keep the stored orientation
                    pass
                rgb = to_rgb_uint8(im)
    except UnidentifiedImageError:
        raise UnreadableImage("not a recognised image format (unsupported or corrupt)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode ({type(e).__name__}: {e})".replace("\n", " ")) from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UnreadableImage("empty image")
    return np.ascontiguousarray(rgb)
