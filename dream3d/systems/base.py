"""What a system is: one method (DreamFusion, a Magic3D fine stage, ...) as parts plus loss terms.

A system is an ``nn.Module`` whose submodules are its parts (a renderer holding a geometry and a
background, a material, a guidance), so its ``state_dict`` is every part's state, and a
:class:`~dream3d.trainer.TrainingTask`, so the one :class:`~dream3d.trainer.Trainer` runs it. Its
``training_step`` draws cameras, renders, asks the guidance for loss terms and adds its own
regularisers, each with its weight (:func:`weighted_sum`). Optimizers come from the parts' named
parameter groups, each with the learning rate ``optim.lr_<group name>`` (:class:`OptimConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..trainer import TrainingTask


@dataclass(frozen=True)
class OptimConfig:
    """AdamW over every parameter group of a system's parts; ``lr_<name>`` is group ``name``'s rate."""

    lr_encoding: float = 1e-2
    lr_network: float = 1e-3
    lr_background: float = 1e-3
    lr_sdf: float = 1e-3  # a DMTet's SDF values (world units)
    lr_deformation: float = 1e-2  # a DMTet's vertex offsets (before tanh)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 0.0

    def adamw(self, groups: list[dict]) -> torch.optim.AdamW:
        """AdamW over named ``groups`` (``{"name", "params"}``); empty groups are left out."""
        rated = []
        for group in groups:
            rate = getattr(self, f"lr_{group['name']}", None)
            if rate is None:
                raise UserError(
                    f"optim has no learning rate for parameter group '{group['name']}'; add optim.lr_{group['name']}"
                )
            if group["params"]:
                rated.append({"params": group["params"], "lr": rate, "name": group["name"]})
        return torch.optim.AdamW(rated, betas=tuple(self.betas), eps=self.eps, weight_decay=self.weight_decay)


def weighted_sum(terms: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """``sum_k w_k * term_k`` in the order given (a weight of 1 adds the term as it is)."""
    total = None
    for weight, term in terms:
        part = term if weight == 1 else weight * term
        total = part if total is None else total + part
    return total


class System(nn.Module, TrainingTask):
    """Base class of systems (module docstring)."""
