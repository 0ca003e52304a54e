"""Turntable videos of an asset: ``turntable.mp4`` (H.264, yuv420p, even size) and ``turntable.gif``.

:func:`render_turntable` renders ``n`` views at a fixed elevation, azimuth stepping through 360
degrees, framed so the object fits. From a mesh (the default, ``turntable_source: mesh``) it
ray-casts the exported asset with open3d's ``RaycastingScene`` (fast on CPU) and shades it with
the project's one rule (:func:`dream3d.renderers.materials.lambert`: ambient 0.4 + diffuse 0.6,
headlight, smooth vertex normals, interpolated vertex colours, white background); from a
renderer (``turntable_source: field``) it renders what was optimised. :func:`write_turntable`
writes the video files (``ExportConfig.turntable_formats``: either, both, or ``[]`` for none).
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from ..cameras import Camera, Cameras
from ..errors import UserError
from ..io import atomic_path
from ..renderers.base import Renderer
from ..renderers.materials import lambert
from .texture import is_textured, sample_texture, texture_image


def turntable_cameras(
    n: int, size: int = 256, elevation: float = 15.0, fov: float = 40.0, radius: float = 1.0, margin: float = 1.15
) -> list[Camera]:
    """``n`` cameras around the origin at ``elevation``, azimuth ``-180 + 360 k / n`` (front view
    at index ``n // 2``), at the distance where a sphere of ``radius`` (times ``margin``) fills the
    vertical field of view. ``size`` is rounded up to even (video encoders need even sizes)."""
    size = size + (size % 2)
    distance = max(radius * margin / math.sin(math.radians(fov) / 2), 1e-3)
    return [Camera(elevation, -180.0 + 360.0 * k / n, distance, fov, size, size) for k in range(n)]


def render_mesh_views(mesh_world, cameras: list[Camera], background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Ray-cast a vertex-coloured or textured world-frame mesh: ``(N, H, W, 3)`` uint8 frames
    (module docstring)."""
    import open3d as o3d  # noqa: PLC0415 - deferred: ~1 s to import, and GPU machines without it export with turntable_formats: []

    v = np.asarray(mesh_world.vertices, dtype=np.float32)
    f = np.asarray(mesh_world.faces, dtype=np.uint32)
    textured = is_textured(mesh_world)
    if textured:
        uvs = np.asarray(mesh_world.visual.uv, dtype=np.float64)
        image = texture_image(mesh_world)
    else:
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
            if textured:
                albedo = sample_texture(image, (uvs[tri] * bary).sum(1))
            else:
                albedo = (colors[tri] * bary).sum(1)
            normal = (vn[tri] * bary).sum(1)
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
            to_cam = -d.reshape(-1, 3)[ok]
            normal = np.where((normal * to_cam).sum(-1, keepdims=True) < 0, -normal, normal)  # two-sided
            img[ok] = lambert(albedo, normal, to_cam)
        frames.append(img.reshape(cam.height, cam.width, 3))
    return np.round(np.clip(np.stack(frames), 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def render_field_views(renderer: Renderer, cameras: list[Camera]) -> np.ndarray:
    """Render ``cameras`` one at a time with ``renderer``: ``(N, H, W, 3)`` uint8 frames."""
    frames = [renderer(Cameras.stack(cam), stratified=False).rgb[0] for cam in cameras]
    return np.round(torch.stack(frames).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)


def render_turntable(
    source, n: int = 36, size: int = 256, elevation: float = 15.0, fov: float = 40.0, radius: float | None = None
) -> np.ndarray:
    """Turntable frames ``(n, H, W, 3)`` uint8 of a world-frame ``trimesh.Trimesh`` (ray-cast; vertex
    colours or a texture) or a
    :class:`~dream3d.renderers.base.Renderer` (rendered). ``radius`` of the framed sphere defaults
    to the mesh's farthest vertex, or the renderer's box half-diagonal."""
    if isinstance(source, Renderer):
        r = radius if radius is not None else float(source.geometry.bound) * math.sqrt(3.0)
        return render_field_views(source, turntable_cameras(n, size, elevation, fov, r))
    r = radius if radius is not None else float(np.linalg.norm(np.asarray(source.vertices), axis=-1).max())
    return render_mesh_views(source, turntable_cameras(n, size, elevation, fov, r))


def write_turntable(
    frames: np.ndarray,
    folder: str | Path,
    fps: int = 12,
    name: str = "turntable",
    formats: tuple[str, ...] = ("mp4", "gif"),
) -> dict[str, Path]:
    """Write ``{name}.mp4`` (H.264, yuv420p) and ``{name}.gif`` (looping) atomically."""
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
                w = imageio.get_writer(
                    tmp,
                    format="FFMPEG",
                    fps=fps,
                    codec="libx264",
                    pixelformat="yuv420p",
                    macro_block_size=2,
                    quality=8,
                    ffmpeg_log_level="error",
                )
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
