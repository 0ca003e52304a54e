"""Compositing of packed samples along rays: weights, transmittance, accumulation.

Packed layout (nerfacc's): ``S`` samples of ``n_rays`` rays, each sample the interval
``[t_start, t_end]`` of ray ``ray_indices[i]`` (sorted, non-decreasing). Per sample ``i`` of a ray:
``alpha_i = 1 - exp(-sigma_i * dt_i)``, ``T_i = exp(-sum_{j<i} sigma_j * dt_j)`` (transmittance),
``w_i = T_i * alpha_i`` (nerfacc's ``render_weight_from_density``); per ray, :func:`accumulate`
sums ``w_i * v_i``.

On CUDA, with nerfacc's extension built, nerfacc's packed kernels run; elsewhere nerfacc's batched
functions run on a per-call padded ``(rays, max_samples)`` layout (nerfacc's packed scans are
CUDA-only). ``backend``: ``"auto"`` (that choice), ``"torch"`` (always the padded layout) or
``"nerfacc"`` (the packed kernels; an error without CUDA).
"""

from __future__ import annotations

import torch
from nerfacc.volrend import accumulate_along_rays, render_weight_from_density

from ..diffusion.devices import cuda_extension_available
from ..errors import UserError

BACKENDS = ("auto", "torch", "nerfacc")


def nerfacc_available() -> bool:
    """True when CUDA is present and nerfacc's CUDA extension loads. nerfacc (0.5) compiles the
    extension on first import where CUDA's compiler is found (minutes, once; cached under
    ``~/.cache/torch_extensions``) and leaves ``_C`` as ``None`` where it is not."""
    if not cuda_extension_available("nerfacc.cuda._backend"):
        return False
    from nerfacc.cuda import _backend  # noqa: PLC0415 - only where CUDA is: it starts the build

    return _backend._C is not None


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"rendering backend '{backend}' is unknown; use 'auto', 'torch' or 'nerfacc'")


def use_nerfacc(x: torch.Tensor, backend: str) -> bool:
    """Whether ``backend`` runs nerfacc's CUDA kernels for tensors like ``x``."""
    check_backend(backend)
    if backend == "nerfacc":
        if not (x.is_cuda and nerfacc_available()):
            raise UserError("the 'nerfacc' rendering backend needs CUDA tensors and nerfacc; use backend='torch'")
        return True
    return backend == "auto" and x.is_cuda and nerfacc_available()


def _padded_layout(ray_indices: torch.Tensor, n_rays: int) -> tuple[torch.Tensor, int]:
    """Each sample's position within its ray (``ray_indices`` sorted) and the longest ray."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(ray_indices.shape[0], device=ray_indices.device) - first[ray_indices]
    return pos, int(counts.max()) if counts.numel() else 0


def packed_weights(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigmas: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weights, transmittance, alphas)``, each ``(S,)``, of packed samples (module docstring)."""
    if ray_indices.numel() == 0:
        z = sigmas[:0]
        return z, z, z
    if use_nerfacc(sigmas, backend):
        return render_weight_from_density(t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays)
    pos, width = _padded_layout(ray_indices, n_rays)
    idx = (ray_indices, pos)

    def pad(v):
        return torch.zeros(n_rays, width, dtype=v.dtype, device=v.device).index_put(idx, v)

    w, t, a = render_weight_from_density(pad(t_starts), pad(t_ends), pad(sigmas))  # padding: dt = 0
    return w[idx], t[idx], a[idx]


def accumulate(
    weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int
) -> torch.Tensor:
    """``sum_i w_i * v_i`` per ray, ``(n_rays, C)`` (``values=None``: ``sum_i w_i``, C = 1)."""
    return accumulate_along_rays(weights, values, ray_indices=ray_indices, n_rays=n_rays)
