"""View-dependent prompts (DreamFusion): "a red cube" seen from camera c -> "a red cube, side view".

The view word comes from the one camera module (:func:`dream3d.cameras.view_word`), so the
prompts match the bundled prior's training captions exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..cameras import view_word


def view_prompt(prompt: str, elevation_deg: float, azimuth_deg: float, style: str = "suffix") -> str:
    """``prompt`` with its view word for one camera. ``style``: "suffix" (", side view") or "none"."""
    if style == "none":
        return prompt
    return f"{prompt}, {view_word(elevation_deg, azimuth_deg)} view"


def view_prompts(
    prompt: str, elevations: Sequence[float], azimuths: Sequence[float], style: str = "suffix"
) -> list[str]:
    return [view_prompt(prompt, float(e), float(a), style) for e, a in zip(elevations, azimuths)]
