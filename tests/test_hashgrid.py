"""Hash encoding: against a straightforward reference, dense vs hashed indexing, layout, gradients."""

import numpy as np
import pytest
import torch

from dream3d.errors import UserError
from dream3d.geometry import hashgrid_kernel
from dream3d.geometry.hashgrid import PRIMES, HashGridConfig, HashGridEncoding, hash_encode, level_layout, make_encoding
from dream3d.geometry.hashgrid_kernel import kernel_available, kernel_unavailable_reason

# 6 levels from 8 to 128 per axis, 2^12 rows: levels 0-1 dense (res^3 <= 4096), 2-5 hashed.
SMALL = HashGridConfig.from_max_resolution(128, levels=6, log2_table_size=12, base_resolution=8)


def reference_encode(x: torch.Tensor, flat_table: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """Straightforward Instant-NGP formulas: loop over levels and corners, int64 indices."""
    lay = level_layout(cfg)
    outs = []
    for level in range(cfg.levels):
        pos = x * float(lay.scale[level]) + 0.5
        cell = torch.floor(pos)
        frac = pos - cell
        cell = cell.long()
        res, size, off = int(lay.resolution[level]), int(lay.size[level]), int(lay.offset[level])
        out = 0.0
        for corner in range(8):
            b = [(corner >> d) & 1 for d in range(3)]
            c = [cell[:, d] + b[d] for d in range(3)]
            if lay.hashed[level]:
                index = (c[0] * PRIMES[0] ^ c[1] * PRIMES[1] ^ c[2] * PRIMES[2]) % size
            else:
                index = (c[0] + c[1] * res + c[2] * res * res) % size
            w = 1.0
            for d in range(3):
                w = w * (frac[:, d] if b[d] else 1.0 - frac[:, d])
            out = out + w[:, None] * flat_table[off + index]
        outs.append(out)
    return torch.cat(outs, -1)


def test_layout_follows_tinycudann():
    lay = level_layout(SMALL)
    assert lay.dense_levels == 2 and lay.hashed.tolist() == [False, False, True, True, True, True]
    assert lay.resolution[0] == 8 and lay.size[0] == 8**3  # scale 7 -> 8 vertices per axis
    assert (lay.size[2:] == 2**12).all()
    assert lay.rows == int(lay.size.sum()) and (lay.offset[1:] == np.cumsum(lay.size)[:-1]).all()
    assert all(s % 8 == 0 for s in lay.size)
    ngp = HashGridConfig()
    assert ngp.tcnn_config()["n_levels"] == 16 and level_layout(ngp).resolution[-1] == 4096


def test_values_and_gradients_match_reference():
    torch.manual_seed(0)
    enc = HashGridEncoding(SMALL, dtype=torch.float64)
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(2000, 3, dtype=torch.float64)
    x[:5] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.999, 0.5, 0.001], [0.5, 0.5, 0.5]])
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    flat = enc.params.t()  # (rows, F): tinycudann's row-major layout
    a, b = enc(xa), reference_encode(xb, flat, SMALL)
    assert a.shape == (2000, SMALL.levels * SMALL.features_per_level) == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    g = torch.randn_like(a)
    ga_x, ga_t = torch.autograd.grad(a, (xa, enc.params), g)
    gb_x, gb_t = torch.autograd.grad(b, (xb, enc.params), g)
    torch.testing.assert_close(ga_t, gb_t, rtol=0, atol=1e-10)
    torch.testing.assert_close(ga_x, gb_x, rtol=1e-9, atol=1e-8)


def test_dense_and_hashed_indexing_at_grid_vertices():
    """At a level's vertex the output is exactly that vertex's row: dense x + y*res + z*res^2 there,
    tinycudann's xor-prime hash (uint32, mod table size) on hashed levels."""
    enc = HashGridEncoding(SMALL, dtype=torch.float64)
    with torch.no_grad():
        enc.params[0] = torch.arange(enc.params.shape[1], dtype=torch.float64)
        enc.params[1] = -torch.arange(enc.params.shape[1], dtype=torch.float64)
    lay = level_layout(SMALL)
    k = torch.tensor([[1, 2, 3], [5, 1, 7], [3, 3, 1]], dtype=torch.float64)
    for level in (0, 1, 3, 5):
        scale = float(lay.scale[level])
        x = (k - 0.5) / scale  # pos = x * scale + 0.5 = k exactly (x in [0, 1]): all weight on corner 0
        out = enc(x).detach()[:, 2 * level : 2 * level + 2]
        ki = k.long()
        if lay.hashed[level]:
            expect = ((ki[:, 0] ^ (ki[:, 1] * PRIMES[1]) ^ (ki[:, 2] * PRIMES[2])) & 0xFFFFFFFF) % (1 << 12)
        else:
            res = int(lay.resolution[level])
            expect = ki[:, 0] + ki[:, 1] * res + ki[:, 2] * res * res
        expect = (expect + int(lay.offset[level])).double()
        torch.testing.assert_close(out[:, 0], expect, rtol=0, atol=1e-6)
        torch.testing.assert_close(out[:, 1], -expect, rtol=0, atol=1e-6)


def test_second_derivatives_for_analytic_normals():
    torch.manual_seed(1)
    enc = HashGridEncoding(HashGridConfig.from_max_resolution(32, levels=3, log2_table_size=10), dtype=torch.float64)
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = (torch.rand(6, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    table = enc.params.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: _enc_with(enc, p, t), (x, table), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda p: _enc_with(enc, p, table), (x,), fast_mode=True)
    # d/dtable of a loss on d(out)/dx (what a normal-orientation loss needs)
    y = enc(x).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=True)
    (gx**2).sum().backward()
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0


