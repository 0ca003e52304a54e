"""What every guidance is: a frozen (or partly trained) prior that turns renders into loss terms.

``guidance(images, cameras, step, generator) -> GuidanceOutput``: ``images (B, 3, H, W)`` renders
in [0, 1] with gradients, ``cameras`` the :class:`~dream3d.cameras.Cameras` they were rendered
from (a camera-conditioned prior gets their camera features and the plain prompt; a model without
camera input, such as Stable Diffusion, gets the view words of DreamFusion's view-dependent
prompts instead, :mod:`.prompts`), ``step`` the optimisation step (timestep annealing),
``generator`` the run's one ``torch.Generator``. The output holds named scalar loss terms, which a system adds to its loss
with weight 1 (a guidance's strength lives in its own settings), and numbers for the log.

A guidance is an ``nn.Module``: what it trains (a LoRA of the prior, a camera embedding) are its
parameters, saved in the run's checkpoint with its ``state_dict``; :meth:`Guidance.optimizer`
gives them their own optimizer (stepped by the trainer with the others). The frozen prior itself
(:class:`~dream3d.diffusion.core.LatentDiffusion`) is not a submodule: it is neither trained
nor checkpointed.

Settings every guidance has (:class:`GuidanceConfigBase`): the negative prompt, the view-prompt
style, and the timestep range ``[t_min, t_max]`` (fractions of the training timesteps) whose ends
anneal linearly to ``t_min_end`` and ``t_max_end`` over ``anneal_steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import Cameras
from ..errors import UserError
from .prompts import view_prompts


@dataclass(frozen=True)
class GuidanceConfigBase:
    renamed_keys: ClassVar[dict[str, str]] = {"mode": "kind"}  # ``guidance.mode`` before parts had kinds

    negative_prompt: str = ""
    view_prompts: Literal["suffix", "none"] = "suffix"
    t_min: float = 0.02
    t_max: float = 0.98
    t_max_end: float | None = None  # anneal t_max to this value (None: no annealing)
    t_min_end: float | None = None  # anneal t_min to this value (None: no annealing; threestudio's zero123 does)
    anneal_steps: int = 0

    def __post_init__(self):
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise UserError(
                f"guidance timesteps need 0 <= t_min <= t_max <= 1, got t_min {self.t_min}, t_max {self.t_max}"
            )
        t_max_end = self.t_max if self.t_max_end is None else self.t_max_end
        if self.t_min_end is not None and not 0.0 <= self.t_min_end <= t_max_end:
            raise UserError(
                f"guidance.t_min_end {self.t_min_end} must be in [0, t_max_end], and t_max_end is {t_max_end}"
            )


@dataclass
class GuidanceOutput:
    terms: dict[str, torch.Tensor]  # named scalar loss terms
    logs: dict[str, float] = field(default_factory=dict)


class Guidance(nn.Module):
    """Base class of guidance (module docstring) on a latent diffusion ``core`` for ``prompt``."""

    def __init__(self, core, cfg: GuidanceConfigBase, prompt: str):
        super().__init__()
        self.core = core
        self.cfg = cfg
        self.prompt = prompt

    def forward(self, images: torch.Tensor, cameras: Cameras, step: int, generator: torch.Generator) -> GuidanceOutput:
        raise NotImplementedError

    def update(self, step: int, generator: torch.Generator) -> None:
        """Per-step hook (nothing by default)."""

    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of what this guidance trains (``None``: it trains nothing)."""
        return None

    def prompts(self, cameras: Cameras) -> list[str]:
        """The prompt of each camera: with its view word, unless the prior takes the camera itself."""
        style = "none" if self.core.takes_camera else self.cfg.view_prompts
        return view_prompts(self.prompt, cameras.elevation_deg.tolist(), cameras.azimuth_deg.tolist(), style)

    def camera_input(self, cameras: Cameras) -> torch.Tensor | None:
        """The cameras' features for a camera-conditioned prior (``None`` for other models)."""
        return cameras.features() if self.core.takes_camera else None

    def t_range(self, step: int) -> tuple[int, int]:
        """Integer timestep range [lo, hi] at optimisation ``step`` (annealed)."""
        cfg = self.cfg
        t_min, t_max = cfg.t_min, cfg.t_max
        if cfg.anneal_steps > 0:
            frac = min(1.0, step / cfg.anneal_steps)
            if cfg.t_max_end is not None:
                t_max = cfg.t_max + (cfg.t_max_end - cfg.t_max) * frac
            if cfg.t_min_end is not None:
                t_min = cfg.t_min + (cfg.t_min_end - cfg.t_min) * frac
        n = self.core.num_train_timesteps
        lo = int(t_min * n)
        hi = max(lo, int(t_max * n))
        return lo, min(hi, n - 1)

    def sample_timesteps(self, batch: int, step: int, generator: torch.Generator) -> torch.Tensor:
        """One timestep per image, uniform in :meth:`t_range`."""
        lo, hi = self.t_range(step)
        return torch.randint(lo, hi + 1, (batch,), generator=generator).to(self.core.device)

    def noised_latents(self, images: torch.Tensor, step: int, generator: torch.Generator):
        """Score distillation's start, ``(latents, t, noise, noisy)``: the renders encoded with
        gradients, one timestep each (:meth:`sample_timesteps`), noise, and the latents noised to
        ``t`` without gradients (drawn in that order from ``generator``)."""
        t = self.sample_timesteps(images.shape[0], step, generator)
        latents = self.core.encode_images(self.resize(images))
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        with torch.no_grad():
            noisy = self.core.add_noise(latents, noise, t)
        return latents, t, noise, noisy

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Renders at the prior's image size (anti-aliased bilinear), on its device."""
        size = self.core.default_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return images.to(self.core.device)
