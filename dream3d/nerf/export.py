"""Field -> mesh (marching cubes) with vertex colours, mesh files, and a turntable video.

Mesh extraction (:func:`extract_mesh`):

1. Density on the vertices of a regular ``R^3`` grid over the box (``field.density_grid``).
2. Iso level (``threshold="auto"``, :func:`auto_threshold`): the level whose solid best matches
   what the volume renderer shows. Along the 3 axes, each grid line is a ray (orthographic views,
   ``3 R^2`` rays); its rendered opacity is ``O = 1 - exp(-sum sigma * h)`` (``h`` the grid spacing)
   and the solid ``{sigma > tau}`` covers it iff ``M = max sigma along it > tau``. ``tau`` minimises
   ``sum |[M > tau] - O|`` (exact, by sorting ``M``; the level is placed half-way, in log space,
   between the two ``M`` values it separates). Why: it needs no knowledge of the density's scale
   or activation (softplus vs exp fields differ by orders of magnitude), it ignores faint haze
   (rays with ``O < 0.5`` prefer to stay outside) and it keeps soft-but-visible parts (``O > 0.5``),
   i.e. the mesh's silhouettes agree with the renders'. A float ``threshold`` is used as given.
   If no ray is more than half opaque the field is empty and a ``UserError`` says so.
3. ``mcubes.marching_cubes`` at that level; vertices mapped back to world coordinates; faces
   oriented outwards (positive signed volume).
4. Floaters: connected components with fewer than ``keep_fraction`` of the largest component's
   faces are dropped (``trimesh.Trimesh.split``).
5. Vertex colours: the field's albedo at the vertices (RGBA uint8), values stored as they are.

Files (:func:`write_mesh`): ``mesh.glb`` (vertex colours as ``COLOR_0``), ``mesh.obj`` (vertex
colours as ``v x y z r g b``), ``mesh.ply``; all in glTF's +Y-up frame: world ``(x, y, z)`` is
written as ``(x, z, -y)`` (a proper rotation, so face winding is kept). Each is written atomically.

Turntable (:func:`render_turntable`): ``n`` views at a fixed elevation, azimuth stepping through
360 degrees, framed so the object fits. ``source="mesh"`` (default) ray-casts the extracted mesh
with open3d's ``RaycastingScene`` (the asset as exported; fast on CPU) and shades it with the
project's rule (:func:`dream3d.shapes.render.shade`: ambient 0.4 + diffuse 0.6, headlight, smooth
vertex normals, interpolated vertex colours, white background); ``source="field"`` volume-renders
the field with a :class:`~dream3d.nerf.renderer.VolumeRenderer` (what was optimised).
:func:`write_turntable` writes ``turntable.mp4`` (H.264, yuv420p, even size) and ``turntable.gif``
(``ExportConfig.turntable_formats``: either, both, or ``[]`` for none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_path, write_json
from ..shapes.camera import Camera

# world (x, y, z) -> glTF (x, z, -y): rows are the new axes
WORLD_TO_GLTF = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class ExportConfig:
    resolution: int = 128
    threshold: float | str = "auto"
    keep_fraction: float = 0.1
    chunk: int = 65536
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
            raise UserError(f"turntable format(s) {bad} are not supported; use a list of 'mp4' and 'gif' (or [] for none)")


# -- iso level -------------------------------------------------------------------------------------

def auto_threshold(grid: torch.Tensor | np.ndarray, bound: float) -> float:
    """The opacity-matched iso level of a vertex density grid ``(R, R, R)`` over ``[-bound, bound]^3``
    (module docstring, step 2)."""
    g = torch.as_tensor(grid, dtype=torch.float64).clamp(min=0)
    if g.ndim != 3 or min(g.shape) < 2:
        raise UserError(f"density grid must be (R, R, R) with R >= 2, got {tuple(g.shape)}")
    h = 2.0 * bound / (g.shape[0] - 1)
    opac = torch.cat([(1.0 - torch.exp(-g.sum(a) * h)).reshape(-1) for a in range(3)])
    peak = torch.cat([g.amax(a).reshape(-1) for a in range(3)])
    order = torch.argsort(peak, descending=True)
    peak, opac = peak[order], opac[order]
    gain = torch.cumsum(1.0 - 2.0 * opac, 0)  # cost change of covering the top-k rays
    k = int(torch.argmin(gain)) + 1  # cover rays 0..k-1
    if float(gain[k - 1]) >= 0.0 or float(peak[k - 1]) <= 0.0:
        raise UserError("the field is empty (no ray is more than half opaque), so there is no mesh to "
                        "extract; train longer or pass an explicit threshold")
    hi = float(peak[k - 1])
    lo = float(peak[k]) if k < peak.numel() else 0.0
    # the level sits strictly between the two peaks it separates
    if lo <= 0.0:
        return hi * 0.5
    return math.sqrt(hi * lo) if hi > lo else hi * (1.0 - 1e-6)


# -- mesh ------------------------------------------------------------------------------------------

@torch.no_grad()
def extract_mesh(field, resolution: int = 128, threshold: float | str = "auto", keep_fraction: float = 0.1,
                 chunk: int = 65536, grid: torch.Tensor | None = None):
    """Marching-cubes mesh of ``field`` in WORLD coordinates (+Z up) with vertex colours.

    Returns ``(mesh, info)``: a ``trimesh.Trimesh`` and ``{"threshold", "resolution",
    "components_total", "components_kept", "faces", "vertices"}``.
    """
    import mcubes
    import trimesh

    bound = float(field.bound)
    if grid is None:
        grid = field.density_grid(resolution, chunk)
    grid = grid.detach().float().cpu()
    resolution = grid.shape[0]
    level = auto_threshold(grid, bound) if threshold == "auto" else float(threshold)
    vol = grid.numpy().astype(np.float64)
    if not (vol.max() > level):
        raise UserError(f"no density above the iso level {level:.4g} (max {vol.max():.4g}); lower the threshold")
    verts, faces = mcubes.marching_cubes(vol, level)
    if len(faces) == 0:
        raise UserError(f"marching cubes found no surface at level {level:.4g}; pass another threshold")
    verts = verts * (2.0 * bound / (resolution - 1)) - bound
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=False)
    parts = mesh.split(only_watertight=False)
    total = len(parts)
    if total > 1:
        sizes = np.array([len(p.faces) for p in parts])
        keep = [p for p, s in zip(parts, sizes) if s >= keep_fraction * sizes.max()]
        mesh = trimesh.util.concatenate(keep)
    else:
        keep = parts
    if mesh.volume < 0:
        mesh.invert()
    pts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=_device(field))
    albedo = torch.cat([field(p)["albedo"].float() for p in pts.split(chunk)]).clamp(0, 1).cpu().numpy()
    rgba = np.concatenate([np.round(albedo * 255), np.full((len(albedo), 1), 255)], 1).astype(np.uint8)
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=rgba, process=False)
    info = {"threshold": level, "resolution": resolution, "components_total": total,
            "components_kept": len(keep), "faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices))}
    return mesh, info


def _device(field) -> torch.device:
    p = next(iter(field.parameters()), None) if hasattr(field, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def to_gltf_frame(mesh):
    """A copy of a world-frame (+Z up) mesh in glTF's +Y-up frame: ``(x, y, z) -> (x, z, -y)``."""
    out = mesh.copy()
    out.vertices = np.asarray(mesh.vertices) @ WORLD_TO_GLTF.T
    return out


