"""Backgrounds: the colour seen along a ray that leaves the scene box without hitting the object.

Parts chosen by ``background: {kind: solid | random | mlp}`` (:data:`BACKGROUNDS`). Interface
(every class): ``background(directions (N, 3), image_index=None, generator=None) ->
rgb (N, 3)`` in [0, 1]. ``directions`` are world-space ray directions (+Z up, need not be unit);
``image_index (N,)`` (long) says which image each ray belongs to, for per-image random colours;
``generator`` is the explicit ``torch.Generator`` those colours are drawn with. The renderer calls
the background once per render, over all rays, so each image gets one colour even when rays are
rendered in chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError


@dataclass(frozen=True)
class SolidBackgroundConfig:
    kind: Literal["solid"] = "solid"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class RandomBackgroundConfig:
    """One random colour per training image (DreamFusion's augmentation); ``color`` otherwise."""

    kind: Literal["random"] = "random"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class MLPBackgroundConfig:
    kind: Literal["mlp"] = "mlp"
    hidden_dim: int = 32
    hidden_layers: int = 2
    n_frequencies: int = 2
    random_aug_prob: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.random_aug_prob <= 1.0:
            raise UserError(f"background random_aug_prob {self.random_aug_prob} must be in [0, 1]")


def _random_image_colors(directions, image_index, generator) -> torch.Tensor:
    if not isinstance(generator, torch.Generator):
        raise UserError("random background colours need an explicit torch.Generator; pass generator=...")
    n_images = int(image_index.max()) + 1 if image_index is not None and image_index.numel() else 1
    colors = torch.rand(n_images, 3, generator=generator, device=generator.device).to(directions)
    idx = (
        image_index
        if image_index is not None
        else torch.zeros(directions.shape[0], dtype=torch.long, device=directions.device)
    )
    return colors[idx.to(colors.device)]


class SolidBackground(nn.Module):
    """A fixed colour (default white)."""

    random_colors = False

    def __init__(self, cfg: SolidBackgroundConfig | RandomBackgroundConfig = SolidBackgroundConfig()):
        super().__init__()
        c = torch.as_tensor(cfg.color, dtype=torch.float32).reshape(-1)
        if c.numel() != 3 or (c < 0).any() or (c > 1).any():
            raise UserError(f"background colour {tuple(c.tolist())} must be 3 values in [0, 1]")
        self.register_buffer("color", c)

    def forward(
        self,
        directions: torch.Tensor,
        image_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.random_colors and self.training:
            return _random_image_colors(directions, image_index, generator)
        return self.color.to(directions).expand(directions.shape[0], 3)

    def param_groups(self) -> list[dict]:
        return []


class RandomColorBackground(SolidBackground):
    """In training mode, one random colour per image drawn from the generator (DreamFusion's
    background augmentation); its ``color`` otherwise."""

    random_colors = True

    def __init__(self, cfg: RandomBackgroundConfig = RandomBackgroundConfig()):
        super().__init__(cfg)


class MLPBackground(nn.Module):
    """A small MLP on the unit ray direction (frequency-encoded) -> sigmoid rgb: a learned
    environment map, as threestudio's ``neural-environment-map-background``.

    ``random_aug_prob``: in training mode, with this probability (one draw per render, from the
    generator) the whole batch uses random solid colours per image instead.
    """

    def __init__(self, cfg: MLPBackgroundConfig = MLPBackgroundConfig()):
        super().__init__()
        self.n_frequencies = cfg.n_frequencies
        layers, d = [], 3 + 6 * cfg.n_frequencies
        for _ in range(cfg.hidden_layers):
            layers += [nn.Linear(d, cfg.hidden_dim), nn.ReLU(inplace=True)]
            d = cfg.hidden_dim
        layers.append(nn.Linear(d, 3))
        self.net = nn.Sequential(*layers)
        self.random_aug_prob = cfg.random_aug_prob

    def encode(self, directions: torch.Tensor) -> torch.Tensor:
        d = F.normalize(directions.float(), dim=-1)
        freqs = (2.0 ** torch.arange(self.n_frequencies, device=d.device, dtype=d.dtype)) * math.pi
        xf = d[:, None, :] * freqs[:, None]  # (N, K, 3)
        return torch.cat([d, torch.sin(xf).flatten(1), torch.cos(xf).flatten(1)], -1)

    def forward(
        self,
        directions: torch.Tensor,
        image_index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.training and self.random_aug_prob > 0:
            if not isinstance(generator, torch.Generator):
                raise UserError("MLPBackground random_aug_prob > 0 needs an explicit torch.Generator")
            if torch.rand((), generator=generator, device=generator.device).item() < self.random_aug_prob:
                return _random_image_colors(directions, image_index, generator)
        return torch.sigmoid(self.net(self.encode(directions)))

    def param_groups(self) -> list[dict]:
        return [{"name": "background", "params": list(self.parameters())}]


BACKGROUNDS = {"solid": SolidBackground, "random": RandomColorBackground, "mlp": MLPBackground}
BackgroundConfig = SolidBackgroundConfig | RandomBackgroundConfig | MLPBackgroundConfig
