"""The mesh renderer: a surface geometry's triangle mesh, rasterised, textured, shaded and
composited over the background (Magic3D's fine stage; ``renderer: {kind: mesh}``).

The geometry provides ``mesh() -> (verts (V, 3), faces (F, 3))`` (world frame, differentiable) and
``albedo(x (N, 3)) -> (N, 3)`` (its texture field), e.g.
:class:`~dream3d.geometry.dmtet.DMTetGeometry`. For a :class:`~dream3d.cameras.Cameras` batch at
``H x W``, with ``s = supersample``:

1. rasterise the mesh at ``sH x sW`` (:func:`~dream3d.renderers.rasterize.rasterize`: z-buffer,
   perspective-correct barycentrics; nvdiffrast on CUDA when it imports, else PyTorch);
2. at every covered pixel, the surface point ``x`` (the interpolated vertex positions), its normal
   (``rasterizer.normals``: the face's or the interpolated vertex normal), the albedo
   ``geometry.albedo(x)`` and the shader's colour (:mod:`.materials`; the shader sees the ray id
   of the output pixel the sub-pixel belongs to, so per-image lights work as in the volume
   renderer);
3. ``rgb = mask * colour + (1 - mask) * background`` (the background part draws the colour of
   each sub-pixel's ray direction), then anti-aliasing across silhouettes
   (:func:`~dream3d.renderers.rasterize.antialias`), which blends the two pixels of an outline by
   where the edge crosses them and so gives vertex positions a gradient through the outline;
   ``opacity`` is the anti-aliased coverage, ``albedo``, ``normal`` and ``depth`` are over zero
   (premultiplied by coverage, as :class:`~dream3d.renderers.base.RenderOutput` wants);
4. average ``s x s`` blocks down to ``H x W`` (``s = 2``: the 32 px prior sees a 64 px render
   downsampled, smoother outlines than anti-aliasing alone).

``return_samples=True`` adds ``samples = {"verts", "faces"}`` (this step's mesh, for the mesh
regularisers, :mod:`dream3d.systems.regularizers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.nn import functional as F

from ..cameras import Cameras
from ..errors import UserError
from .base import Renderer, RenderOutput
from .materials import AlbedoShader, Shader
from .rasterize import RasterizerConfig, antialias, face_normals, interpolate, rasterize, vertex_normals


@dataclass(frozen=True)
class MeshRendererConfig:
    kind: Literal["mesh"] = "mesh"
    supersample: int = 2  # rasterise at this many times the size, then average down
    rasterizer: RasterizerConfig = field(default_factory=RasterizerConfig)

    def __post_init__(self):
        if not 1 <= self.supersample <= 8:
            raise UserError(f"renderer.supersample {self.supersample} must be in [1, 8]")


class MeshRenderer(Renderer):
    """Rasterises a surface geometry (module docstring)."""

    def __init__(self, geometry, background, cfg: MeshRendererConfig = MeshRendererConfig()):
        super().__init__(geometry, background)
        if not (callable(getattr(geometry, "mesh", None)) and callable(getattr(geometry, "albedo", None))):
            raise UserError(
                f"the mesh renderer needs a surface geometry with mesh() and albedo() (e.g. kind: dmtet), "
                f"not {type(geometry).__name__}; use renderer.kind=volume for density fields"
            )
        self.cfg = cfg

    def forward(
        self,
        cameras: Cameras,
        *,
        shader: Shader | None = None,
        generator: torch.Generator | None = None,
        normals: bool = False,
        return_samples: bool = False,
    ) -> RenderOutput:
        verts, faces = self.geometry.mesh()
        device = verts.device
        cameras = cameras.to(device)
        B, H, W, s = len(cameras), cameras.height, cameras.width, self.cfg.supersample
        fine = cameras.resized(H * s, W * s) if s > 1 else cameras
        shader = shader if shader is not None else AlbedoShader()
        need_normals = normals or bool(getattr(shader, "needs_normals", False))

        raster = rasterize(verts, faces, fine, self.cfg.rasterizer)
        mask = raster.mask.to(verts.dtype)  # (B, sH, sW, 1)
        covered = raster.face_id >= 0  # (B, sH, sW)
        _, rays_d = fine.rays()
        points = interpolate(verts, raster)[covered]  # (S, 3)
        albedo = self.geometry.albedo(points)
        normal = None
        if need_normals:
            if self.cfg.rasterizer.normals == "vertex":
                normal = F.normalize(interpolate(vertex_normals(verts, faces), raster)[covered], dim=-1)
            else:
                normal = face_normals(verts, raster.faces)[raster.face_id[covered]]
        # the output pixel (b, i // s, j // s) of every covered sub-pixel, as the shader's ray id
        b, i, j = torch.nonzero(covered, as_tuple=True)
        ray_ids = (b * H + torch.div(i, s, rounding_mode="floor")) * W + torch.div(j, s, rounding_mode="floor")
        colour = shader(albedo, normal, points, rays_d[covered], ray_ids)

        image_index = torch.arange(B, device=device)[:, None, None].expand(B, H * s, W * s)
        bg = self.background(rays_d.reshape(-1, 3), image_index=image_index.reshape(-1), generator=generator)
        bg = bg.reshape(B, H * s, W * s, 3).to(verts.dtype)
        layers = {
            "rgb": _scatter(colour, covered) + (1.0 - mask) * bg,
            "albedo": _scatter(albedo, covered),
            "opacity": mask,
            "depth": raster.depth,
        }
        if normal is not None:
            layers["normal"] = _scatter(normal, covered)
        names, sizes = list(layers), [v.shape[-1] for v in layers.values()]
        stacked = torch.cat(list(layers.values()), -1)
        if self.cfg.rasterizer.antialias:
            stacked = antialias(stacked, raster)
        if s > 1:
            stacked = F.avg_pool2d(stacked.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
            bg = F.avg_pool2d(bg.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
        out = dict(zip(names, stacked.split(sizes, dim=-1)))
        return RenderOutput(
            rgb=out["rgb"],
            opacity=out["opacity"],
            depth=out["depth"],
            albedo=out["albedo"],
            background=bg,
            normal=out.get("normal"),  # present when asked for or when the shader needed normals
            samples={"verts": verts, "faces": faces} if return_samples else None,
        )


def _scatter(values: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` with ``values (S, C)`` at the covered pixels (row-major order), 0 elsewhere."""
    out = values.new_zeros(*covered.shape, values.shape[-1])
    return out.index_put((covered,), values)
