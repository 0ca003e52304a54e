"""Noise schedulers by name, all from diffusers.

=========  ===========================================  ==================================
name       diffusers class                              notes
=========  ===========================================  ==================================
ddim       DDIMScheduler                                deterministic (eta 0)
dpm        DPMSolverMultistepScheduler                  DPM-Solver++ (2nd order), 20 steps
euler      EulerDiscreteScheduler
euler-a    EulerAncestralDiscreteScheduler              stochastic: uses the generator
ddpm       DDPMScheduler                                stochastic: uses the generator
pndm       PNDMScheduler                                SD 1.x/2.x's own default
=========  ===========================================  ==================================

Every scheduler is built from the model's own scheduler config (its betas and training
timesteps), so switching scheduler never changes the noise schedule the model was trained with.
Sample clipping is switched off: latents are not bounded to [-1, 1] (a DDIM built from a
DDPM config would otherwise keep ``clip_sample=True`` and clip them).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import UserError

SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}


def make_scheduler(name: str | None, config: dict[str, Any]):
    """A fresh scheduler called ``name`` (None: the model's own class) from a scheduler ``config``."""
    import diffusers  # noqa: PLC0415 - deferred: ~2 s to import; the CLI imports SCHEDULERS to build `dream3d --help`

    if name is None:
        cls = getattr(diffusers, config.get("_class_name", "DDIMScheduler"))
        extra: dict[str, Any] = {}
    else:
        if name not in SCHEDULERS:
            raise UserError(f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
        cls_name, extra = SCHEDULERS[name]
        cls = getattr(diffusers, cls_name)
    overrides = dict(extra)
    if "clip_sample" in inspect.signature(cls.__init__).parameters:
        overrides["clip_sample"] = False
    return cls.from_config(config, **overrides)
