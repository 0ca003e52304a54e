"""Geometries: the 3D representations a system optimises (:mod:`.base` for the interface).

``geometry: {kind: ...}`` in a run's config picks the class from :data:`GEOMETRY`.
"""

from .dmtet import DMTetGeometry
from .nerf import NeRFGeometry

GEOMETRY = {"nerf": NeRFGeometry, "dmtet": DMTetGeometry}