def _enc_with(enc, x, table):
    return hash_encode(
        x,
        table,
        enc.scale.double(),
        enc.dense_stride,
        enc.dense_corner,
        enc.dense_size,
        enc.offset,
        enc.n_dense,
        enc.hash_mask,
    )


def test_init_tcnn_roundtrip_and_errors():
    enc = make_encoding(SMALL, "cpu")
    assert isinstance(enc, HashGridEncoding) and enc.output_dim == 12
    assert enc.params.abs().max() <= 1e-4
    flat = torch.randn(enc.params.numel())
    enc.load_tcnn_params(flat)
    torch.testing.assert_close(enc.tcnn_params(), flat)
    assert make_encoding(None, "cpu").cfg == HashGridConfig.cpu_default()
    with pytest.raises(UserError):
        enc(torch.rand(4, 2))
    with pytest.raises(UserError):
        HashGridConfig(levels=0)
    with pytest.raises(UserError):
        make_encoding(SMALL, "cpu", backend="nope")
    with pytest.raises(UserError):
        HashGridEncoding(SMALL, kernel="maybe")


# --- the compiled CPU kernel (dream3d/geometry/hashgrid_kernel.c) -------------------------------------

needs_kernel = pytest.mark.skipif(
    not kernel_available(), reason=f"no hash-grid C kernel: {kernel_unavailable_reason()}"
)


@needs_kernel
@pytest.mark.parametrize("features", [1, 2, 4, 8])
def test_kernel_matches_pytorch_ops_and_reference(features):
    cfg = HashGridConfig.from_max_resolution(
        128, levels=6, log2_table_size=12, base_resolution=8, features_per_level=features
    )
    torch.manual_seed(0)
    fused = HashGridEncoding(cfg, kernel="on")
    ops = HashGridEncoding(cfg, kernel="off")
    with torch.no_grad():
        fused.params.uniform_(-1, 1)
        ops.params.copy_(fused.params)
    x = torch.rand(3000, 3) * 1.2 - 0.1  # some points outside [0, 1]: clamped on both paths
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [float("nan"), 0.5, 0.5], [0.0, 0.5, 0.5]])
    a, b = fused(x), ops(x)
    assert a.grad_fn is not None and "KernelEncode" in type(a.grad_fn).__name__
    assert "KernelEncode" not in type(b.grad_fn).__name__
    torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    torch.testing.assert_close(a[2], a[3])  # NaN counts as 0
    ref = reference_encode(x.nan_to_num(0).clamp(0, 1), fused.params.detach().t(), cfg)  # float32, as ours
    torch.testing.assert_close(a, ref, rtol=0, atol=2e-6)
    g = torch.randn_like(a)
    (ga,) = torch.autograd.grad(a, fused.params, g)
    (gb,) = torch.autograd.grad(b, ops.params, g)
    torch.testing.assert_close(ga, gb, rtol=0, atol=2e-5)


@needs_kernel
def test_kernel_threads_give_identical_results():
    """Threads take disjoint level ranges, so any thread count gives bit-identical values."""
    enc = HashGridEncoding(HashGridConfig.cpu_default(), kernel="on")
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(20000, 3, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            enc.params.grad = None
            out = enc(x)
            out.backward(torch.cos(out))
            results.append((out.detach(), enc.params.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@needs_kernel
def test_points_needing_an_input_gradient_take_the_pytorch_ops():
    """Analytic normals need d(out)/dx and its derivative: the kernel's path is skipped for them."""
    enc = make_encoding(SMALL, "cpu")  # auto: the kernel is on
    assert enc.backend == "c"
    x = torch.rand(50, 3, requires_grad=True)
    y = enc(x)
    assert "KernelEncode" not in type(y.grad_fn).__name__
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (gx**2).sum().backward()
    assert enc.params.grad.abs().sum() > 0
    with torch.no_grad():  # no graph wanted: the kernel serves it even when x requires grad
        torch.testing.assert_close(enc(x), y.detach(), rtol=0, atol=2e-6)


@needs_kernel
def test_kernel_build_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAM3D_CACHE", str(tmp_path))
    cc = hashgrid_kernel._compiler()
    lib = hashgrid_kernel._build(cc)
    assert lib.parent == tmp_path / "kernels" and lib.exists()
    mtime = lib.stat().st_mtime_ns
    assert hashgrid_kernel._build(cc) == lib and lib.stat().st_mtime_ns == mtime  # found, not rebuilt
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]  # no temporary files left behind


def test_without_a_compiler_auto_falls_back_and_c_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    hashgrid_kernel._load.cache_clear()
    try:
        assert not kernel_available() and "did not build" in kernel_unavailable_reason()
        with pytest.warns(UserWarning, match="slower PyTorch ops"):
            enc = make_encoding(SMALL, "cpu")
        assert enc.backend == "torch" and enc(torch.rand(5, 3)).shape == (5, 12)
        with pytest.raises(UserError, match="encoding_backend=torch"):
            make_encoding(SMALL, "cpu", backend="c")
        assert make_encoding(SMALL, "cpu", backend="torch").backend == "torch"  # no warning: asked for
    finally:
        monkeypatch.undo()
        hashgrid_kernel._load.cache_clear()
