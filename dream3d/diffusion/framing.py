"""Framing an object in an image: what a view-conditioned model's conditioning image goes through.

Zero-1-to-3 and its successors were trained on object renders framed the same way: the object's
alpha bounding box centred in a square frame and scaled so that its larger side fills a fixed
fraction of the frame. An input image is framed the same way before it conditions the model, at
training time (``dream3d prior train --kind view``) and at inference (image to 3D) alike; a model's
fraction is ``object_fraction`` in its ``view.json`` (:mod:`dream3d.diffusion.zero123`).

Images are float tensors in [0, 1], RGBA ``(B, 4, H, W)`` or ``(4, H, W)`` with *straight* (not
premultiplied) colour. The bounding box is that of the pixels with alpha >= ``threshold`` (0.5: the
pixels the object covers at least half of, the shapes renderer's ``mask``). Resampling is bilinear
on premultiplied colour, supersampled and box-filtered when it shrinks the image, so a large photo
framed to 32 px is anti-aliased; the box is located to sub-pixel precision (pixel edges).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError

ALPHA_THRESHOLD = 0.5


def object_box(alpha: torch.Tensor, threshold: float = ALPHA_THRESHOLD) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)``: pixel-edge coordinates of the box of ``alpha >= threshold`` in an (H, W) map."""
    mask = alpha >= threshold
    if not bool(mask.any()):
        raise UserError(
            f"no object in the image: no pixel has alpha >= {threshold}; give an RGBA image with the object opaque"
        )
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def frame_object(
    rgba: torch.Tensor, fraction: float, size: int | None = None, threshold: float = ALPHA_THRESHOLD
) -> torch.Tensor:
    """Centre each image's object and scale it so that its bounding box's larger side is
    ``fraction`` of a ``size`` x ``size`` frame (default: the input's height); transparent around.

    Returns RGBA of the input's layout (``(B, 4, size, size)`` or ``(4, size, size)``), straight colour.
    """
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"object fraction must be in (0, 1], got {fraction}")
    single = rgba.ndim == 3
    x = rgba[None] if single else rgba
    if x.ndim != 4 or x.shape[1] != 4:
        raise UserError(f"frame_object takes RGBA images (B, 4, H, W) or (4, H, W), got shape {tuple(rgba.shape)}")
    x = x.float()
    _, _, h, w = x.shape
    size = size or h
    premult = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], dim=1)
    out = []
    for image in premult:
        x0, y0, x1, y1 = object_box(image[3], threshold)
        k = max(x1 - x0, y1 - y0) / (fraction * size)  # source pixels per output pixel
        m = max(1, math.ceil(k - 1e-6))  # supersampling factor
        u = (torch.arange(size * m, dtype=torch.float64) + 0.5) / m - size / 2  # output coordinates from the centre
        xs = ((x0 + x1) / 2 + u * k) * 2 / w - 1  # grid_sample's normalised coordinates (align_corners=False)
        ys = ((y0 + y1) / 2 + u * k) * 2 / h - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None].to(image.dtype)
        sampled = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.append(F.avg_pool2d(sampled, m) if m > 1 else sampled)
    framed = torch.cat(out)
    alpha = framed[:, 3:].clamp(0, 1)
    rgb = torch.where(alpha > 1e-6, framed[:, :3] / alpha.clamp_min(1e-6), torch.zeros_like(framed[:, :3]))
    result = torch.cat([rgb.clamp(0, 1), alpha], dim=1).to(rgba.dtype)
    return result[0] if single else result


def on_background(rgba: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """RGBA (straight colour, channels first) composited onto a solid grey level (default white) -> RGB."""
    alpha = rgba[..., 3:4, :, :]
    return rgba[..., :3, :, :] * alpha + background * (1 - alpha)


def alpha_from_background(rgb: torch.Tensor, background: float = 1.0, tolerance: float = 0.02) -> torch.Tensor:
    """RGBA from an RGB image on a solid background: alpha 1 where any channel differs from
    ``background`` by more than ``tolerance``, else 0 (for renders and product shots on white)."""
    alpha = ((rgb - background).abs() > tolerance).any(dim=-3, keepdim=True).to(rgb.dtype)
    return torch.cat([rgb, alpha], dim=-3)
