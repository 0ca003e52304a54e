"""Volume rendering of a density geometry (a NeRF) along camera rays, with an occupancy grid.

Per sample of a ray (packed samples, :mod:`.sampler`; weights ``w_i``, :mod:`.compositing`), per ray:

- ``opacity`` = ``sum_i w_i``;
- ``rgb`` = ``sum_i w_i * c_i + (1 - opacity) * background`` with ``c_i = shader(albedo, normal,
  point, view_dir)`` (:mod:`.materials`);
- ``depth`` = ``sum_i w_i * t_mid_i`` along the unit ray, NOT divided by opacity; images
  (:meth:`VolumeRenderer.forward`) hold z-depth, the ray distance times the cosine between ray
  and optical axis (the camera convention);
- ``normal`` = ``sum_i w_i * n_i`` (world-space, unit per sample, not renormalised), when asked for
  or when the shader needs normals; ``albedo`` = ``sum_i w_i * albedo_i``.

The geometry needs ``bound``, ``density(x)`` and ``forward(x, normals=None|method)`` returning
``{"sigma", "albedo"[, "normal"]}`` (:class:`~dream3d.geometry.nerf.NeRFGeometry`). The renderer
owns the occupancy grid that skips empty space: :meth:`VolumeRenderer.update` refreshes it at the
start of a training step (nerfacc's rule, every ``grid.update_every`` steps).

Rendering is chunked over rays (``chunk_rays``) so that memory stays bounded when no gradient is
kept; everything is differentiable w.r.t. the geometry's (and background's) parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Literal

import torch
from torch import nn

from ..cameras import Cameras
from ..errors import UserError
from .backgrounds import SolidBackground
from .base import Renderer, RenderOutput
from .compositing import accumulate, check_backend, packed_weights
from .materials import AlbedoShader, Shader
from .sampler import OccupancyGrid, OccupancyGridConfig, RaySamples, SamplerConfig, sample_rays


@dataclass(frozen=True)
class VolumeRendererConfig:
    """``grid=None`` samples the whole box (no empty-space skipping). ``normal_method=None`` uses
    the geometry's own default. ``backend``: sampler and compositing, ``"auto" | "torch" | "nerfacc"``."""

    kind: Literal["volume"] = "volume"
    sampler: SamplerConfig = dc_field(default_factory=SamplerConfig)
    grid: OccupancyGridConfig | None = dc_field(default_factory=OccupancyGridConfig)
    chunk_rays: int = 4096
    normal_method: str | None = None
    backend: str = "auto"

    def __post_init__(self):
        if self.chunk_rays < 1:
            raise UserError(f"chunk_rays {self.chunk_rays} must be >= 1")
        check_backend(self.backend)


