"""Volume rendering of a field along rays: packed samples -> weights -> composited images.

Per sample ``i`` of a ray (interval ``[t_i, t_i + dt_i]``, midpoint ``t_mid_i``):
``alpha_i = 1 - exp(-sigma_i * dt_i)``, ``T_i = exp(-sum_{j<i} sigma_j * dt_j)``, ``w_i = T_i * alpha_i``
(nerfacc's ``render_weight_from_density``; on CUDA its packed kernels, on CPU its batched functions
on a per-chunk padded ``(rays, max_samples)`` layout, since nerfacc's packed scans are CUDA-only).

Outputs per ray (``render`` returns them with the rays' leading shape, e.g. ``(H, W, C)``):

- ``opacity (…, 1)`` = ``sum_i w_i``;
- ``rgb_fg (…, 3)`` = ``sum_i w_i * c_i`` with ``c_i = material(albedo, normal, point, view_dir)``;
- ``rgb (…, 3)`` = ``rgb_fg + (1 - opacity) * background``, ``background (…, 3)``;
- ``depth (…, 1)`` = ``sum_i w_i * t_mid_i``: the expected distance along the (normalised) ray,
  NOT divided by opacity (empty rays give 0; divide by opacity for the distance to the surface).
  :func:`render_camera` turns it into z-depth (the camera module's convention) by multiplying by
  the cosine between ray and optical axis;
- ``normal (…, 3)`` = ``sum_i w_i * n_i`` (world-space, unit per sample, not renormalised), when
  asked for or when the material needs normals; ``albedo (…, 3)`` = ``sum_i w_i * albedo_i``.

With ``return_samples=True`` the packed per-sample tensors come back too (``weights``,
``ray_indices`` into the flattened rays, ``t_starts``, ``t_ends``, ``points``, ``view_dirs``,
``normals``), e.g. for DreamFusion's orientation loss ``sum w * max(0, n . d)^2``.

Rendering is chunked over rays (``chunk_rays``) so that memory stays bounded when no gradient is
kept; everything is differentiable w.r.t. the field's (and background's) parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Protocol, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..shapes.camera import Camera, rays_batch, stack_cameras
from .background import SolidBackground
from .sampler import OccupancyGrid, OccupancyGridConfig, RaySamples, SamplerConfig, nerfacc_available, sample_rays


class Material(Protocol):
    """Turns per-sample surface attributes into per-sample colour.

    ``albedo (S, 3)``, ``normals (S, 3)`` unit or ``None`` (when ``needs_normals`` is false),
    ``points (S, 3)`` world positions, ``view_dirs (S, 3)`` unit ray directions (camera -> point),
    ``ray_ids (S,)`` long indices into the flattened rays of the render call (with
    :func:`render_camera`, image ``b`` owns rays ``b * H * W`` to ``(b + 1) * H * W - 1``).
    Returns ``rgb (S, 3)``.
    """

    needs_normals: bool

    def __call__(self, albedo: torch.Tensor, normals: torch.Tensor | None, points: torch.Tensor,
                 view_dirs: torch.Tensor, ray_ids: torch.Tensor) -> torch.Tensor: ...


class AlbedoMaterial:
    """The default material: colour = albedo (no shading)."""

    needs_normals = False

    def __call__(self, albedo, normals, points, view_dirs, ray_ids):
        return albedo


@dataclass(frozen=True)
class RendererConfig:
    """``grid=None`` samples the whole box (no empty-space skipping). ``normal_method=None`` uses
    the field's own default."""

    sampler: SamplerConfig = dc_field(default_factory=SamplerConfig)
    grid: OccupancyGridConfig | None = dc_field(default_factory=OccupancyGridConfig)
    chunk_rays: int = 4096
    normal_method: str | None = None
    backend: str = "auto"  # sampler and compositing: "auto" | "torch" | "nerfacc"

    def __post_init__(self):
        if self.chunk_rays < 1:
            raise UserError(f"chunk_rays {self.chunk_rays} must be >= 1")
        if self.backend not in ("auto", "torch", "nerfacc"):
            raise UserError(f"renderer backend '{self.backend}' is unknown; use 'auto', 'torch' or 'nerfacc'")


# -- packed volume rendering ---------------------------------------------------------------------

