"""Guidance: a frozen diffusion prior turns rendered views into loss terms (:mod:`.base`).

``guidance: {kind: ...}`` in a run's config picks the class from :data:`GUIDANCE` (the first the
default): ``sds`` (:mod:`.sds`), ``target`` (:mod:`.denoised_target`), ``vsd`` (:mod:`.vsd`) or
``zero123`` (:mod:`.zero123`: a view-conditioned prior and an input image, for ``dream3d img2mesh``).
"""

from .denoised_target import DenoisedTargetGuidance, TargetConfig
from .sds import SDSConfig, SDSGuidance
from .vsd import VSDConfig, VSDGuidance
from .zero123 import Zero123Config, Zero123Guidance

GUIDANCE = {"sds": SDSGuidance, "target": DenoisedTargetGuidance, "vsd": VSDGuidance, "zero123": Zero123Guidance}
GuidanceConfig = SDSConfig | TargetConfig | VSDConfig | Zero123Config
