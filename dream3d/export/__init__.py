"""The exporter: a geometry -> mesh files and a turntable video (the last step of a run).

:func:`export_asset` asks the geometry for its surface (``geometry.export_mesh``: for a NeRF,
marching cubes at the render-matched iso level, :mod:`dream3d.geometry.isosurface`), writes it with
:func:`~dream3d.export.mesh.write_mesh` (glTF's +Y-up frame) and renders a turntable
(:mod:`.turntable`), then writes ``export.json`` (paths, iso level, mesh statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import write_json
from ..renderers.volume import VolumeRenderer
from .mesh import write_mesh
from .turntable import render_turntable, write_turntable


@dataclass(frozen=True)
class ExportConfig:
    resolution: int = 128
    threshold: float | str = "auto"
    keep_fraction: float = 0.1
    turntable_frames: int = 36
    turntable_size: int = 256
    turntable_elevation: float = 15.0
    turntable_fov: float = 40.0
    turntable_source: str = "mesh"  # "mesh" | "field"
    turntable_formats: tuple[str, ...] = ("mp4", "gif")
    fps: int = 12

    def __post_init__(self):
        if not 16 <= self.resolution <= 1024:
            raise UserError(f"export resolution {self.resolution} must be in [16, 1024]")
        if isinstance(self.threshold, str) and self.threshold != "auto":
            raise UserError(f"threshold '{self.threshold}' must be 'auto' or a number")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise UserError(f"keep_fraction {self.keep_fraction} must be in [0, 1]")
        if self.turntable_frames < 1 or self.turntable_size < 8:
            raise UserError("turntable needs >= 1 frame and a size >= 8 pixels")
        if self.turntable_source not in ("mesh", "field"):
            raise UserError(f"turntable_source '{self.turntable_source}' must be 'mesh' or 'field'")
        bad = [f for f in self.turntable_formats if f not in ("mp4", "gif")]
        if bad:
            raise UserError(
                f"turntable format(s) {bad} are not supported; use a list of 'mp4' and 'gif' (or [] for none)"
            )


def export_asset(geometry, folder: str | Path, cfg: ExportConfig = ExportConfig(), renderer=None) -> dict:
    """Mesh files + turntable of ``geometry`` into ``folder``; also writes ``export.json`` (the
    summary returned). ``renderer`` renders the turntable for ``turntable_source="field"``
    (default: a volume renderer over a white background whose occupancy grid is rebuilt from the
    geometry's density)."""
    folder = Path(folder)
    mesh, info = geometry.export_mesh(cfg.resolution, cfg.threshold, cfg.keep_fraction)
    paths = write_mesh(mesh, folder)
    frames = []
    if cfg.turntable_formats:  # [] writes no turntable
        source = mesh
        if cfg.turntable_source == "field":
            source = renderer
            if source is None:
                source = VolumeRenderer(geometry).eval()
                source.fill_grid()
        frames = render_turntable(
            source, cfg.turntable_frames, cfg.turntable_size, cfg.turntable_elevation, cfg.turntable_fov
        )
        paths.update(write_turntable(frames, folder, cfg.fps, formats=tuple(cfg.turntable_formats)))
    extent = np.ptp(np.asarray(mesh.vertices), axis=0)
    summary = {
        **info,
        "extent_world_xyz": extent.tolist(),
        "frame": "glTF +Y up: world (x, y, z) -> (x, z, -y)",
        "turntable_source": cfg.turntable_source,
        "turntable_frames": int(len(frames)),
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_json(folder / "export.json", summary)
    return summary
