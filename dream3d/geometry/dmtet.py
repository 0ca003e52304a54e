"""DMTet: an SDF and vertex offsets on a tetrahedral grid, plus a texture field (Magic3D's fine stage).

``geometry: {kind: dmtet}``. The surface is an explicit triangle mesh, extracted differentiably
every step by marching tetrahedra (:mod:`.marching_tets`) on the project's Kuhn grid
(:mod:`.tetgrid`); a rasteriser renders it and asks :meth:`DMTetGeometry.albedo` for colours.

Conventions:

- World frame +Z up, scene box ``[-bound, bound]^3`` cut into ``n^3`` cells of side
  ``h = 2 * bound / n`` (``n = grid_resolution``), 6 tetrahedra per cell.
- SDF: one value per grid vertex, **negative inside** (``sdf < 0``); the surface is ``{sdf = 0}``.
  From scratch it is the sphere ``|x| - init_radius`` (world units).
- Deformation (``deformation: true``): vertex ``i`` sits at
  ``v_i + deformation_scale * h * tanh(offset_i)``, so it moves at most ``deformation_scale`` cells
  along each axis (default 0.5: the two ends of a cell edge can at most meet). Offsets start at
  0. Large offsets can still invert a tetrahedron, whose triangles then face inwards
  (``describe()["inverted_tets"]`` counts them; measured at ``n = 32``: independent uniform
  ``tanh(offset)`` in [-1, 1] invert ~6% of the tetrahedra at scale 0.5 and ~0.003% at 0.25).
  Vertices on the box may leave the box by up to that amount.
- Texture: ``albedo(x) = sigmoid(mlp(hash_encoding((x + bound) / (2 * bound))))`` in [0, 1], the
  NeRF's encoding (:func:`~dream3d.geometry.hashgrid.make_encoding`) and MLP builder
  (:func:`~dream3d.geometry.nerf.mlp`).

Parameter groups: ``sdf``, ``deformation`` (only when on), ``encoding`` (the texture's hash
table) and ``network`` (the texture MLP), learning rates ``optim.lr_<name>``; the texture groups
share the NeRF's names, so ``lr_encoding`` / ``lr_network`` mean the same thing for both.

Coarse to fine (:meth:`DMTetGeometry.create_from`, from any density geometry: ``bound``,
``density(x)``, ``forward(x)["albedo"]``):

1. Iso level ``tau``: ``init_threshold``, ``"auto"`` = the opacity-matched level of the other
   geometry's density on an ``init_resolution^3`` grid over its box
   (:func:`~dream3d.geometry.isosurface.auto_threshold`), i.e. the level its own
   ``export_mesh(init_resolution, "auto")`` uses.
2. SDF: the log-ratio ``f = log(tau) - log(sigma)`` at the grid vertices (negative where the
   density is above the level; ``sigma`` floored at the smallest normal float32) turned into a
   first-order signed distance ``sdf = f / |grad f|`` (``grad f`` by central differences on the
   vertex grid), clamped to ``+-init_sdf_clamp`` cells. The sign, hence the initial surface's
   inside/outside split, is the density's; the scale is world units, as from scratch, so one
   ``lr_sdf`` fits both starts.
3. Texture: ``init_texture_steps`` Adam steps (rate ``init_texture_lr``, batches of 4,096) of the
   mean squared error between :meth:`DMTetGeometry.albedo` at ``init_texture_points`` points
   sampled on the initial mesh (area-weighted) and jittered by ``N(0, (h / 4)^2)``, and the colour
   the other geometry's renders show at the unjittered point (seen head-on along the face normal,
   :func:`~dream3d.geometry.isosurface.rendered_colours`, 3 cells of the ``init_resolution`` grid
   each side: what its own export's vertex colours are). Deterministic (its own seeded generator).
   ``init_info`` keeps the level and the final error.

From another DMTet of the same architecture it copies the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from .base import Geometry
from .hashgrid import HashGridConfig, make_encoding
from .isosurface import auto_threshold, density_grid, drop_floaters, rendered_colours, with_vertex_colours
from .marching_tets import TetSurface, marching_tets
from .nerf import mlp
from .tetgrid import TetGrid, make_tet_grid, signed_volumes


@dataclass(frozen=True)
class DMTetConfig:
    """DMTet settings (module docstring). ``encoding=None`` picks the hash grid's CPU default on
    CPU and the Instant-NGP setting on CUDA, as for the NeRF."""

    kind: Literal["dmtet"] = "dmtet"
    bound: float = 1.0
    grid_resolution: int = 32  # n cells per axis: (n + 1)^3 vertices, 6 n^3 tetrahedra
    deformation: bool = True
    deformation_scale: float = 0.5  # most a vertex moves along each axis, in cells
    init_radius: float = 0.5  # from scratch: the sphere |x| - init_radius
    encoding: HashGridConfig | None = None
    encoding_backend: str = "auto"  # "auto" | "torch" | "c" | "tcnn" (see hashgrid.make_encoding)
    hidden_dim: int = 64
    hidden_layers: int = 1
    # create_from a density geometry:
    init_threshold: float | str = "auto"
    init_resolution: int = 128
    init_sdf_clamp: float = 2.0  # in cells
    init_texture_steps: int = 300
    init_texture_points: int = 16384
    init_texture_lr: float = 1e-2

    def __post_init__(self):
        if not self.bound > 0:
            raise UserError(f"dmtet bound {self.bound} must be > 0")
        if self.grid_resolution < 1:
            raise UserError(f"dmtet grid_resolution {self.grid_resolution} must be >= 1")
        if not 0 < self.deformation_scale <= 1:
            raise UserError(f"dmtet deformation_scale {self.deformation_scale} must be in (0, 1] (cells)")
        if not 0 < self.init_radius < self.bound:
            raise UserError(f"dmtet init_radius {self.init_radius} must be in (0, bound)")
        if self.hidden_dim < 1 or self.hidden_layers < 0:
            raise UserError("dmtet texture MLP needs hidden_dim >= 1 and hidden_layers >= 0")
        if isinstance(self.init_threshold, str) and self.init_threshold != "auto":
            raise UserError(f"dmtet init_threshold '{self.init_threshold}' must be 'auto' or a number")
        if not isinstance(self.init_threshold, str) and not self.init_threshold > 0:
            raise UserError(f"dmtet init_threshold {self.init_threshold} must be > 0 (a density)")
        if self.init_resolution < 2:
            raise UserError(f"dmtet init_resolution {self.init_resolution} must be >= 2")
        if not self.init_sdf_clamp > 0:
            raise UserError(f"dmtet init_sdf_clamp {self.init_sdf_clamp} must be > 0")
        if self.init_texture_steps < 0 or self.init_texture_points < 1 or not self.init_texture_lr > 0:
            raise UserError("dmtet needs init_texture_steps >= 0, init_texture_points >= 1, init_texture_lr > 0")


class DMTetGeometry(Geometry):
    """SDF + deformation on a tet grid, texture field (module docstring)."""

    def __init__(self, cfg: DMTetConfig = DMTetConfig(), device=None):
        super().__init__()
        self.cfg = cfg
        grid = make_tet_grid(cfg.grid_resolution, cfg.bound, device)
        # rebuilt from the config, so kept out of the state dict
        self.register_buffer("grid_vertices", grid.vertices, persistent=False)
        self.register_buffer("tets", grid.tets, persistent=False)
        self.register_buffer("edges", grid.edges, persistent=False)
        self.register_buffer("tet_edges", grid.tet_edges, persistent=False)
        self.sdf = nn.Parameter(grid.vertices.norm(dim=-1) - cfg.init_radius)
        self.deformation = nn.Parameter(torch.zeros_like(grid.vertices)) if cfg.deformation else None
        self.encoding = make_encoding(cfg.encoding, device, backend=cfg.encoding_backend)
        self.texture_net = mlp(self.encoding.output_dim, 3, cfg.hidden_dim, cfg.hidden_layers).to(device)
        self.init_info: dict = {}

    @property
    def bound(self) -> float:
        return self.cfg.bound

    @property
    def cell_size(self) -> float:
        """``h = 2 * bound / n`` in world units."""
        return 2.0 * self.cfg.bound / self.cfg.grid_resolution

    @property
    def grid(self) -> TetGrid:
        """The tet grid (on this module's device)."""
        return TetGrid(
            self.grid_vertices, self.tets, self.edges, self.tet_edges, self.cfg.grid_resolution, self.cfg.bound
        )

    def param_groups(self) -> list[dict]:
        groups = [{"name": "sdf", "params": [self.sdf]}]
        if self.deformation is not None:
            groups.append({"name": "deformation", "params": [self.deformation]})
        groups.append({"name": "encoding", "params": list(self.encoding.parameters())})
        groups.append({"name": "network", "params": list(self.texture_net.parameters())})
        return groups

    def positions(self) -> torch.Tensor:
        """Deformed grid vertices ``v + deformation_scale * h * tanh(offset)``, ``(V, 3)``."""
        if self.deformation is None:
            return self.grid_vertices
        return self.grid_vertices + (self.cfg.deformation_scale * self.cell_size) * torch.tanh(self.deformation)

    @torch.no_grad()
    def inverted_tets(self) -> int:
        """How many tetrahedra the deformation has turned inside out (signed volume <= 0)."""
        return int((signed_volumes(self.positions(), self.tets) <= 0).sum())

    def surface(self) -> TetSurface:
        """Marching tetrahedra on the current SDF and positions: ``(verts, faces, vertex_edges)``."""
        return marching_tets(self.grid, self.positions(), self.sdf)

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The surface mesh ``verts (M, 3)`` (differentiable w.r.t. SDF and offsets) and
        ``faces (F, 3)`` int64, counter-clockwise seen from outside."""
        surf = self.surface()
        return surf.verts, surf.faces

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """Albedo ``(N, 3)`` in [0, 1] at world points ``x (N, 3)`` (clamped to the box)."""
        if x.ndim != 2 or x.shape[-1] != 3:
            raise UserError(f"texture points must have shape (N, 3), got {tuple(x.shape)}")
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        return torch.sigmoid(self.texture_net(self.encoding(u)).float())

    texture_field = albedo  # the exporter's protocol: a geometry with texture_field gets a baked texture

    def describe(self) -> dict:
        out = {
            "encoding_backend": self.encoding.backend,
            "grid_resolution": self.cfg.grid_resolution,
            "grid_vertices": int(self.grid_vertices.shape[0]),
            "grid_tets": int(self.tets.shape[0]),
            "deformation": self.deformation is not None,
            "inverted_tets": self.inverted_tets(),
        }
        out.update({f"init_{k}": v for k, v in self.init_info.items()})
        return out

    # -- coarse to fine ---------------------------------------------------------------------------

    @classmethod
    def create_from(cls, other: Geometry, cfg: DMTetConfig) -> DMTetGeometry:
        """A DMTet initialised from a density geometry (module docstring, steps 1-3), or a copy of
        a DMTet of the same architecture."""
        device = next(iter(other.parameters()), torch.empty(0)).device
        if isinstance(other, DMTetGeometry):
            same = ("bound", "grid_resolution", "deformation", "encoding", "hidden_dim", "hidden_layers")
            if any(getattr(cfg, k) != getattr(other.cfg, k) for k in same):
                raise UserError(f"a DMTet can start from a DMTet with the same {', '.join(same)}; these differ")
            new = cls(cfg, device=device)
            new.load_state_dict(other.state_dict())
            return new
        if not callable(getattr(other, "density", None)):
            return super().create_from(other, cfg)
        new = cls(cfg, device=device)
        level = new._init_sdf(other)
        mse = new._fit_texture(other)
        new.init_info = {"threshold": level, "texture_mse": mse}
        return new

    @torch.no_grad()
    def _init_sdf(self, other) -> float:
        """Step 1-2 of the module docstring; returns the density level used."""
        cfg = self.cfg
        if cfg.init_threshold == "auto":
            other_bound = float(other.bound)
            grid = density_grid(other.density, other_bound, cfg.init_resolution, device=self.device)
            level = auto_threshold(grid, other_bound)
        else:
            level = float(cfg.init_threshold)
        sigma = torch.cat([other.density(p).float() for p in self.grid_vertices.split(65536)]).double()
        f = math.log(level) - sigma.clamp(min=torch.finfo(torch.float32).tiny).log()
        m, h = cfg.grid_resolution + 1, self.cell_size
        grads = torch.gradient(f.reshape(m, m, m), spacing=h)  # central inside, one-sided on the box
        norm = torch.stack(grads).norm(dim=0).reshape(-1)
        limit = cfg.init_sdf_clamp * h
        sdf = (f / norm.clamp(min=1e-12)).clamp(-limit, limit)
        sdf = torch.where(f < 0, sdf.clamp(max=-1e-6 * h), sdf)  # keep every inside vertex inside
        self.sdf.copy_(sdf.float())
        return level

    def _fit_texture(self, other) -> float:
        """Step 3 of the module docstring; returns the last batch's mean squared error."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            verts, faces = self.mesh()
            if faces.shape[0] == 0:
                raise UserError(
                    f"{type(other).__name__} has no surface inside the DMTet grid at its iso level; "
                    "train the coarse stage longer or set init_threshold"
                )
            tri = verts[faces].cpu()  # (F, 3, 3)
            area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
            k = cfg.init_texture_points
            pick = torch.multinomial(area + 1e-20, k, replacement=True, generator=gen)
            r1, r2 = torch.rand(k, 1, generator=gen).sqrt(), torch.rand(k, 1, generator=gen)
            t = tri[pick]
            on_surface = (1 - r1) * t[:, 0] + r1 * (1 - r2) * t[:, 1] + r1 * r2 * t[:, 2]  # uniform on the triangle
            normals = F.normalize(torch.linalg.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], dim=-1), dim=-1)
            pts = (on_surface + torch.randn(k, 3, generator=gen) * (self.cell_size / 4)).to(self.device)
            # what the other geometry's renders show at the surface point (its export's vertex colours)
            depth = 3.0 * 2.0 * float(other.bound) / (cfg.init_resolution - 1)
            target = rendered_colours(other, on_surface.to(self.device), normals.to(self.device), depth)
        params = list(self.encoding.parameters()) + list(self.texture_net.parameters())
        opt = torch.optim.Adam(params, lr=cfg.init_texture_lr, eps=1e-15)
        loss = torch.tensor(float("nan"))
        for _ in range(cfg.init_texture_steps):
            idx = torch.randint(k, (min(k, 4096),), generator=gen).to(self.device)
            loss = F.mse_loss(self.albedo(pts[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cfg.init_texture_steps == 0:
            with torch.no_grad():
                loss = F.mse_loss(self.albedo(pts), target)
        return float(loss.detach())

    # -- export -----------------------------------------------------------------------------------

    @torch.no_grad()
    def export_mesh(
        self, resolution: int = 128, threshold: float | str = "auto", keep_fraction: float = 0.1, fill_cavities=False
    ):
        """The marching-tetrahedra surface as a world-frame ``trimesh.Trimesh`` with RGBA uint8
        vertex colours (the texture's albedo at the vertices), and an info dict (``fill_cavities``
        is a density field's export option; an SDF's surface has none to fill).

        ``resolution`` is not used (the tet grid fixes the mesh; ``info["resolution"]`` is
        ``grid_resolution``). ``threshold``: ``"auto"`` = the SDF's zero level, a number = the level
        ``{sdf = threshold}``. Components with fewer than ``keep_fraction`` of the largest one's
        faces are dropped; faces are turned outwards if the signed volume is negative. Info keys:
        ``threshold``, ``resolution``, ``components_total``, ``components_kept``, ``faces``,
        ``vertices`` (as the NeRF's export).
        """
        level = 0.0 if threshold == "auto" else float(threshold)
        surf = marching_tets(self.grid, self.positions(), self.sdf - level)
        if surf.faces.shape[0] == 0:
            raise UserError(f"the DMTet SDF has no surface at level {level:.4g}; pass another threshold")
        mesh, total, kept = drop_floaters(surf.verts.cpu().numpy(), surf.faces.cpu().numpy(), keep_fraction)
        pts = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=self.device)
        mesh = with_vertex_colours(mesh, torch.cat([self.albedo(p) for p in pts.split(65536)]))
        info = {
            "threshold": level,
            "resolution": self.cfg.grid_resolution,
            "components_total": total,
            "components_kept": kept,
            "faces": int(len(mesh.faces)),
            "vertices": int(len(mesh.vertices)),
        }
        return mesh, info
