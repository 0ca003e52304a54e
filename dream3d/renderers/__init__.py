"""Renderers and what they draw with: materials (shaders), backgrounds, ray sampling, compositing.

``renderer: {kind: ...}``, ``material: {kind: ...}`` and ``background: {kind: ...}`` in a run's
config pick the classes from :data:`RENDERERS`, :data:`MATERIALS` and :data:`BACKGROUNDS`.
"""

from .backgrounds import BACKGROUNDS
from .materials import MATERIALS
from .mesh import MeshRenderer
from .volume import VolumeRenderer

RENDERERS = {"volume": VolumeRenderer, "mesh": MeshRenderer}

__all__ = ["BACKGROUNDS", "MATERIALS", "RENDERERS"]
