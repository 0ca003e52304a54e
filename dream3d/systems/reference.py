"""The reference view of image-to-3D: the input image seen from its own camera, and its loss terms.

Image to 3D (Zero-1-to-3, Magic123, threestudio's ``zero123`` system) pins the scene to the input
image at the input's camera: each step renders that camera and compares the render with the
image. For a reference image (RGB with a binary object mask, optionally a monocular depth map) and
the render of its camera (``RenderOutput``, one image):

- ``rgb``: ``mean (render_rgb - gt)^2`` where ``gt`` is the image inside the mask and the render's
  own background outside it (threestudio's form: the background is not the image's);
- ``mask``: the opacity against the mask, ``mean (opacity - mask)^2`` (``mask_loss: mse``) or the
  binary cross-entropy (``bce``);
- ``depth`` (with a depth map): over the mask's pixels, the render's inverse depth (opacity /
  z-depth) against the map, which a monocular model gives as inverse depth up to an unknown scale
  and shift (MiDaS, DPT, Depth Anything): ``depth_loss: ssi`` fits ``a * map + b`` to the render by
  least squares (no gradient through the fit) and takes the mean squared difference;
  ``depth_loss: pearson`` is ``1 - corr(render, map)``, free of scale and shift by construction.

The camera (:class:`ReferenceConfig`): elevation (default 0), azimuth 0 (the world's front is the
input's view), distance and vertical field of view (default the shapes world's 1.8 and 50 degrees:
an object keeps the size it has in the image at that camera). The render is shaded as the input
is: ``shading: albedo`` (threestudio's ambient-only material) or ``diffuse`` (the project's one
shading rule with a light at the camera, as the shapes world's renders and the bundled priors'
training images are lit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..cameras import Camera, Cameras
from ..errors import UserError
from ..renderers.materials import AlbedoShader, LambertianConfig, PointLightShader


@dataclass(frozen=True)
class ReferenceConfig:
    """The input's camera, how its render is shaded, and the weights of its loss terms."""

    elevation_deg: float = 0.0
    azimuth_deg: float = 0.0
    distance: float = 1.8
    fov_deg: float = 50.0  # vertical field of view of the (square) reference image
    size: int = 64  # the reference image's side and its render's, in pixels
    object_fraction: float | None = None  # frame the object to this fraction of the image first (None: as given)
    shading: Literal["albedo", "diffuse"] = "diffuse"
    rgb: float = 1000.0  # loss weights (the guidance's terms enter with weight 1)
    mask: float = 500.0
    mask_loss: Literal["mse", "bce"] = "mse"
    depth: float = 0.0  # > 0 needs depth_model
    depth_loss: Literal["ssi", "pearson"] = "pearson"
    depth_model: str | None = None  # a transformers depth-estimation model (folder or hub id): DPT, Depth Anything

    def __post_init__(self):
        Camera(self.elevation_deg, self.azimuth_deg, self.distance, self.fov_deg, 8, 8)  # checks the ranges
        if self.size < 8:
            raise UserError(f"reference.size {self.size} must be at least 8 pixels")
        if self.object_fraction is not None and not 0.0 < self.object_fraction <= 1.0:
            raise UserError(f"reference.object_fraction {self.object_fraction} must be in (0, 1], or null")
        if min(self.rgb, self.mask, self.depth) < 0:
            raise UserError("reference loss weights (rgb, mask, depth) must be >= 0")
        if self.depth > 0 and not self.depth_model:
            raise UserError(
                "reference.depth > 0 needs a depth model; set reference.depth_model (e.g. "
                "depth-anything/Depth-Anything-V2-Small-hf) or reference.depth=0"
            )

    def camera(self, size: int | None = None) -> Camera:
        s = size or self.size
        return Camera(self.elevation_deg, self.azimuth_deg, self.distance, self.fov_deg, s, s)


