"""Multi-resolution hash encoding (Instant-NGP), with tiny-cuda-nn's parameterisation.

Conventions (identical to tinycudann's ``HashGrid`` encoding, so parameters are interchangeable):

- Input ``x`` of shape ``(N, 3)`` in ``[0, 1]^3`` (callers map their box onto it; values outside
  are clamped, so their gradient w.r.t. ``x`` is zero; NaN counts as 0).
- Level ``l`` (``0 <= l < levels``) has ``scale_l = base_resolution * per_level_scale**l - 1`` and
  ``resolution_l = ceil(scale_l) + 1`` vertices per axis; a point sits at ``p = x * scale_l + 0.5``,
  its cell corner is ``floor(p)`` and the trilinear weights come from ``p - floor(p)``.
- Level ``l`` owns ``size_l = min(next_multiple(resolution_l**3, 8), 2**log2_table_size)`` rows of
  ``features_per_level`` values in one flat table ``(sum(size_l), F)``, levels one after another.
  A level whose dense grid fits (``resolution_l**3 <= size_l``) is indexed densely,
  ``i = x + y * res + z * res**2``; otherwise by tinycudann's spatial hash
  ``i = x * 1 ^ y * 2654435761 ^ z * 805459861`` (uint32 arithmetic); both taken ``mod size_l``.
- Output ``(N, levels * features_per_level)``, level-major (level 0's features first).
- Initialisation uniform(-1e-4, 1e-4), as tinycudann.

Our implementation handles all levels and all 8 corners at once, with no Python loop over levels
or corners: per-axis corner terms (hash products in int32, wrapping mod 2^32 like tinycudann's
uint32) are combined by broadcasting into one ``(8, levels, N)`` index tensor (the dense levels
are a prefix, the hashed ones the rest), then ONE gather per feature from the flat table and one
weighted sum; the backward is one ``index_add_`` per feature (:class:`_Interpolate`). Gradients
w.r.t. the table and the input, and second derivatives (analytic normals in a loss), work. Inner
loops run over the N points (contiguous), which is what makes it fast on CPU; ``torch.compile``
was measured and did not pay (see ``benchmarks/hashgrid.py``).

On CPU, points that need no input gradient (the usual case: finite-difference normals) go through
a compiled C kernel instead when a C compiler works (:mod:`.hashgrid_kernel`): the same
computation in one loop, ~2x faster than these ops, same results up to float rounding.

CPU default (:meth:`HashGridConfig.cpu_default`): see its docstring and ``benchmarks/hashgrid.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..diffusion.devices import cuda_extension_available
from ..errors import UserError
from .hashgrid_kernel import KernelLayout, kernel_available, kernel_unavailable_reason

PRIMES = (1, 2654435761, 805459861)
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class HashGridConfig:
    """Hash-grid settings with tinycudann's names and meaning.

    The default is Instant-NGP's / threestudio's GPU setting (16 levels x 2 features, 2^19 rows
    per level, base resolution 16, per-level scale 1.447..., finest level ~4096). Use
    :meth:`cpu_default` on CPU.
    """

    levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378
    interpolation: str = "linear"

    def __post_init__(self):
        if not 1 <= self.levels <= 32:
            raise UserError(f"hash grid levels {self.levels} must be in [1, 32]")
        if self.features_per_level not in (1, 2, 4, 8):
            raise UserError(f"hash grid features_per_level {self.features_per_level} must be 1, 2, 4 or 8")
        if not 8 <= self.log2_table_size <= 24:
            raise UserError(f"hash grid log2_table_size {self.log2_table_size} must be in [8, 24]")
        if self.base_resolution < 2:
            raise UserError(f"hash grid base_resolution {self.base_resolution} must be >= 2")
        if not self.per_level_scale >= 1.0:
            raise UserError(f"hash grid per_level_scale {self.per_level_scale} must be >= 1")
        if self.interpolation.lower() != "linear":
            raise UserError(f"hash grid interpolation '{self.interpolation}' is not supported; use 'linear'")

    @classmethod
    def from_max_resolution(cls, max_resolution: int, levels: int = 16, **kw) -> HashGridConfig:
        """Choose ``per_level_scale`` so that the finest level has ~``max_resolution`` cells."""
        base = kw.get("base_resolution", 16)
        scale = math.exp(math.log(max_resolution / base) / max(levels - 1, 1)) if levels > 1 else 1.0
        return cls(levels=levels, per_level_scale=scale, **kw)

    @classmethod
    def cpu_default(cls) -> HashGridConfig:
        """The CPU default: 8 levels x 2 features, 2^15 rows per level, base 16, finest 256
        (per-level scale 16^(1/7) = 1.486; levels 0-1 dense, 2-7 hashed).

        Chosen by measurement (``benchmarks/hashgrid.py``, one thread): ~0.8-1.0 M points/s forward +
        backward vs ~0.5-0.65 M for 12 levels x 2^16 and ~0.15 M for the Instant-NGP setting. The
        table is 2 MiB (its gradient and the two Adam moments as much again each) so it stays in
        cache, and zeroing the gradient plus the optimiser step cost ~1 ms instead of ~100 ms for
        16 x 2^19 (16.8 M parameters). Finest resolution 256 over the scene box is finer than what
        the 64-128 px renders of CPU training resolve; near the surface the finest level sees
        ~1-2 occupied cells per table row, so collisions stay mild.
        """
        return cls.from_max_resolution(256, levels=8, log2_table_size=15)

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level

    def tcnn_config(self) -> dict:
        """The tinycudann encoding config of this grid."""
        return {
            "otype": "HashGrid",
            "n_levels": self.levels,
            "n_features_per_level": self.features_per_level,
            "log2_hashmap_size": self.log2_table_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LevelLayout:
    """Per-level constants (numpy): scale, resolution, table rows, row offset, hashed or dense."""

    scale: np.ndarray  # float32 (L,)
    resolution: np.ndarray  # int64 (L,)
    size: np.ndarray  # int64 (L,)
    offset: np.ndarray  # int64 (L,)
    hashed: np.ndarray  # bool (L,)

    @property
    def rows(self) -> int:
        return int(self.offset[-1] + self.size[-1])

    @property
    def dense_levels(self) -> int:
        """Levels are ordered coarse to fine, so the dense ones are a prefix."""
        return int((~self.hashed).sum())


def level_layout(cfg: HashGridConfig) -> LevelLayout:
    """tinycudann's per-level layout for ``cfg`` (float32 scale arithmetic as in its kernels)."""
    log2_scale = np.float32(math.log2(cfg.per_level_scale))
    levels = np.arange(cfg.levels, dtype=np.float32)
    scale = (np.exp2(levels * log2_scale) * np.float32(cfg.base_resolution) - np.float32(1.0)).astype(np.float32)
    resolution = np.ceil(scale).astype(np.int64) + 1
    dense = resolution.astype(np.float64) ** 3
    max_rows = 1 << cfg.log2_table_size
    size = np.where(dense > max_rows, max_rows, np.minimum(((resolution**3 + 7) // 8) * 8, max_rows))
    size = np.where(dense > (2**31 - 1), max_rows, size).astype(np.int64)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    hashed = resolution.astype(np.float64) ** 3 > size
    if np.any(hashed[:-1] & ~hashed[1:]):  # pragma: no cover - resolutions grow with the level
        raise UserError("hash grid levels must grow in resolution; use per_level_scale >= 1")
    return LevelLayout(scale, resolution, size, offset, hashed)


CORNER_BITS = np.array([[(c >> d) & 1 for d in range(3)] for c in range(8)])  # (8, 3): bx, by, bz
P1_INT32 = PRIMES[1] - (1 << 32)  # the same low 32 bits, as a signed int32 (products wrap mod 2^32)
P2_INT32 = PRIMES[2]
INDEX_DTYPE = torch.int32  # gather/scatter index type: int64 measured no faster, and twice the memory


class _Interpolate(torch.autograd.Function):
    """``out[f, m] = sum_c weight[c, m] * table[f, index[c, m]]`` with a hand-written backward.

    ``table (F, rows)``, ``index (8, M)`` int32 or int64, ``weight (8, M)`` -> ``(F, M)``
    (``M = L * N``).
    One 1-D gather (forward) and one 1-D ``index_add_`` (backward) per feature over all levels and
    corners. The backward is made of differentiable ops, so double backward (a loss on analytic
    normals) works.
    """

    @staticmethod
    def forward(ctx, table, index, weight):
        flat = index.view(-1)
        F, M = table.shape[0], weight.shape[1]
        out = torch.empty(F, M, dtype=table.dtype, device=table.device)
        buf = torch.empty(flat.shape[0], dtype=table.dtype, device=table.device)  # reused: fewer page faults
        for f in range(F):
            torch.index_select(table[f], 0, flat, out=buf)
            torch.sum(buf.view_as(weight).mul_(weight), 0, out=out[f])
        ctx.save_for_backward(table, index, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, index, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        flat = index.view(-1)
        grad_table = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros_like(table)
            if torch.is_grad_enabled():  # double backward: stay out-of-place
                for f in range(table.shape[0]):
                    grad_table[f].index_add_(0, flat, (weight * grad_out[f]).view(-1))
            else:
                buf = torch.empty_like(weight)
                for f in range(table.shape[0]):
                    src = torch.mul(weight, grad_out[f], out=buf).view(-1)
                    if flat.dtype == torch.int64:
                        grad_table[f].scatter_add_(0, flat, src)
                    else:
                        grad_table[f].index_add_(0, flat, src)
        if ctx.needs_input_grad[2]:
            grad_weight = sum(
                table[f].index_select(0, flat).view_as(weight) * grad_out[f] for f in range(table.shape[0])
            )
        return grad_table, None, grad_weight


def hash_indices_and_weights(
    x: torch.Tensor,
    scale: torch.Tensor,
    dense_stride: torch.Tensor,
    dense_corner: torch.Tensor,
    dense_size: torch.Tensor,
    offset: torch.Tensor,
    n_dense: int,
    hash_mask: int,
):
    """Row indices ``(8, L, N)`` (int32) and trilinear weights ``(8, L, N)`` of points ``x (N, 3)``.

    Corner ``c = bx + 2 * by + 4 * bz`` (bit set = the +1 corner on that axis), as tinycudann.
    ``scale (L,)``; ``dense_stride (3, n_dense)`` int32 = ``(1, res, res^2)``; ``dense_corner
    (8, n_dense)`` int32 = each corner's index offset ``bx + by * res + bz * res^2``; ``dense_size
    (n_dense,)`` int32; ``offset (L,)`` int32 row offsets; levels ``>= n_dense`` are hashed into
    ``hash_mask + 1`` rows. Everything is computed per axis and combined by broadcasting over the
    leading (corner) dimensions, so every inner loop runs over the ``L * N`` contiguous values.
    The per-axis hash products are int32 and wrap modulo 2^32 like tinycudann's uint32 arithmetic
    (only the low ``log2_table_size`` bits are kept); the combined index is :data:`INDEX_DTYPE`.
    """
    n, L = x.shape[0], scale.shape[0]
    xs = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0).t().contiguous()  # (3, N); NaN counts as 0, as in the kernel
    pos = xs[:, None, :] * scale[None, :, None] + 0.5  # (3, L, N)
    cell_f = torch.floor(pos.detach())
    frac = pos - cell_f
    cell = cell_f.to(torch.int32)
    index = torch.empty(8, L, n, dtype=INDEX_DTYPE, device=x.device)
    if n_dense > 0:
        base = (cell[:, :n_dense] * dense_stride[:, :, None]).sum(0, dtype=torch.int32)  # (Ld, N)
        d = index[:, :n_dense]
        torch.add(base, dense_corner[:, :, None], out=d)
        size = dense_size[:, None]
        d.sub_(d.ge(size).to(index.dtype).mul_(size))  # == d % size: only the +1 corners can reach size
    if n_dense < L:
        c = cell[:, n_dense:]
        hx = torch.stack([c[0], c[0] + 1]).to(index.dtype)  # (2, Lh, N)
        hy = torch.stack([c[1], c[1] + 1]).mul_(P1_INT32).to(index.dtype)
        hz = torch.stack([c[2], c[2] + 1]).mul_(P2_INT32).to(index.dtype)
        h = index[:, n_dense:].view(2, 2, 2, L - n_dense, n)  # (bz, by, bx, Lh, N)
        torch.bitwise_xor((hz[:, None] ^ hy[None])[:, :, None], hx, out=h)
        h.bitwise_and_(hash_mask)
    index.add_(offset[:, None])
    w = torch.stack([1.0 - frac, frac])  # (2, 3, L, N): w[b, axis]
    weight = ((w[:, 2, None] * w[None, :, 1])[:, :, None] * w[:, 0]).view(8, L, n)
    return index, weight


def hash_encode(
    x: torch.Tensor,
    table: torch.Tensor,
    scale: torch.Tensor,
    dense_stride: torch.Tensor,
    dense_corner: torch.Tensor,
    dense_size: torch.Tensor,
    offset: torch.Tensor,
    n_dense: int,
    hash_mask: int,
) -> torch.Tensor:
    """The fused encoding: ``x (N, 3)`` in [0, 1], ``table (F, rows)`` -> ``(N, L * F)`` level-major."""
    index, weight = hash_indices_and_weights(
        x, scale, dense_stride, dense_corner, dense_size, offset, n_dense, hash_mask
    )
    n, L, F = x.shape[0], scale.shape[0], table.shape[0]
    out = _Interpolate.apply(table, index.view(8, L * n), weight.to(table.dtype).view(8, L * n))  # (F, L*N)
    return out.view(F, L, n).permute(2, 1, 0).reshape(n, L * F)


class _KernelEncode(torch.autograd.Function):
    """The encoding through the compiled CPU kernel (:mod:`.hashgrid_kernel`): gradient w.r.t. the
    table only (callers send points that need an input gradient through :func:`hash_encode`)."""

    @staticmethod
    def forward(ctx, table, x, kernel):
        ctx.save_for_backward(x)
        ctx.kernel = kernel
        return kernel.forward(x, table)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_table = ctx.kernel.backward(x, grad_out.contiguous()) if ctx.needs_input_grad[0] else None
        return grad_table, None, None


class HashGridEncoding(nn.Module):
    """Our PyTorch hash encoding (see the module docstring for the exact parameterisation).

    ``params`` is the table stored feature-major, ``(features_per_level, rows)``, so that each
    feature is one contiguous gather; :meth:`tcnn_params` / :meth:`load_tcnn_params` convert from
    and to tinycudann's flat ``(rows * F,)`` layout (row-major: a row's features are adjacent).

    ``kernel``: ``"auto"`` sends CPU float32 points that need no input gradient through the
    compiled C kernel (:mod:`.hashgrid_kernel`) when it builds, ``"on"`` requires it (error if it
    does not build), ``"off"`` always uses the PyTorch ops. Points that need an input gradient
    (analytic normals, which also need second derivatives), other dtypes and other devices always
    use the PyTorch ops; both give the same results up to float rounding.
    """

    def __init__(self, cfg: HashGridConfig = HashGridConfig(), device=None, dtype=torch.float32, kernel: str = "auto"):
        super().__init__()
        if kernel not in ("auto", "on", "off"):
            raise UserError(f"hash encoding kernel '{kernel}' is unknown; use 'auto', 'on' or 'off'")
        on_cpu = torch.device(device if device is not None else "cpu").type == "cpu"
        if kernel == "on" and not (on_cpu and kernel_available()):
            why = kernel_unavailable_reason() if on_cpu else "the hash-grid C kernel runs on the CPU only"
            raise UserError(f"{why}; use encoding_backend=torch or auto")
        use_kernel = on_cpu and kernel != "off" and kernel_available()
        if on_cpu and kernel == "auto" and not use_kernel:
            warnings.warn(f"{kernel_unavailable_reason()}; the hash encoding uses the slower PyTorch ops", stacklevel=2)
        self.cfg = cfg
        layout = level_layout(cfg)
        self.layout = layout
        self.n_dense = layout.dense_levels
        self.hash_mask = (1 << cfg.log2_table_size) - 1
        res = layout.resolution[: self.n_dense]
        stride = np.stack([np.ones_like(res), res, res * res], 0).reshape(3, -1)  # (3, Ld)
        i32 = dict(dtype=torch.int32, device=device)
        self.register_buffer("scale", torch.tensor(layout.scale, dtype=torch.float32, device=device), persistent=False)
        self.register_buffer("dense_stride", torch.tensor(stride, **i32), persistent=False)
        self.register_buffer("dense_corner", torch.tensor(CORNER_BITS @ stride, **i32), persistent=False)
        self.register_buffer("dense_size", torch.tensor(layout.size[: self.n_dense], **i32), persistent=False)
        self.register_buffer("offset", torch.tensor(layout.offset, **i32), persistent=False)
        # drawn on the CPU (global generator), then moved: the same seed gives the same table on any device
        table = torch.empty(cfg.features_per_level, layout.rows, dtype=dtype).uniform_(-1e-4, 1e-4)
        self.params = nn.Parameter(table.to(device))
        self.kernel = (
            KernelLayout(
                layout.scale,
                layout.resolution,
                layout.size,
                layout.offset,
                layout.hashed,
                cfg.features_per_level,
                self.hash_mask,
            )
            if use_kernel
            else None
        )

    @property
    def backend(self) -> str:
        """make_encoding's name for what serves CPU float32 points: ``"c"`` (the kernel) or ``"torch"``."""
        return "c" if self.kernel is not None else "torch"

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    @property
    def n_output_dims(self) -> int:  # tinycudann's name
        return self.cfg.output_dim

    def _kernel_serves(self, x: torch.Tensor) -> bool:
        """The C kernel takes CPU float32 points that need no input gradient, with a CPU float32 table."""
        p = self.params
        return (
            self.kernel is not None
            and x.device.type == p.device.type == "cpu"
            and x.dtype == p.dtype == torch.float32
            and p.is_contiguous()
            and not (x.requires_grad and torch.is_grad_enabled())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != 3:
            raise UserError(f"hash encoding expects points of shape (N, 3), got {tuple(x.shape)}")
        if self._kernel_serves(x):
            return _KernelEncode.apply(self.params, x.contiguous(), self.kernel)
        scale = self.scale if x.dtype == torch.float32 else self.scale.to(x.dtype)
        return hash_encode(
            x,
            self.params,
            scale,
            self.dense_stride,
            self.dense_corner,
            self.dense_size,
            self.offset,
            self.n_dense,
            self.hash_mask,
        )

    def tcnn_params(self) -> torch.Tensor:
        """The table in tinycudann's flat layout ``(rows * F,)``."""
        return self.params.detach().t().reshape(-1).clone()

    @torch.no_grad()
    def load_tcnn_params(self, flat: torch.Tensor) -> None:
        """Load a tinycudann ``HashGrid`` parameter vector of the same config."""
        F, rows = self.params.shape
        if flat.numel() != F * rows:
            raise UserError(
                f"tinycudann parameters have {flat.numel()} values, this grid needs {F * rows}; "
                "use the same HashGridConfig"
            )
        self.params.copy_(flat.reshape(rows, F).t())


class TcnnEncoding(nn.Module):
    """tinycudann's HashGrid behind our interface (float32 output, same (N, L*F) layout)."""

    backend = "tcnn"

    def __init__(self, cfg: HashGridConfig, device=None):
        super().__init__()
        import tinycudann as tcnn  # noqa: PLC0415 - optional, CUDA only, not on PyPI

        self.cfg = cfg
        self.encoding = tcnn.Encoding(3, cfg.tcnn_config(), dtype=torch.float32).to(device)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    @property
    def params(self) -> torch.Tensor:
        return self.encoding.params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x).float()


def tcnn_available() -> bool:
    """True when CUDA is present and tinycudann imports."""
    return cuda_extension_available("tinycudann")


def make_encoding(cfg: HashGridConfig | None = None, device=None, backend: str = "auto") -> nn.Module:
    """The hash encoding for ``cfg`` on ``device``.

    ``backend``: ``"auto"`` = tinycudann's ``Encoding`` when on CUDA and tinycudann imports, else
    ours, with the compiled C kernel on CPU when it builds; ``"torch"`` = ours, PyTorch ops only;
    ``"c"`` = ours with the C kernel (CPU; error if it does not build); ``"tcnn"`` = tinycudann
    (error if unavailable). ``cfg`` defaults to :meth:`HashGridConfig.cpu_default` on CPU and the
    Instant-NGP setting on CUDA. All return ``(N, levels * features_per_level)`` float32 with the
    same layout and parameterisation.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if cfg is None:
        cfg = HashGridConfig() if device.type == "cuda" else HashGridConfig.cpu_default()
    if backend not in ("auto", "torch", "c", "tcnn"):
        raise UserError(f"unknown hash encoding backend '{backend}'; use 'auto', 'torch', 'c' or 'tcnn'")
    if backend == "tcnn" or (backend == "auto" and device.type == "cuda" and tcnn_available()):
        if not tcnn_available():
            raise UserError("the 'tcnn' hash encoding needs CUDA and tinycudann; use backend='torch'")
        return TcnnEncoding(cfg, device)
    return HashGridEncoding(cfg, device=device, kernel={"torch": "off", "c": "on"}.get(backend, "auto"))