def write_mesh(mesh_world, folder: str | Path, name: str = "mesh",
               formats: tuple[str, ...] = ("glb", "obj", "ply")) -> dict[str, Path]:
    """Write ``{folder}/{name}.glb|.obj|.ply`` in the +Y-up frame, atomically. Returns the paths."""
    import trimesh

    folder = Path(folder)
    mesh = to_gltf_frame(mesh_world)
    paths = {}
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "obj":
                text = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_normals=False,
                                                       include_texture=False)
                tmp.write_text(text, encoding="utf-8")
            elif fmt in ("glb", "ply"):
                mesh.export(tmp, file_type=fmt)
            else:
                raise UserError(f"mesh format '{fmt}' is not supported; use glb, obj or ply")
        paths[fmt] = path
    return paths


# -- turntable -------------------------------------------------------------------------------------

def turntable_cameras(n: int, size: int = 256, elevation: float = 15.0, fov: float = 40.0,
                      radius: float = 1.0, margin: float = 1.15) -> list[Camera]:
    """``n`` cameras around the origin at ``elevation``, azimuth ``-180 + 360 k / n`` (front view
    at index ``n // 2``), at the distance where a sphere of ``radius`` (times ``margin``) fills the
    vertical field of view. ``size`` is rounded up to even (video encoders need even sizes)."""
    size = size + (size % 2)
    distance = max(radius * margin / math.sin(math.radians(fov) / 2), 1e-3)
    return [Camera(elevation, -180.0 + 360.0 * k / n, distance, fov, size, size) for k in range(n)]


