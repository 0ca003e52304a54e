"""Guidance: a frozen diffusion prior turns rendered views into loss terms (:mod:`.base`).

``guidance: {kind: ...}`` in a run's config picks the class from :data:`GUIDANCE` (the first the
default): ``sds`` (:mod:`.sds`) or ``target`` (:mod:`.denoised_target`); ``truth``
(:mod:`.truth`) is a diagnostic that uses the shapes world's exact renders instead of the prior.
"""

from .denoised_target import DenoisedTargetGuidance, TargetConfig
from .sds import SDSConfig, SDSGuidance
from .truth import TruthConfig, TruthGuidance

GUIDANCE = {"sds": SDSGuidance, "target": DenoisedTargetGuidance, "truth": TruthGuidance}
GuidanceConfig = SDSConfig | TargetConfig | TruthConfig
