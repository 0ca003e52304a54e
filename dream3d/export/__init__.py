"""The exporter: a geometry -> mesh files and a turntable video (the last step of a run).

:func:`export_asset` asks the geometry for its surface (``geometry.export_mesh``: for a NeRF,
marching cubes at the render-matched iso level, :mod:`dream3d.geometry.isosurface`), writes it with
:func:`~dream3d.export.mesh.write_mesh` (glTF's +Y-up frame) and renders a turntable
(:mod:`.turntable`), then writes ``export.json`` (paths, iso level, mesh statistics).

Vertex colours or a baked texture (``ExportConfig.textured``): the texture protocol is one
method. A geometry that wants its colours baked into a texture provides
``texture_field(points (N, 3) world, on its device) -> (N, 3)`` albedo in [0, 1] (DMTet:
``texture_field = albedo``). ``textured: auto`` bakes when ``geometry.texture_field`` is callable
(density fields such as the NeRF do not provide it: their vertex colours are volume-rendered,
:func:`~dream3d.geometry.isosurface.rendered_vertex_colours`), ``always`` requires it, ``never``
keeps vertex colours. Baking (:mod:`.texture`): xatlas uvs, a ``texture_size``-square image with
``texture_padding`` texel rings of seam padding. The turntable of a textured asset is rendered
from the written ``mesh.glb``, loaded back (:func:`~dream3d.export.mesh.load_mesh_world`), so it
shows what the file holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io import write_json
from ..renderers.volume import VolumeRenderer
from .mesh import load_mesh_world, write_mesh
from .texture import textured_mesh
from .turntable import render_turntable, write_turntable


@dataclass(frozen=True)
class ExportConfig:
    resolution: int = 128
    threshold: float | str = "auto"
    keep_fraction: float = 0.1
    fill_cavities: bool = False  # a density field's enclosed cavities count as solid (dream3d.geometry.isosurface)
    turntable_frames: int = 36
    turntable_size: int = 256
    turntable_elevation: float = 15.0
    turntable_fov: float = 40.0
    turntable_source: str = "mesh"  # "mesh" | "field"
    turntable_formats: tuple[str, ...] = ("mp4", "gif")
    fps: int = 12
    textured: str = "auto"  # "auto" | "always" | "never" (module docstring)
    texture_size: int = 1024
    texture_padding: int = 4

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
        if self.textured not in ("auto", "always", "never"):
            raise UserError(f"textured '{self.textured}' must be 'auto', 'always' or 'never'")
        if not 8 <= self.texture_size <= 8192:
            raise UserError(f"texture_size {self.texture_size} must be in [8, 8192]")
        if not 0 <= self.texture_padding <= 64:
            raise UserError(f"texture_padding {self.texture_padding} must be in [0, 64] texels")


def wants_texture(geometry, cfg: ExportConfig) -> bool:
    """Whether :func:`export_asset` bakes a texture for ``geometry`` (module docstring)."""
    has_field = callable(getattr(geometry, "texture_field", None))
    if cfg.textured == "always" and not has_field:
        raise UserError(
            f"textured: always needs a geometry with texture_field(points); {type(geometry).__name__} "
            "has none, so use textured: auto or never"
        )
    return cfg.textured == "always" or (cfg.textured == "auto" and has_field)


def export_asset(geometry, folder: str | Path, cfg: ExportConfig = ExportConfig(), renderer=None) -> dict:
    """Mesh files + turntable of ``geometry`` into ``folder``; also writes ``export.json`` (the
    summary returned; ``textured`` and, when baked, ``texture``: size, padding, uv charts, vertex
    count after the seams are cut, the image and material file names). ``renderer`` renders the
    turntable for ``turntable_source="field"`` (default: a volume renderer over a white background
    whose occupancy grid is rebuilt from the geometry's density)."""
    folder = Path(folder)
    textured = wants_texture(geometry, cfg)
    mesh, info = geometry.export_mesh(cfg.resolution, cfg.threshold, cfg.keep_fraction, cfg.fill_cavities)
    texture = None
    if textured:
        device = getattr(geometry, "device", None)  # texture_field takes points on the geometry's device
        mesh = textured_mesh(mesh, geometry.texture_field, cfg.texture_size, cfg.texture_padding, device=device)
        texture = {
            "size": cfg.texture_size,
            "padding": cfg.texture_padding,
            "uv_charts": int(mesh.metadata["uv_charts"]),
            "vertices_after_seams": int(len(mesh.vertices)),
        }
    paths = write_mesh(mesh, folder)
    if textured:
        texture.update(image=paths["png"].name, material=paths["mtl"].name)
    frames = []
    if cfg.turntable_formats:  # [] writes no turntable
        if cfg.turntable_source == "field":
            source = renderer
            if source is None:
                source = VolumeRenderer(geometry).eval()
                source.fill_grid()
        else:
            source = load_mesh_world(paths["glb"]) if textured else mesh  # a texture: what the file holds
        frames = render_turntable(
            source, cfg.turntable_frames, cfg.turntable_size, cfg.turntable_elevation, cfg.turntable_fov
        )
        paths.update(write_turntable(frames, folder, cfg.fps, formats=tuple(cfg.turntable_formats)))
    extent = np.ptp(np.asarray(mesh.vertices), axis=0)
    summary = {
        **info,
        "extent_world_xyz": extent.tolist(),
        "frame": "glTF +Y up: world (x, y, z) -> (x, z, -y)",
        "textured": textured,
        "texture": texture,
        "turntable_source": cfg.turntable_source,
        "turntable_frames": int(len(frames)),
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_json(folder / "export.json", summary)
    return summary
