"""Guidance: a frozen diffusion prior turns rendered views into loss terms (:mod:`.base`).

``guidance: {kind: ...}`` in a run's config picks the class from :data:`GUIDANCE` (the first the
default): ``sds`` (:mod:`.sds`) or ``target`` (:mod:`.denoised_target`).
"""

from .denoised_target import DenoisedTargetGuidance, TargetConfig
from .sds import SDSConfig, SDSGuidance

GUIDANCE = {"sds": SDSGuidance, "target": DenoisedTargetGuidance}
GuidanceConfig = SDSConfig | TargetConfig
