"""Renderers and what they draw with: materials (shaders), backgrounds, ray sampling, compositing.

``renderer: {kind: ...}``, ``material: {kind: ...}`` and ``background: {kind: ...}`` in a run's
config pick the classes from :data:`RENDERERS`, :data:`MATERIALS` and :data:`BACKGROUNDS`.
"""

from .backgrounds import BACKGROUNDS
from .materials import MATERIALS
from .volume import RENDERERS

__all__ = ["BACKGROUNDS", "MATERIALS", "RENDERERS"]
