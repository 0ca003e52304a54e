"""The NeRF geometry: hash encoding + two small MLPs -> density and albedo (DreamFusion / threestudio).

``geometry: {kind: nerf}`` (:data:`dream3d.geometry.GEOMETRY`); rendered by the volume renderer,
exported by marching cubes (:mod:`.isosurface`).

Conventions:

- World frame +Z up (the project's); the scene box is ``[-bound, bound]^3`` and points are mapped to
  the encoding's ``[0, 1]^3`` by ``(x + bound) / (2 * bound)`` (clamped).
- ``sigma = activation(raw + blob(x))`` with ``blob(x) = min(blob_density * (1 - |x| / blob_radius), blob_cap)``
  (threestudio's "blob_magic3d" bias: a dense ball at the start of optimisation, so score
  distillation has an object to shape); ``activation`` is ``softplus`` (default) or ``trunc_exp``
  (``exp`` whose gradient is clamped at ``exp(15)``, as Instant-NGP / torch-ngp).
- ``albedo = sigmoid(mlp(features))`` in [0, 1].
- Normals are unit vectors ``-grad(sigma) / |grad(sigma)|`` (pointing out of the object), either
  analytic (autograd; differentiable, so a loss on them trains the field) or by central finite
  differences with step ``eps`` in world units (6 extra density evaluations).

Parameter groups: ``encoding`` (the hash table) and ``network`` (the MLPs), each with its own
learning rate (``optim.lr_encoding``, ``optim.lr_network``).

Any object with ``bound``, ``density(x)``, ``forward(x) -> {"sigma", "albedo"}`` and ``normals(x)``
works with the volume renderer and marching cubes (see ``AnalyticField`` in the tests for a
minimal one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from .base import Geometry
from .hashgrid import HashGridConfig, make_encoding
from .isosurface import density_grid, extract_mesh


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose backward uses ``exp(min(x, 15))`` (no overflowing gradients)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


DENSITY_ACTIVATIONS = {"softplus": F.softplus, "trunc_exp": trunc_exp}
NORMAL_METHODS = ("analytic", "finite_difference")


@dataclass(frozen=True)
class NeRFConfig:
    """NeRF settings. ``encoding=None`` picks :meth:`HashGridConfig.cpu_default` on CPU and the
    Instant-NGP setting on CUDA."""

    kind: Literal["nerf"] = "nerf"
    bound: float = 1.0
    encoding: HashGridConfig | None = None
    encoding_backend: str = "auto"  # "auto" | "torch" | "c" | "tcnn" (see hashgrid.make_encoding)
    hidden_dim: int = 64
    hidden_layers: int = 1
    density_activation: str = "softplus"
    blob_density: float = 10.0
    blob_radius: float = 0.5
    # Caps the blob's bias near the centre (None: no cap). A low cap keeps the centre easy to carve
    # (a torus's hole) while the outside of the ball stays as strongly suppressed as without it.
    blob_cap: float | None = None
    normal_method: str = "analytic"
    normal_eps: float = 0.01

    def __post_init__(self):
        if not self.bound > 0:
            raise UserError(f"field bound {self.bound} must be > 0")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise UserError(
                f"density_activation '{self.density_activation}' is unknown; use one of {sorted(DENSITY_ACTIVATIONS)}"
            )
        if self.normal_method not in NORMAL_METHODS:
            raise UserError(f"normal_method '{self.normal_method}' is unknown; use one of {NORMAL_METHODS}")
        if self.hidden_dim < 1 or self.hidden_layers < 0:
            raise UserError("field MLP needs hidden_dim >= 1 and hidden_layers >= 0")
        if not self.blob_radius > 0:
            raise UserError(f"blob_radius {self.blob_radius} must be > 0")


def mlp(n_in: int, n_out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``, then a linear output."""
    mods, d = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)


