"""Volume rendering: analytic compositing, occupancy-grid skipping, gradients, the NeRF geometry and backgrounds."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from dream3d.cameras import Camera, Cameras
from dream3d.errors import UserError
from dream3d.geometry.hashgrid import HashGridConfig
from dream3d.geometry.nerf import NeRFConfig, NeRFGeometry, density_normals
from dream3d.renderers.backgrounds import (
    MLPBackground,
    MLPBackgroundConfig,
    RandomBackgroundConfig,
    RandomColorBackground,
    SolidBackground,
    SolidBackgroundConfig,
)
from dream3d.renderers.compositing import nerfacc_available, packed_weights
from dream3d.renderers.sampler import OccupancyGrid, OccupancyGridConfig, SamplerConfig, sample_rays
from dream3d.renderers.volume import VolumeRenderer, VolumeRendererConfig

TINY = NeRFConfig(encoding=HashGridConfig.from_max_resolution(64, levels=4, log2_table_size=12), hidden_dim=16)


class AnalyticField(nn.Module):
    """The field interface with a closed-form density; ``gain`` is a parameter (for gradients)."""

    def __init__(self, density_fn, bound=1.0, albedo=(0.8, 0.1, 0.1)):
        super().__init__()
        self.density_fn, self.bound = density_fn, bound
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("color", torch.tensor(albedo))

    def density(self, x):
        return self.density_fn(x) * self.gain

    def forward(self, x, normals=None):
        out = {"sigma": self.density(x), "albedo": self.color.expand(x.shape[0], 3)}
        if normals is not None:
            out["normal"] = density_normals(self.density, x, normals, 1e-3)
        return out


def slab(sigma, h):
    return lambda x: torch.where(x[:, 2].abs() < h, torch.full_like(x[:, 0], sigma), torch.zeros_like(x[:, 0]))


def ball(sigma, radius):
    return lambda x: sigma * torch.relu(1.0 - x.norm(dim=-1) / radius)


def test_slab_opacity_and_depth_match_closed_form():
    sigma, h, dist = 2.0, 0.2, 3.0
    field = AnalyticField(slab(sigma, h))
    renderer = VolumeRenderer(field, cfg=VolumeRendererConfig(sampler=SamplerConfig(num_samples=2048), grid=None))
    theta = torch.deg2rad(torch.tensor([0.0, 30.0, 60.0, 15.0]))
    d = torch.stack([torch.sin(theta), torch.zeros_like(theta), -torch.cos(theta)], -1)
    o = -dist * d  # every ray passes through the origin, the slab's centre
    out = renderer.render_rays(o, d, stratified=False)
    length = 2 * h / torch.cos(theta)
    expect = 1 - torch.exp(-sigma * length)
    torch.testing.assert_close(out["opacity"][:, 0], expect, atol=4e-3, rtol=0)
    t0 = dist - h / torch.cos(theta)
    e = torch.exp(-sigma * length)
    depth = t0 * (1 - e) + (1 - e * (1 + sigma * length)) / sigma
    torch.testing.assert_close(out["depth"][:, 0], depth, atol=1e-2, rtol=0)
    # background blends with the leftover transmittance (white by default), material = albedo
    torch.testing.assert_close(out["rgb"], out["opacity"] * field.color + (1 - out["opacity"]), atol=1e-5, rtol=0)
    # a ray that misses the box sees only the background
    miss = renderer.render_rays(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert miss["opacity"].item() == 0 and torch.allclose(miss["rgb"], torch.ones(1, 3))


def test_packed_weights_equal_a_per_ray_reference():
    g = torch.Generator().manual_seed(0)
    ray_indices = torch.tensor([0, 0, 0, 2, 2, 3])
    t_starts = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.6, 0.0])
    t_ends = t_starts + torch.tensor([0.1, 0.2, 0.1, 0.1, 0.3, 1.0])
    sigmas = torch.rand(6, generator=g) * 5
    w, trans, alpha = packed_weights(t_starts, t_ends, sigmas, ray_indices, 4, backend="torch")
    ref = []
    for r in range(4):
        m = ray_indices == r
        tau = sigmas[m] * (t_ends[m] - t_starts[m])
        T = torch.exp(-(torch.cumsum(tau, 0) - tau))
        ref.append(T * (1 - torch.exp(-tau)))
    torch.testing.assert_close(w, torch.cat(ref))


def cube(sigma, half):
    return lambda x: torch.where(x.abs().amax(-1) < half, torch.full_like(x[:, 0], sigma), torch.zeros_like(x[:, 0]))


def test_occupancy_grid_skips_empty_space_and_keeps_the_image():
    """A cube of density aligned with the grid's cells: every cell is fully inside or outside, so
    skipping the empty cells must not change a single pixel (beyond float rounding)."""
    field = AnalyticField(cube(20.0, 0.25), albedo=(0.2, 0.6, 0.3))
    cfg = SamplerConfig(num_samples=256)
    grid = OccupancyGrid(1.0, OccupancyGridConfig(resolution=32, warmup_steps=100))
    g = torch.Generator().manual_seed(0)
    step = cfg.step(1.0)
    grid.update(0, lambda x: field.density(x) * step, g)
    assert grid.occupied_fraction() == pytest.approx((0.5 / 2.0) ** 3)  # the 8^3 inner cells of 32^3
    cams = [Camera(20.0, a, 2.0, 50.0, 24, 24) for a in (0.0, 120.0)]
    dense = VolumeRenderer(field, cfg=VolumeRendererConfig(sampler=cfg, grid=None))
    skip = VolumeRenderer(field, cfg=VolumeRendererConfig(sampler=cfg, grid=OccupancyGridConfig(resolution=32)))
    skip.grid.load_state_dict(grid.state_dict())
    with torch.no_grad():
        a = dense(Cameras.stack(cams), stratified=False)
        b = skip(Cameras.stack(cams), stratified=False)
    assert a.opacity.max() > 0.9
    for k in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-5, rtol=0)
    o, d = Camera(20.0, 0.0, 2.0, 50.0, 24, 24).rays()
    n_dense = len(sample_rays(o.reshape(-1, 3), d.reshape(-1, 3), 1.0, cfg))
    n_skip = len(grid.sample(o.reshape(-1, 3), d.reshape(-1, 3), cfg))
    assert 0 < n_skip < 0.2 * n_dense


def test_occupancy_update_is_reproducible_and_stratified_needs_generator():
    field = AnalyticField(ball(40.0, 0.35))
    grids = [OccupancyGrid(1.0, OccupancyGridConfig(resolution=16, warmup_steps=0)) for _ in range(2)]
    for grid in grids:
        g = torch.Generator().manual_seed(3)
        for it in (0, 16, 32):
            assert grid.update_every_n_steps(it, field.density, g)
        assert not grid.update_every_n_steps(5, field.density, g)
    assert torch.equal(grids[0].binaries, grids[1].binaries) and torch.equal(grids[0].occs, grids[1].occs)
    o, d = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    with pytest.raises(UserError):
        sample_rays(o, d, 1.0, stratified=True)
    s1 = sample_rays(o, d, 1.0, generator=torch.Generator().manual_seed(1), stratified=True)
    s2 = sample_rays(o, d, 1.0, generator=torch.Generator().manual_seed(1), stratified=True)
    assert torch.equal(s1.t_starts, s2.t_starts) and s1.t_starts[0] >= 2.0
    assert (s1.t_ends - s1.t_starts).sub(SamplerConfig().step(1.0)).abs().max() < 1e-6


def test_gradients_reach_field_and_background_parameters():
    torch.manual_seed(0)
    field = NeRFGeometry(TINY)
    bg = MLPBackground(MLPBackgroundConfig(hidden_dim=8))
    renderer = VolumeRenderer(field, background=bg, cfg=VolumeRendererConfig(sampler=SamplerConfig(num_samples=64)))
    renderer.train()
    g = torch.Generator().manual_seed(0)
    renderer.update(0, g)
    out = renderer(Cameras.stack(Camera(10.0, 40.0, 1.8, 50.0, 12, 12)), generator=g, normals=True)
    assert out.rgb.shape == (1, 12, 12, 3) and out.normal.shape == (1, 12, 12, 3)
    (out.rgb.mean() + out.normal.abs().mean()).backward()
    for name, p in [
        ("hash table", field.encoding.params),
        ("density mlp", field.density_net[0].weight),
        ("albedo mlp", field.albedo_net[0].weight),
        ("background", bg.net[0].weight),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    analytic = AnalyticField(ball(5.0, 0.5))
    out = VolumeRenderer(analytic, cfg=VolumeRendererConfig(grid=None))(
        Cameras.stack(Camera(0.0, 0.0, 2.0, 50.0, 8, 8))
    )
    out.opacity.sum().backward()
    assert analytic.gain.grad > 0


def test_field_blob_normals_and_density_grid():
    field = NeRFGeometry(TINY)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, -0.3], [0.9, 0.9, 0.9]])
    s = field.density(x).detach()
    assert s[0] > s[1] > s[3] and s.min() >= 0  # the blob: dense centre, fading outwards
    for method in ("analytic", "finite_difference"):
        n = field.normals(x[1:3], method=method).detach()
        torch.testing.assert_close(n.norm(dim=-1), torch.ones(2))
        assert n[0, 0] > 0.9 and n[1, 2] < -0.9  # outward (the blob dominates the tiny random net)
    out = field(x, normals="analytic")
    assert set(out) == {"sigma", "albedo", "normal"} and ((out["albedo"] >= 0) & (out["albedo"] <= 1)).all()
    grid = field.density_grid(9)
    assert grid.shape == (9, 9, 9) and grid[4, 4, 4] == grid.max()
    torch.testing.assert_close(grid[8, 4, 4], field.density(torch.tensor([[1.0, 0.0, 0.0]]))[0].detach())
    with pytest.raises(UserError):
        NeRFConfig(density_activation="relu")
    f2 = NeRFGeometry(NeRFConfig(encoding=TINY.encoding, density_activation="trunc_exp"))
    assert f2.density(x[:1]).item() > 1e3  # exp(10 + raw)


def test_blob_cap_flattens_the_centre_and_keeps_the_outside():
    x = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.45, 0.0, 0.0], [0.9, 0.0, 0.0]])
    plain, capped = NeRFGeometry(TINY).blob(x), NeRFGeometry(replace(TINY, blob_cap=2.0)).blob(x)
    torch.testing.assert_close(capped[:2], torch.full((2,), 2.0))  # plateau at the cap
    torch.testing.assert_close(capped[2:], plain[2:])  # near the rim and outside: unchanged
    assert abs(float(plain[0]) - TINY.blob_density) < 1e-4 and plain[3] < -5


def test_backgrounds():
    d = torch.randn(10, 3)
    solid = SolidBackground(SolidBackgroundConfig(color=(0.2, 0.4, 0.6)))
    torch.testing.assert_close(solid(d), torch.tensor([[0.2, 0.4, 0.6]]).expand(10, 3))
    bg = RandomColorBackground(RandomBackgroundConfig()).train()
    idx = torch.tensor([0] * 5 + [1] * 5)
    a = bg(d, idx, torch.Generator().manual_seed(0))
    b = bg(d, idx, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(a[0], a[4]) and not torch.equal(a[0], a[5])
    with pytest.raises(UserError):
        bg(d, idx)
    assert torch.equal(bg.eval()(d), torch.ones(10, 3))
    mlp = MLPBackground()
    rgb = mlp(d)
    assert rgb.shape == (10, 3) and ((rgb > 0) & (rgb < 1)).all()
    torch.testing.assert_close(mlp(d * 3.0), rgb)  # depends on the direction only


@pytest.mark.skipif(not nerfacc_available(), reason="needs CUDA and nerfacc's CUDA extension")
def test_nerfacc_backend_matches_ours_on_cuda():  # pragma: no cover - CUDA machines only
    field = AnalyticField(ball(40.0, 0.35)).cuda()
    cfg = SamplerConfig(num_samples=256)
    grid = OccupancyGrid(1.0, OccupancyGridConfig(resolution=32, warmup_steps=100), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    for it in range(4):
        grid.update(it, lambda x: field.density(x) * cfg.step(1.0), g)
    o, d = Camera(20.0, 30.0, 2.0, 50.0, 32, 32).rays()
    o, d = o.reshape(-1, 3).cuda(), d.reshape(-1, 3).cuda()
    ours = grid.sample(o, d, cfg, backend="torch")
    theirs = grid.sample(o, d, cfg, backend="nerfacc")
    assert abs(len(ours) - len(theirs)) <= 0.005 * len(ours)
    ops = []
    for s, be in ((ours, "torch"), (theirs, "nerfacc")):
        sig = field.density(s.positions(o, d))
        w, _, _ = packed_weights(s.t_starts, s.t_ends, sig, s.ray_indices, o.shape[0], backend=be)
        ops.append(torch.zeros(o.shape[0], device="cuda").index_add_(0, s.ray_indices, w))
    torch.testing.assert_close(ops[0], ops[1], atol=1e-3, rtol=0)
    assert math.isfinite(float(ops[0].detach().sum()))


def test_early_stop_prunes_hidden_samples_without_changing_the_image():
    field = AnalyticField(cube(200.0, 0.25))
    o, d = Camera(20.0, 30.0, 2.0, 50.0, 16, 16).rays()
    plain = VolumeRenderer(field, cfg=VolumeRendererConfig(grid=None))
    pruned = VolumeRenderer(field, cfg=VolumeRendererConfig(grid=None, sampler=SamplerConfig(early_stop_eps=1e-4)))
    with torch.no_grad():
        a, b = plain.render_rays(o, d), pruned.render_rays(o, d)
    torch.testing.assert_close(a["opacity"], b["opacity"], atol=2e-4, rtol=0)
    n_plain = len(plain.sample(o.reshape(-1, 3), d.reshape(-1, 3)))
    n_pruned = len(pruned.sample(o.reshape(-1, 3), d.reshape(-1, 3)))
    assert n_pruned < 0.95 * n_plain


def test_occupancy_update_with_repeated_cells_does_not_depend_on_threads():
    """After the warm-up an update draws cells at random, some twice; each such cell must take the same
    value whatever the thread count (a plain indexed assignment leaves the winner to the threads)."""
    field = AnalyticField(ball(40.0, 0.6))
    results = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            grid = OccupancyGrid(1.0, OccupancyGridConfig(resolution=48, warmup_steps=0))
            g = torch.Generator().manual_seed(0)
            for step in range(3):
                grid.update(step, lambda x: field.density(x) * 0.1, g)
            results.append(grid.occs.clone())
        finally:
            torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


def test_a_nerf_starts_from_another_nerf_of_its_architecture():
    torch.manual_seed(0)
    coarse = NeRFGeometry(TINY)
    with torch.no_grad():
        coarse.encoding.params.normal_(generator=torch.Generator().manual_seed(1))
    fine = NeRFGeometry.create_from(coarse, replace(TINY, normal_method="analytic", blob_cap=2.0))
    assert fine is not coarse and fine.cfg.blob_cap == 2.0
    assert all(torch.equal(a, b) for a, b in zip(coarse.state_dict().values(), fine.state_dict().values()))
    x = torch.rand(16, 3) * 0.2
    torch.testing.assert_close(fine.forward(x)["albedo"], coarse.forward(x)["albedo"])
    with pytest.raises(UserError, match="same bound, encoding, hidden_dim, hidden_layers"):
        NeRFGeometry.create_from(coarse, replace(TINY, hidden_dim=8))
    with pytest.raises(UserError, match="NeRFGeometry cannot start from AnalyticField"):
        NeRFGeometry.create_from(AnalyticField(ball(1.0, 0.5)), TINY)