def _padded_layout(ray_indices: torch.Tensor, n_rays: int) -> tuple[torch.Tensor, int]:
    """Each sample's position within its ray (``ray_indices`` sorted) and the longest ray."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(ray_indices.shape[0], device=ray_indices.device) - first[ray_indices]
    return pos, int(counts.max()) if counts.numel() else 0


def _use_nerfacc_packed(x: torch.Tensor, backend: str) -> bool:
    if backend == "nerfacc":
        if not (x.is_cuda and nerfacc_available()):
            raise UserError("the 'nerfacc' rendering backend needs CUDA tensors and nerfacc; use backend='torch'")
        return True
    return backend == "auto" and x.is_cuda and nerfacc_available()


def packed_weights(t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor, ray_indices: torch.Tensor,
                   n_rays: int, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weights, transmittance, alphas)``, each ``(S,)``, of packed samples (module docstring)."""
    from nerfacc.volrend import render_weight_from_density

    if ray_indices.numel() == 0:
        z = sigmas[:0]
        return z, z, z
    if _use_nerfacc_packed(sigmas, backend):
        return render_weight_from_density(t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays)
    pos, width = _padded_layout(ray_indices, n_rays)
    idx = (ray_indices, pos)

    def pad(v):
        return torch.zeros(n_rays, width, dtype=v.dtype, device=v.device).index_put(idx, v)

    w, t, a = render_weight_from_density(pad(t_starts), pad(t_ends), pad(sigmas))  # padding: dt = 0
    return w[idx], t[idx], a[idx]


def packed_transmittance(t_starts, t_ends, sigmas, ray_indices, n_rays, backend: str = "auto"):
    """``(transmittance, alphas)`` of packed samples."""
    _, trans, alphas = packed_weights(t_starts, t_ends, sigmas, ray_indices, n_rays, backend)
    return trans, alphas


def accumulate(weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor,
               n_rays: int) -> torch.Tensor:
    """``sum_i w_i * v_i`` per ray, ``(n_rays, C)`` (``values=None``: ``sum_i w_i``, C = 1)."""
    from nerfacc.volrend import accumulate_along_rays

    return accumulate_along_rays(weights, values, ray_indices=ray_indices, n_rays=n_rays)


# -- the renderer --------------------------------------------------------------------------------

class VolumeRenderer(nn.Module):
    """Renders ``field`` (with ``material`` and ``background``) along rays; owns the occupancy grid.

    ``field`` needs ``bound``, ``density(x)`` and ``forward(x, normals=None|method)`` returning
    ``{"sigma", "albedo"[, "normal"]}`` (:class:`~dream3d.nerf.field.NeRFField`).
    """

    def __init__(self, field: nn.Module, background: nn.Module | None = None, material: Material | None = None,
                 cfg: RendererConfig = RendererConfig()):
        super().__init__()
        self.cfg = cfg
        self.field = field
        self.background = background if background is not None else SolidBackground()
        self.material = material if material is not None else AlbedoMaterial()
        device = next(iter(field.parameters()), torch.empty(0)).device
        self.grid = OccupancyGrid(field.bound, cfg.grid, device=device) if cfg.grid is not None else None

    @property
    def step_size(self) -> float:
        return self.cfg.sampler.step(self.field.bound)

    def update_grid(self, step: int, generator: torch.Generator) -> bool:
        """nerfacc-style periodic occupancy update (every ``grid.update_every`` steps); call it
        once per training step before rendering. Returns whether the grid changed."""
        if self.grid is None:
            return False
        s = self.step_size
        return self.grid.update_every_n_steps(step, lambda x: self.field.density(x) * s, generator)

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
                    return self.field.density(rays_o[ray_indices] + mid * rays_d[ray_indices])
        if self.grid is not None:
            return self.grid.sample(rays_o, rays_d, sc, generator, stratified, sigma_fn, backend=self.cfg.backend)
        return sample_rays(rays_o, rays_d, self.field.bound, sc, generator, stratified, sigma_fn=sigma_fn)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, generator: torch.Generator | None = None,
                image_index: torch.Tensor | None = None, material: Material | None = None,
                normals: bool = False, stratified: bool | None = None,
                return_samples: bool = False) -> dict[str, torch.Tensor]:
        """Render rays ``(..., 3)``; outputs have the same leading shape (module docstring).

        ``stratified`` (jittered sample positions, drawn from ``generator``) defaults to training
        mode with a generator given;
        ``image_index`` (long, rays' leading shape) feeds per-image random backgrounds;
        ``material`` overrides the renderer's; ``normals=True`` adds the ``normal`` map.
        """
        if rays_o.shape != rays_d.shape or rays_o.shape[-1] != 3:
            raise UserError(f"rays must be (..., 3) origins and directions of one shape, got {tuple(rays_o.shape)} "
                            f"and {tuple(rays_d.shape)}")
        lead = rays_o.shape[:-1]
        o = rays_o.reshape(-1, 3).float()
        d = torch.nn.functional.normalize(rays_d.reshape(-1, 3).float(), dim=-1)
        n = o.shape[0]
        stratified = (self.training and generator is not None) if stratified is None else stratified
        material = material if material is not None else self.material
        need_normals = normals or bool(getattr(material, "needs_normals", False))
        method = self.cfg.normal_method or getattr(getattr(self.field, "cfg", None), "normal_method", "analytic")
        img = image_index.reshape(-1) if image_index is not None else None
        bg = self.background(d, image_index=img, generator=generator)

        keys = ["rgb_fg", "albedo", "opacity", "depth"] + (["normal"] if need_normals else [])
        parts = {k: [] for k in keys}
        samples_out = []
        for c0 in range(0, n, self.cfg.chunk_rays):
            c1 = min(n, c0 + self.cfg.chunk_rays)
            res = self._render_chunk(o[c0:c1], d[c0:c1], c0, generator, stratified, material,
                                     method if need_normals else None, return_samples)
            for k in keys:
                parts[k].append(res[k])
            if return_samples:
                samples_out.append(res["samples"])
        out = {k: torch.cat(v) for k, v in parts.items()}
        out["background"] = bg
        out["rgb"] = out["rgb_fg"] + (1.0 - out["opacity"]) * bg
        out = {k: v.reshape(*lead, v.shape[-1]) for k, v in out.items()}
        if return_samples:
            out["samples"] = {k: torch.cat([s[k] for s in samples_out]) if samples_out[0][k] is not None else None
                              for k in samples_out[0]}
        return out

    def _render_chunk(self, o, d, offset, generator, stratified, material, normal_method, return_samples):
        m = o.shape[0]
        s = self.sample(o, d, generator, stratified)
        ri = s.ray_indices
        pts = s.positions(o, d)
        dirs = d[ri]
        f = self.field(pts, normals=normal_method) if len(s) else _empty_field_out(pts, normal_method)
        nrm = f.get("normal")
        rgb = material(f["albedo"], nrm, pts, dirs, ri + offset)
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
            res["samples"] = {"weights": w, "ray_indices": ri + offset, "t_starts": s.t_starts, "t_ends": s.t_ends,
                              "points": pts, "view_dirs": dirs, "sigmas": f["sigma"], "normals": nrm}
        return res