@dataclass
class ReferenceView:
    """The reference image as the losses take it: ``rgb (1, S, S, 3)`` straight colour in [0, 1],
    ``mask (1, S, S, 1)`` in {0, 1}, ``depth (1, S, S, 1)`` monocular inverse depth or ``None``,
    and the ``camera`` it is seen from."""

    rgb: torch.Tensor
    mask: torch.Tensor
    camera: Camera
    depth: torch.Tensor | None = None

    @classmethod
    def from_rgba(cls, rgba: torch.Tensor, camera: Camera, depth: torch.Tensor | None = None) -> ReferenceView:
        """From a straight-colour RGBA image ``(4, S, S)`` (the mask: alpha >= 0.5, as the
        object's box is found) and an optional ``(S, S)`` inverse depth map."""
        if rgba.ndim != 3 or rgba.shape[0] != 4 or rgba.shape[1:] != (camera.height, camera.width):
            raise UserError(
                f"a reference image must be RGBA at the camera's {camera.height}x{camera.width}, got {tuple(rgba.shape)}"
            )
        rgb = rgba[:3].permute(1, 2, 0)[None].float()
        mask = (rgba[3] >= 0.5).float()[None, ..., None]
        if depth is not None:
            depth = torch.as_tensor(depth, dtype=torch.float32).reshape(1, camera.height, camera.width, 1)
        return cls(rgb, mask, camera, depth)

    def to(self, device) -> ReferenceView:
        depth = self.depth.to(device) if self.depth is not None else None
        return ReferenceView(self.rgb.to(device), self.mask.to(device), self.camera, depth)

    def cameras(self) -> Cameras:
        return Cameras.stack(self.camera)

    def shader(self, material: LambertianConfig | None, shading: str, device=None):
        """The shader of the reference render: albedo, or the shading rule with a light at the camera."""
        if shading == "albedo":
            return AlbedoShader()
        cfg = material or LambertianConfig()
        lights = self.cameras().positions.to(device)
        return PointLightShader("diffuse", cfg, lights, self.camera.height * self.camera.width)


def rgb_loss(rgb: torch.Tensor, background: torch.Tensor, ref: ReferenceView) -> torch.Tensor:
    """``mean (rgb - gt)^2``, ``gt`` the image inside the mask and the render's background outside."""
    gt = ref.rgb * ref.mask + background.detach() * (1 - ref.mask)
    return F.mse_loss(rgb, gt)


def mask_loss(opacity: torch.Tensor, ref: ReferenceView, kind: str = "mse") -> torch.Tensor:
    """The opacity against the mask: mean squared error, or binary cross-entropy (``kind="bce"``)."""
    if kind == "bce":
        return F.binary_cross_entropy(opacity.clamp(1e-5, 1 - 1e-5), ref.mask)
    return F.mse_loss(opacity, ref.mask)


def render_inverse_depth(depth: torch.Tensor, opacity: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A render's inverse z-depth, ``opacity / (z-depth * opacity)`` (its ``depth`` is z times opacity)."""
    return opacity / depth.clamp_min(eps)


def depth_loss(pred: torch.Tensor, ref: torch.Tensor, kind: str = "pearson") -> torch.Tensor:
    """Scale- and shift-free depth agreement of two 1-D tensors (module docstring): ``"ssi"`` or ``"pearson"``."""
    if pred.numel() < 2:
        return pred.sum() * 0.0
    if kind == "ssi":
        with torch.no_grad():
            a = torch.stack([ref, torch.ones_like(ref)], dim=-1)
            fit = torch.linalg.lstsq(a.double(), pred.double()[:, None]).solution.to(pred.dtype)
            target = (a @ fit)[:, 0]
        return F.mse_loss(pred, target)
    p, r = pred - pred.mean(), ref - ref.mean()
    corr = (p * r).sum() / (p.norm() * r.norm()).clamp_min(1e-8)
    return 1 - corr


def reference_terms(out, ref: ReferenceView, cfg: ReferenceConfig) -> tuple[list[tuple[float, torch.Tensor]], dict]:
    """The weighted loss terms of one reference render ``out`` (a ``RenderOutput``) and their logs."""
    terms, logs = [], {}
    if cfg.rgb > 0:
        loss = rgb_loss(out.rgb, out.background, ref)
        terms.append((cfg.rgb, loss))
        logs["ref_rgb"] = loss.item()
    if cfg.mask > 0:
        loss = mask_loss(out.opacity, ref, cfg.mask_loss)
        terms.append((cfg.mask, loss))
        logs["ref_mask"] = loss.item()
    if cfg.depth > 0 and ref.depth is not None:
        inside = ref.mask[..., 0] > 0.5
        pred = render_inverse_depth(out.depth, out.opacity)[..., 0][inside]
        loss = depth_loss(pred, ref.depth[..., 0][inside], cfg.depth_loss)
        terms.append((cfg.depth, loss))
        logs["ref_depth"] = loss.item()
    return terms, logs
