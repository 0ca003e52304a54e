"""Guidance: a frozen diffusion prior turns rendered views into loss terms (:mod:`.base`).

``guidance: {kind: ...}`` in a run's config picks the class from :data:`GUIDANCE` (the first the
default): ``sds`` (:mod:`.sds`), ``target`` (:mod:`.denoised_target`) or ``vsd`` (:mod:`.vsd`).
"""

from .denoised_target import DenoisedTargetGuidance, TargetConfig
from .sds import SDSConfig, SDSGuidance
from .vsd import VSDConfig, VSDGuidance

GUIDANCE = {"sds": SDSGuidance, "target": DenoisedTargetGuidance, "vsd": VSDGuidance}
GuidanceConfig = SDSConfig | TargetConfig | VSDConfig
