"""Materials: how a rendered sample's colour is made from its albedo and normal.

The project's one shading rule (:func:`lambert`; DreamFusion's Lambertian with ambient, and what
the shapes world's renders use, so a correctly coloured object shades like the prior's training
images)::

    rgb = albedo * (ambient + diffuse * max(0, n . l))      ambient 0.4, diffuse 0.6

``n`` is the unit surface normal and ``l`` the unit direction from the surface towards the light.

A renderer colours its samples with a *shader* (:class:`Shader`: per-sample attributes -> rgb).
The material part (:class:`LambertianMaterial`, ``material: {kind: lambertian}``) makes one
shader per training step, as DreamFusion does: after ``albedo_warmup_steps`` each step picks
``albedo`` (colour = albedo), ``diffuse`` (:func:`lambert` with a point light near each camera)
or ``textureless`` (the same with a white albedo, which makes geometry explain the shading) at
random, with a light at the camera position jittered by a random offset. Validation and export
use the plain albedo (:class:`AlbedoShader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from ..cameras import Cameras

AMBIENT = 0.4
DIFFUSE = 0.6
MODES = ("albedo", "diffuse", "textureless")


def lambert(albedo, normals, to_light, ambient: float = AMBIENT, diffuse: float = DIFFUSE):
    """The shading rule above for ``(..., 3)`` numpy arrays or torch tensors (broadcast against
    each other); ``normals`` and ``to_light`` are unit vectors."""
    n_dot_l = (
        normals[..., 0] * to_light[..., 0] + normals[..., 1] * to_light[..., 1] + normals[..., 2] * to_light[..., 2]
    )
    return albedo * (ambient + diffuse * n_dot_l.clip(0.0, None)[..., None])


class Shader(Protocol):
    """Turns per-sample surface attributes into per-sample colour, inside a renderer.

    ``albedo (S, 3)``, ``normals (S, 3)`` unit or ``None`` (when ``needs_normals`` is false),
    ``points (S, 3)`` world positions, ``view_dirs (S, 3)`` unit ray directions (camera -> point),
    ``ray_ids (S,)`` long indices into the flattened rays of the render call (image ``b`` of a
    batch at ``H x W`` owns rays ``b * H * W`` to ``(b + 1) * H * W - 1``). Returns ``rgb (S, 3)``.
    """

    needs_normals: bool

    def __call__(
        self,
        albedo: torch.Tensor,
        normals: torch.Tensor | None,
        points: torch.Tensor,
        view_dirs: torch.Tensor,
        ray_ids: torch.Tensor,
    ) -> torch.Tensor: ...


class AlbedoShader:
    """Colour = albedo (no shading): validation, export and the warm-up steps."""

    needs_normals = False

    def __call__(self, albedo, normals, points, view_dirs, ray_ids):
        return albedo


@dataclass(frozen=True)
class LambertianConfig:
    kind: Literal["lambertian"] = "lambertian"
    ambient: float = AMBIENT
    diffuse: float = DIFFUSE
    albedo_warmup_steps: int = 200  # albedo-only for the first steps
    albedo_prob: float = 0.5  # after the warm-up: P(albedo); the rest split diffuse/textureless
    textureless_prob: float = 0.2
    light_jitter: float = 0.3  # light = camera position + N(0, jitter^2) offset (world units)
    light_distance_scale: float = 1.0  # light = scale * camera position (+ jitter)


class PointLightShader:
    """One step's shading: ``mode`` with one point light per image (``lights (B, 3)``)."""

    def __init__(self, mode: str, cfg: LambertianConfig, lights: torch.Tensor | None = None, pixels_per_image: int = 1):
        if mode not in MODES:
            raise ValueError(f"unknown shading mode '{mode}'; use one of {MODES}")
        self.mode, self.cfg, self.lights, self.pixels_per_image = mode, cfg, lights, pixels_per_image
        self.needs_normals = mode != "albedo"

    def __call__(self, albedo, normals, points, view_dirs, ray_ids):
        if self.mode == "albedo":
            return albedo
        light = self.lights[ray_ids // self.pixels_per_image]
        to_light = torch.nn.functional.normalize(light - points, dim=-1)
        white = torch.ones_like(albedo) if self.mode == "textureless" else albedo
        return lambert(white, normals, to_light, self.cfg.ambient, self.cfg.diffuse)


class LambertianMaterial(nn.Module):
    """DreamFusion's randomly shaded Lambertian material (module docstring)."""

    def __init__(self, cfg: LambertianConfig = LambertianConfig()):
        super().__init__()
        self.cfg = cfg

    def pick_mode(self, step: int, generator: torch.Generator) -> str:
        """The shading mode of one training step."""
        cfg = self.cfg
        if step < cfg.albedo_warmup_steps:
            return "albedo"
        u = float(torch.rand((), generator=generator))
        if u < cfg.albedo_prob:
            return "albedo"
        if u < cfg.albedo_prob + cfg.textureless_prob:
            return "textureless"
        return "diffuse"

    def light_positions(self, camera_positions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Point lights near the cameras ``(B, 3)``."""
        jitter = torch.randn(camera_positions.shape, generator=generator, dtype=camera_positions.dtype)
        return self.cfg.light_distance_scale * camera_positions + self.cfg.light_jitter * jitter.to(
            camera_positions.device
        )

    def training_shader(self, step: int, cameras: Cameras, generator: torch.Generator) -> PointLightShader:
        """The shader of training step ``step`` (draws the mode, then the lights)."""
        mode = self.pick_mode(step, generator)
        lights = self.light_positions(cameras.positions, generator)
        return PointLightShader(mode, self.cfg, lights, cameras.height * cameras.width)


MATERIALS = {"lambertian": LambertianMaterial}