def _empty_field_out(pts, normal_method):
    z = pts.new_zeros(0)
    out = {"sigma": z, "albedo": pts.new_zeros(0, 3)}
    if normal_method is not None:
        out["normal"] = pts.new_zeros(0, 3)
    return out


def render_camera(renderer, cameras, *, generator: torch.Generator | None = None, material: Material | None = None,
                  normals: bool = False, stratified: bool | None = None, background: nn.Module | None = None,
                  ) -> dict[str, torch.Tensor]:
    """Render whole images: ``(B, H, W, C)`` tensors (``B = 1`` for one camera).

    ``renderer``: a :class:`VolumeRenderer`, or a bare field (then rendered with dense sampling,
    a white background and its albedo). ``cameras``: a :class:`~dream3d.shapes.camera.Camera`, a
    list of them (one size), or a tuple ``(c2w (B, 4, 4), focal (B,), H, W)``. Each image gets its
    own ``image_index`` (per-image random backgrounds), and ``depth`` is z-depth (ray distance
    times the cosine to the optical axis), still weighted by opacity.
    """
    if not isinstance(renderer, VolumeRenderer):
        renderer = VolumeRenderer(renderer, background=background, cfg=RendererConfig(grid=None))
        background = None
    c2w, focal, H, W = _camera_batch(cameras)
    device = next(iter(renderer.field.parameters()), torch.empty(0)).device
    c2w, focal = c2w.to(device), focal.to(device)
    rays_o, rays_d = rays_batch(c2w, focal, H, W)  # (B, H, W, 3), unit directions
    B = c2w.shape[0]
    image_index = torch.arange(B, device=device)[:, None, None].expand(B, H, W)
    old_bg = renderer.background
    if background is not None:
        renderer.background = background
    try:
        out = renderer(rays_o, rays_d, generator=generator, image_index=image_index, material=material,
                       normals=normals, stratified=stratified)
    finally:
        renderer.background = old_bg
    forward = -c2w[:, None, None, :3, 2]
    out["depth"] = out["depth"] * (rays_d * forward).sum(-1, keepdim=True)
    return out


def _camera_batch(cameras) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    if isinstance(cameras, Camera):
        cameras = [cameras]
    if isinstance(cameras, (list, tuple)) and cameras and all(isinstance(c, Camera) for c in cameras):
        sizes = {(c.height, c.width) for c in cameras}
        if len(sizes) != 1:
            raise UserError(f"cameras of one render_camera call must share one image size, got {sorted(sizes)}")
        H, W = sizes.pop()
        c2w, focal = stack_cameras(list(cameras))
        return c2w, focal, H, W
    if isinstance(cameras, Sequence) and len(cameras) == 4:
        c2w, focal, H, W = cameras
        c2w = torch.as_tensor(c2w, dtype=torch.float32).reshape(-1, 4, 4)
        focal = torch.as_tensor(focal, dtype=torch.float32).reshape(-1).expand(c2w.shape[0])
        return c2w, focal, int(H), int(W)
    raise UserError("cameras must be a Camera, a list of Cameras, or a tuple (c2w, focal, H, W)")