class NeRFGeometry(Geometry):
    """Hash-grid NeRF with density and albedo heads (see the module docstring)."""

    def __init__(self, cfg: NeRFConfig = NeRFConfig(), device=None):
        super().__init__()
        self.cfg = cfg
        self.encoding = make_encoding(cfg.encoding, device, backend=cfg.encoding_backend)
        d = self.encoding.output_dim
        self.density_net = mlp(d, 1, cfg.hidden_dim, cfg.hidden_layers).to(device)
        self.albedo_net = mlp(d, 3, cfg.hidden_dim, cfg.hidden_layers).to(device)
        self._activation = DENSITY_ACTIVATIONS[cfg.density_activation]

    @property
    def bound(self) -> float:
        return self.cfg.bound

    def param_groups(self) -> list[dict]:
        return [
            {"name": "encoding", "params": list(self.encoding.parameters())},
            {"name": "network", "params": list(self.density_net.parameters()) + list(self.albedo_net.parameters())},
        ]

    @classmethod
    def create_from(cls, other: Geometry, cfg: NeRFConfig) -> NeRFGeometry:
        """A copy of another NeRF of the same architecture (``cfg`` may change what the weights do
        not depend on: the blob, the normals, the activation)."""
        if not isinstance(other, NeRFGeometry):
            return super().create_from(other, cfg)
        same = ("bound", "encoding", "hidden_dim", "hidden_layers")
        if any(getattr(cfg, k) != getattr(other.cfg, k) for k in same):
            raise UserError(f"a NeRF can start from a NeRF with the same {', '.join(same)}; these differ")
        new = cls(cfg, device=other.device)
        new.load_state_dict(other.state_dict())
        return new

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[-1] != 3:
            raise UserError(f"field points must have shape (N, 3), got {tuple(x.shape)}")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        return self.encoding(u)

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        """The density bias ``blob_density * (1 - |x| / blob_radius)`` (pre-activation), at most ``blob_cap``."""
        r = torch.sqrt((x * x).sum(-1) + 1e-12)
        bias = self.cfg.blob_density * (1.0 - r / self.cfg.blob_radius)
        return bias if self.cfg.blob_cap is None else bias.clamp(max=self.cfg.blob_cap)

    def _sigma(self, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        raw = self.density_net(feats)[:, 0].float()
        return self._activation(raw + self.blob(x))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """``sigma (N,)`` >= 0 at world points ``x (N, 3)``."""
        self._check(x)
        return self._sigma(x, self._features(x))

    def forward(self, x: torch.Tensor, normals: str | None = None) -> dict[str, torch.Tensor]:
        """``{"sigma": (N,), "albedo": (N, 3)}``, plus ``"normal": (N, 3)`` when ``normals`` is
        ``"analytic"`` or ``"finite_difference"`` (computed from the same density)."""
        self._check(x)
        if normals == "analytic":
            grad_mode = torch.is_grad_enabled()
            with torch.enable_grad():
                xg = x if x.requires_grad else x.detach().requires_grad_(True)
                feats = self._features(xg)
                sigma = self._sigma(xg, feats)
                normal = _normal_from_grad(sigma, xg, create_graph=grad_mode)
            if not grad_mode:
                sigma, feats, normal = sigma.detach(), feats.detach(), normal.detach()
            return {"sigma": sigma, "albedo": torch.sigmoid(self.albedo_net(feats).float()), "normal": normal}
        feats = self._features(x)
        out = {"sigma": self._sigma(x, feats), "albedo": torch.sigmoid(self.albedo_net(feats).float())}
        if normals is not None:
            out["normal"] = self.normals(x, method=normals)
        return out

    def normals(
        self, x: torch.Tensor, method: str | None = None, eps: float | None = None, create_graph: bool | None = None
    ) -> torch.Tensor:
        """Unit normals ``-grad(sigma) / |grad(sigma)|`` at ``x (N, 3)``, ``(N, 3)``.

        ``method``: ``"analytic"`` (autograd; differentiable when ``create_graph``, which defaults to
        whether grad mode is on) or ``"finite_difference"`` (central differences, step ``eps`` in
        world units, default ``cfg.normal_eps``). Default ``cfg.normal_method``.
        """
        return density_normals(
            self.density, x, method or self.cfg.normal_method, self.cfg.normal_eps if eps is None else eps, create_graph
        )

    @torch.no_grad()
    def density_grid(self, resolution: int = 128, chunk: int = 65536) -> torch.Tensor:
        """Density at the vertices of a regular grid over the box: ``(R, R, R)`` indexed
        ``[ix, iy, iz]``, vertex ``i`` at ``-bound + 2 * bound * i / (R - 1)`` on each axis."""
        return density_grid(self.density, self.bound, resolution, chunk, self.device)

    def describe(self) -> dict:
        return {"encoding_backend": self.encoding.backend}  # c, torch or tcnn

    def export_mesh(
        self, resolution: int = 128, threshold: float | str = "auto", keep_fraction: float = 0.1, fill_cavities=False
    ):
        """Marching cubes at the render-matched iso level (:func:`~dream3d.geometry.isosurface.extract_mesh`)."""
        return extract_mesh(self, resolution, threshold, keep_fraction, fill_cavities=fill_cavities)


def _normal_from_grad(sigma: torch.Tensor, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    (grad,) = torch.autograd.grad(sigma.sum(), x, create_graph=create_graph)
    return -F.normalize(grad, dim=-1, eps=1e-12)


def density_normals(
    density_fn, x: torch.Tensor, method: str = "analytic", eps: float = 0.01, create_graph: bool | None = None
) -> torch.Tensor:
    """Unit normals ``-grad(sigma)`` normalised, for any ``density_fn: (N, 3) -> (N,)``."""
    if method == "analytic":
        create_graph = torch.is_grad_enabled() if create_graph is None else create_graph
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            n = _normal_from_grad(density_fn(xg), xg, create_graph)
        return n if create_graph else n.detach()
    if method == "finite_difference":
        offsets = torch.eye(3, dtype=x.dtype, device=x.device) * eps  # (3, 3)
        pts = torch.cat([x[None] + offsets[:, None], x[None] - offsets[:, None]])  # (6, N, 3)
        s = density_fn(pts.reshape(-1, 3)).reshape(2, 3, -1)
        grad = ((s[0] - s[1]) / (2 * eps)).t()  # (N, 3)
        return -F.normalize(grad, dim=-1, eps=1e-12)
    raise UserError(f"normal method '{method}' is unknown; use 'analytic' or 'finite_difference'")