def render_mesh_views(mesh_world, cameras: list[Camera], background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Ray-cast a vertex-coloured world-frame mesh: ``(N, H, W, 3)`` uint8 frames (module docstring)."""
    import open3d as o3d

    from ..shapes.render import shade

    v = np.asarray(mesh_world.vertices, dtype=np.float32)
    f = np.asarray(mesh_world.faces, dtype=np.uint32)
    colors = np.asarray(mesh_world.visual.vertex_colors)[:, :3].astype(np.float64) / 255.0
    vn = np.asarray(mesh_world.vertex_normals, dtype=np.float64)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(f))
    frames = []
    for cam in cameras:
        o, d = cam.rays_numpy()
        rays = np.concatenate([o, d], -1).reshape(-1, 6).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        uv = hit["primitive_uvs"].numpy().astype(np.float64)
        ok = np.isfinite(hit["t_hit"].numpy())
        img = np.tile(np.asarray(background, dtype=np.float64), (rays.shape[0], 1))
        if ok.any():
            tri = f[prim[ok]].astype(np.int64)
            bary = np.stack([1.0 - uv[ok, 0] - uv[ok, 1], uv[ok, 0], uv[ok, 1]], -1)[..., None]
            albedo = (colors[tri] * bary).sum(1)
            normal = (vn[tri] * bary).sum(1)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
            to_cam = -d.reshape(-1, 3)[ok]
            normal = np.where((normal * to_cam).sum(-1, keepdims=True) < 0, -normal, normal)  # two-sided
            img[ok] = shade(albedo, normal, to_cam)
        frames.append(img.reshape(cam.height, cam.width, 3))
    return np.round(np.clip(np.stack(frames), 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def render_field_views(renderer, cameras: list[Camera]) -> np.ndarray:
    """Volume-render ``cameras`` one at a time: ``(N, H, W, 3)`` uint8 frames."""
    from .renderer import render_camera

    frames = [render_camera(renderer, cam, stratified=False)["rgb"][0] for cam in cameras]
    return np.round(torch.stack(frames).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)


def render_turntable(source, n: int = 36, size: int = 256, elevation: float = 15.0, fov: float = 40.0,
                     radius: float | None = None) -> np.ndarray:
    """Turntable frames ``(n, H, W, 3)`` uint8 of a world-frame ``trimesh.Trimesh`` (ray-cast) or a
    :class:`~dream3d.nerf.renderer.VolumeRenderer` (volume-rendered). ``radius`` of the framed
    sphere defaults to the mesh's farthest vertex, or the renderer's box half-diagonal."""
    from .renderer import VolumeRenderer

    if isinstance(source, VolumeRenderer):
        r = radius if radius is not None else float(source.field.bound) * math.sqrt(3.0)
        return render_field_views(source, turntable_cameras(n, size, elevation, fov, r))
    r = radius if radius is not None else float(np.linalg.norm(np.asarray(source.vertices), axis=-1).max())
    return render_mesh_views(source, turntable_cameras(n, size, elevation, fov, r))


def write_turntable(frames: np.ndarray, folder: str | Path, fps: int = 12, name: str = "turntable",
                    formats: tuple[str, ...] = ("mp4", "gif")) -> dict[str, Path]:
    """Write ``{name}.mp4`` (H.264, yuv420p) and ``{name}.gif`` (looping) atomically."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise UserError(f"turntable frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:  # yuv420p needs even sizes: pad by edge
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    folder = Path(folder)
    paths = {}
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "mp4":
                w = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                       macro_block_size=2, quality=8, ffmpeg_log_level="error")
                try:
                    for fr in frames:
                        w.append_data(fr)
                finally:
                    w.close()
            elif fmt == "gif":
                imageio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
            else:
                raise UserError(f"turntable format '{fmt}' is not supported; use mp4 or gif")
        paths[fmt] = path
    return paths


def export_field(field, folder: str | Path, cfg: ExportConfig = ExportConfig(), renderer=None) -> dict:
    """Mesh + files + turntable for ``field`` into ``folder``; also writes ``export.json`` (the
    summary returned: paths, iso level, mesh statistics). ``renderer`` is used for
    ``turntable_source="field"`` (default: a white-background one whose occupancy grid is rebuilt
    from the field's density)."""
    folder = Path(folder)
    mesh, info = extract_mesh(field, cfg.resolution, cfg.threshold, cfg.keep_fraction, cfg.chunk)
    paths = write_mesh(mesh, folder)
    frames = []
    if cfg.turntable_formats:  # [] writes no turntable
        if cfg.turntable_source == "field":
            from .renderer import VolumeRenderer

            source = renderer
            if source is None:  # an occupancy grid rebuilt from the density skips the empty space
                source = VolumeRenderer(field).eval()
                source.grid.fill_from_density(field.density, source.step_size, torch.Generator().manual_seed(0))
        else:
            source = mesh
        frames = render_turntable(source, cfg.turntable_frames, cfg.turntable_size, cfg.turntable_elevation,
                                  cfg.turntable_fov)
        paths.update(write_turntable(frames, folder, cfg.fps, formats=tuple(cfg.turntable_formats)))
    extent = np.ptp(np.asarray(mesh.vertices), axis=0)
    summary = {**info, "extent_world_xyz": extent.tolist(), "frame": "glTF +Y up: world (x, y, z) -> (x, z, -y)",
               "turntable_source": cfg.turntable_source, "turntable_frames": int(len(frames)),
               "files": {k: str(v) for k, v in paths.items()}}
    write_json(folder / "export.json", summary)
    return summary
