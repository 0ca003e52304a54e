"""Captions of shapes-world renders, exactly as ``docs/shapes-world.md`` defines them.

"a {colour} {shape}" for the object, plus ", {view} view" when the camera is known, where the
view word is "front", "side", "back" or "overhead" (:func:`dream3d.cameras.view_word`).
The article is always "a" (the fixed form), e.g. "a orange cone, back view".
"""

from __future__ import annotations

from ..cameras import Camera, view_word
from .objects import ShapeObject


def caption(obj: ShapeObject, camera: Camera | None = None) -> str:
    """ "a red cube" without a camera, "a red cube, front view" with one."""
    if camera is None:
        return obj.prompt
    return view_caption(obj, camera.elevation_deg, camera.azimuth_deg)


def view_caption(obj: ShapeObject, elevation_deg: float, azimuth_deg: float) -> str:
    """Caption for a view given by its elevation and azimuth in degrees."""
    return f"{obj.prompt}, {view_word(elevation_deg, azimuth_deg)} view"
