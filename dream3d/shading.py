"""Shading as in DreamFusion: how a rendered sample's colour is made from albedo and normal.

- ``albedo``: the colour is the albedo (used for the warm-up steps);
- ``diffuse``: Lambertian with ambient, ``albedo * (ambient + diffuse * max(0, n . l))``;
- ``textureless``: the same with a white albedo, which forces geometry to explain the shading.

During optimisation each step picks one of them at random (after the warm-up) with a point light
near the camera: DreamFusion's light sits at the camera position jittered by a random offset.
The ambient/diffuse split matches the shapes-world renderer (:mod:`dream3d.shapes.render`:
0.4 + 0.6 * max(0, n . l)), so a correctly-coloured object shades like the prior's training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("albedo", "diffuse", "textureless")


@dataclass
class ShadingConfig:
    ambient: float = 0.4
    diffuse: float = 0.6
    albedo_warmup_steps: int = 200  # albedo-only for the first steps
    albedo_prob: float = 0.5  # after the warm-up: P(albedo); the rest split diffuse/textureless
    textureless_prob: float = 0.2
    light_jitter: float = 0.3  # light = camera position + N(0, jitter^2) offset (world units)
    light_distance_scale: float = 1.0  # light = scale * camera position (+ jitter)


def pick_mode(cfg: ShadingConfig, step: int, generator: torch.Generator) -> str:
    """The shading mode of one optimisation step."""
    if step < cfg.albedo_warmup_steps:
        return "albedo"
    u = float(torch.rand((), generator=generator))
    if u < cfg.albedo_prob:
        return "albedo"
    if u < cfg.albedo_prob + cfg.textureless_prob:
        return "textureless"
    return "diffuse"


def light_positions(camera_positions: torch.Tensor, cfg: ShadingConfig, generator: torch.Generator) -> torch.Tensor:
    """Point lights near the cameras (B, 3)."""
    jitter = torch.randn(camera_positions.shape, generator=generator, dtype=camera_positions.dtype)
    return cfg.light_distance_scale * camera_positions + cfg.light_jitter * jitter.to(camera_positions.device)


def shade(albedo: torch.Tensor, normals: torch.Tensor | None, points: torch.Tensor | None,
          light: torch.Tensor | None, mode: str, cfg: ShadingConfig) -> torch.Tensor:
    """Per-sample colour (N, 3). ``light`` is a point light position per sample (N, 3)."""
    if mode == "albedo":
        return albedo
    if normals is None or points is None or light is None:
        raise ValueError(f"shading mode '{mode}' needs normals, points and a light")
    to_light = torch.nn.functional.normalize(light - points, dim=-1)
    lambert = (normals * to_light).sum(-1, keepdim=True).clamp(min=0.0)
    intensity = cfg.ambient + cfg.diffuse * lambert
    if mode == "textureless":
        return intensity.expand(*albedo.shape[:-1], 3)
    return albedo * intensity


class ShadingMaterial:
    """A renderer material (:class:`dream3d.nerf.renderer.Material`) for one batch of images.

    ``lights`` holds one point-light position per image; image ``b`` owns the rays
    ``b * pixels_per_image ... (b + 1) * pixels_per_image - 1`` (the renderer's ray ids).
    """

    def __init__(self, mode: str, cfg: ShadingConfig, lights: torch.Tensor | None = None, pixels_per_image: int = 1):
        if mode not in MODES:
            raise ValueError(f"unknown shading mode '{mode}'; use one of {MODES}")
        self.mode, self.cfg, self.lights, self.pixels_per_image = mode, cfg, lights, pixels_per_image
        self.needs_normals = mode != "albedo"

    def __call__(self, albedo, normals, points, view_dirs, ray_ids):
        light = None if self.lights is None else self.lights[ray_ids // self.pixels_per_image]
        return shade(albedo, normals, points, light, self.mode, self.cfg)