class VolumeRenderer(Renderer):
    """Renders a density ``geometry`` over a ``background`` (module docstring); owns the occupancy grid."""

    def __init__(
        self,
        geometry: nn.Module,
        background: nn.Module | None = None,
        cfg: VolumeRendererConfig = VolumeRendererConfig(),
    ):
        super().__init__(geometry, background if background is not None else SolidBackground())
        self.cfg = cfg
        device = next(iter(geometry.parameters()), torch.empty(0)).device
        self.grid = OccupancyGrid(geometry.bound, cfg.grid, device=device) if cfg.grid is not None else None

    @property
    def step_size(self) -> float:
        return self.cfg.sampler.step(self.geometry.bound)

    def update(self, step: int, generator: torch.Generator) -> None:
        """nerfacc-style periodic occupancy update (every ``grid.update_every`` steps), once per
        training step before rendering."""
        if self.grid is not None:
            s = self.step_size
            self.grid.update_every_n_steps(step, lambda x: self.geometry.density(x) * s, generator)

    @torch.no_grad()
    def fill_grid(self, generator: torch.Generator | None = None) -> None:
        """Rebuild the occupancy grid from the geometry's density (e.g. to render a geometry that
        was trained without this renderer)."""
        if self.grid is not None:
            generator = generator if generator is not None else torch.Generator().manual_seed(0)
            self.grid.fill_from_density(self.geometry.density, self.step_size, generator)

    def sample(self, rays_o, rays_d, generator=None, stratified=False) -> RaySamples:
        """Packed samples (through the occupancy grid when there is one). With
        ``sampler.early_stop_eps`` / ``alpha_thre`` > 0 the field's density (no gradient) prunes
        samples hidden behind opaque ones or nearly transparent, as nerfacc does."""
        sc = self.cfg.sampler
        sigma_fn = None
        if sc.early_stop_eps > 0 or sc.alpha_thre > 0:

            def sigma_fn(t_starts, t_ends, ray_indices):
                with torch.no_grad():
                    mid = 0.5 * (t_starts + t_ends)[:, None]
                    return self.geometry.density(rays_o[ray_indices] + mid * rays_d[ray_indices])

        if self.grid is not None:
            return self.grid.sample(rays_o, rays_d, sc, generator, stratified, sigma_fn, backend=self.cfg.backend)
        return sample_rays(rays_o, rays_d, self.geometry.bound, sc, generator, stratified, sigma_fn=sigma_fn)

    def forward(
        self,
        cameras: Cameras,
        *,
        shader: Shader | None = None,
        generator: torch.Generator | None = None,
        normals: bool = False,
        stratified: bool | None = None,
        return_samples: bool = False,
    ) -> RenderOutput:
        """Render ``cameras`` (:class:`~dream3d.renderers.base.RenderOutput`, depth as z-depth).
        Each image gets its own ``image_index`` (per-image random backgrounds)."""
        device = next(iter(self.geometry.parameters()), torch.empty(0)).device
        cameras = cameras.to(device)
        B, H, W = len(cameras), cameras.height, cameras.width
        rays_o, rays_d = cameras.rays()  # (B, H, W, 3), unit directions
        image_index = torch.arange(B, device=device)[:, None, None].expand(B, H, W)
        out = self.render_rays(
            rays_o,
            rays_d,
            generator=generator,
            image_index=image_index,
            shader=shader,
            normals=normals,
            stratified=stratified,
            return_samples=return_samples,
        )
        forward = -cameras.c2w[:, None, None, :3, 2]
        return RenderOutput(
            rgb=out["rgb"],
            opacity=out["opacity"],
            depth=out["depth"] * (rays_d * forward).sum(-1, keepdim=True),
            albedo=out["albedo"],
            background=out["background"],
            normal=out.get("normal"),
            samples=out.get("samples"),
        )

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        image_index: torch.Tensor | None = None,
        shader: Shader | None = None,
        normals: bool = False,
        stratified: bool | None = None,
        return_samples: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render rays ``(..., 3)``: a dict of the module docstring's outputs with the rays' leading
        shape (``depth`` along the ray), plus ``rgb_fg`` (the object over black) and ``background``.

        ``stratified`` (jittered sample positions, drawn from ``generator``) defaults to training
        mode with a generator given; ``image_index`` (long, rays' leading shape) feeds per-image
        random backgrounds; ``normals=True`` adds the ``normal`` map; ``return_samples=True`` adds
        the packed per-sample tensors as ``samples``.
        """
        if rays_o.shape != rays_d.shape or rays_o.shape[-1] != 3:
            raise UserError(
                f"rays must be (..., 3) origins and directions of one shape, got {tuple(rays_o.shape)} "
                f"and {tuple(rays_d.shape)}"
            )
        lead = rays_o.shape[:-1]
        o = rays_o.reshape(-1, 3).float()
        d = torch.nn.functional.normalize(rays_d.reshape(-1, 3).float(), dim=-1)
        n = o.shape[0]
        stratified = (self.training and generator is not None) if stratified is None else stratified
        shader = shader if shader is not None else AlbedoShader()
        need_normals = normals or bool(getattr(shader, "needs_normals", False))
        method = self.cfg.normal_method or getattr(getattr(self.geometry, "cfg", None), "normal_method", "analytic")
        img = image_index.reshape(-1) if image_index is not None else None
        bg = self.background(d, image_index=img, generator=generator)

        keys = ["rgb_fg", "albedo", "opacity", "depth"] + (["normal"] if need_normals else [])
        parts = {k: [] for k in keys}
        samples_out = []
        for c0 in range(0, n, self.cfg.chunk_rays):
            c1 = min(n, c0 + self.cfg.chunk_rays)
            res = self._render_chunk(
                o[c0:c1], d[c0:c1], c0, generator, stratified, shader, method if need_normals else None, return_samples
            )
            for k in keys:
                parts[k].append(res[k])
            if return_samples:
                samples_out.append(res["samples"])
        out = {k: torch.cat(v) for k, v in parts.items()}
        out["background"] = bg
        out["rgb"] = out["rgb_fg"] + (1.0 - out["opacity"]) * bg
        out = {k: v.reshape(*lead, v.shape[-1]) for k, v in out.items()}
        if return_samples:
            out["samples"] = {
                k: torch.cat([s[k] for s in samples_out]) if samples_out[0][k] is not None else None
                for k in samples_out[0]
            }
        return out

    def _render_chunk(self, o, d, offset, generator, stratified, shader, normal_method, return_samples):
        m = o.shape[0]
        s = self.sample(o, d, generator, stratified)
        ri = s.ray_indices
        pts = s.positions(o, d)
        dirs = d[ri]
        f = self.geometry(pts, normals=normal_method) if len(s) else _empty_field_out(pts, normal_method)
        nrm = f.get("normal")
        rgb = shader(f["albedo"], nrm, pts, dirs, ri + offset)
        w, _, _ = packed_weights(s.t_starts, s.t_ends, f["sigma"], ri, m, self.cfg.backend)
        res = {
            "rgb_fg": accumulate(w, rgb, ri, m),
            "albedo": accumulate(w, f["albedo"], ri, m),
            "opacity": accumulate(w, None, ri, m),
            "depth": accumulate(w, s.t_mid[:, None], ri, m),
        }
        if normal_method is not None:
            res["normal"] = accumulate(w, nrm, ri, m)
        if return_samples:
            res["samples"] = {
                "weights": w,
                "ray_indices": ri + offset,
                "t_starts": s.t_starts,
                "t_ends": s.t_ends,
                "points": pts,
                "view_dirs": dirs,
                "sigmas": f["sigma"],
                "normals": nrm,
            }
        return res


def _empty_field_out(pts, normal_method):
    z = pts.new_zeros(0)
    out = {"sigma": z, "albedo": pts.new_zeros(0, 3)}
    if normal_method is not None:
        out["normal"] = pts.new_zeros(0, 3)
    return out
