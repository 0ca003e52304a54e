"""DMTet: the Kuhn tet grid, differentiable marching tetrahedra, and the DMTet geometry (coarse to fine, export)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from dream3d.errors import UserError
from dream3d.geometry.dmtet import DMTetConfig, DMTetGeometry
from dream3d.geometry.hashgrid import HashGridConfig
from dream3d.geometry.marching_tets import CASE_COUNTS, marching_tets
from dream3d.geometry.nerf import NeRFConfig, NeRFGeometry
from dream3d.geometry.tetgrid import TET_EDGE_PAIRS, TetGrid, edge_table, make_tet_grid, signed_volumes

TINY_ENCODING = HashGridConfig.from_max_resolution(64, levels=4, log2_table_size=12)
TINY = DMTetConfig(grid_resolution=16, encoding=TINY_ENCODING, hidden_dim=16, init_resolution=48, init_texture_steps=60)


def sphere_sdf(x, radius=0.5, centre=(0.0, 0.0, 0.0)):
    return (x - torch.tensor(centre)).norm(dim=-1) - radius


@pytest.mark.parametrize(("n", "bound"), [(2, 1.0), (16, 0.7)])
def test_tet_grid_counts_positive_volumes_and_box_volume(n, bound):
    grid = make_tet_grid(n, bound)
    assert grid.vertices.shape == ((n + 1) ** 3, 3) and grid.vertices.dtype == torch.float32
    assert grid.tets.shape == (6 * n**3, 4) and grid.tets.dtype == torch.int64
    assert float(grid.vertices.min()) == pytest.approx(-bound) and float(grid.vertices.max()) == pytest.approx(bound)
    vol = signed_volumes(grid.vertices.double(), grid.tets)
    h = 2 * bound / n
    assert (vol > 0).all()
    torch.testing.assert_close(vol, torch.full_like(vol, h**3 / 6))
    assert float(vol.sum()) == pytest.approx((2 * bound) ** 3, rel=1e-6)  # float32 vertices
    # vertex (i, j, k) at -bound + h * (i, j, k), index (i * (n + 1) + j) * (n + 1) + k
    m = n + 1
    torch.testing.assert_close(grid.vertices[(1 * m + 2) * m + 0], torch.tensor([h - bound, 2 * h - bound, -bound]))


def test_counts_of_the_documented_sizes():
    g16, g32 = make_tet_grid(16), make_tet_grid(32)
    assert (g16.vertices.shape[0], g16.tets.shape[0]) == (4913, 24576)
    assert (g32.vertices.shape[0], g32.tets.shape[0]) == (35937, 196608)


@pytest.mark.parametrize("n", [3, 16])
def test_tet_grid_is_conforming(n):
    grid = make_tet_grid(n, 1.0)
    faces = grid.tets[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]].reshape(-1, 3).sort(-1).values
    unique, counts = torch.unique(faces, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}  # every triangle is a face of one (box) or two tets
    boundary = unique[counts == 1]
    assert boundary.shape[0] == 6 * 2 * n * n  # each square of the box cut in two
    on_box = (grid.vertices[boundary].abs() == 1.0).all(1).any(-1)  # the 3 corners share a box plane
    assert on_box.all()


@pytest.mark.parametrize("n", [1, 5])
def test_edge_table_has_each_edge_once_and_matches_the_tets(n):
    grid = make_tet_grid(n, 1.0)
    edges = grid.edges
    assert edges.dtype == torch.int64 and (edges[:, 0] < edges[:, 1]).all()
    assert torch.unique(edges, dim=0).shape == edges.shape
    # Kuhn grid edges: vertex pairs differing by one of the 7 nonzero offsets in {0, 1}^3
    offsets = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)][1:]
    assert edges.shape[0] == sum(math.prod(n + 1 - d for d in o) for o in offsets)
    pairs = grid.tets[:, torch.tensor(TET_EDGE_PAIRS)].sort(-1).values  # (T, 6, 2)
    assert torch.equal(edges[grid.tet_edges], pairs)
    assert torch.equal(torch.unique(grid.tet_edges), torch.arange(edges.shape[0]))


def test_case_table_winds_every_case_towards_increasing_sdf():
    gen = torch.Generator().manual_seed(0)
    assert CASE_COUNTS.tolist() == [0, 1, 1, 2, 1, 2, 2, 1, 1, 2, 2, 1, 2, 1, 1, 0]
    tets = torch.tensor([[0, 1, 2, 3]])
    for _ in range(20):
        pts = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        if signed_volumes(pts, tets) < 0:
            pts = pts[[0, 1, 3, 2]]
        grid = TetGrid(pts, tets, *edge_table(tets, 4), n=1, bound=1.0)
        for code in range(1, 15):
            mag = torch.rand(4, generator=gen, dtype=torch.float64) + 0.05
            sdf = torch.where(torch.tensor([bool(code >> i & 1) for i in range(4)]), -mag, mag)
            surf = marching_tets(grid, pts, sdf)
            assert surf.faces.shape[0] == CASE_COUNTS[code] and surf.verts.shape[0] in (3, 4)
            # gradient of the affine interpolant: solve sdf_i - sdf_0 = g . (p_i - p_0)
            g = torch.linalg.solve(pts[1:] - pts[0], sdf[1:] - sdf[0])
            q = surf.verts[surf.faces]
            normal = torch.linalg.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0])
            assert (normal @ g > 0).all()


def test_marching_tets_on_a_sphere_is_watertight_outward_and_accurate():
    grid = make_tet_grid(32, 1.0)
    r = 0.5
    surf = marching_tets(grid, grid.vertices, sphere_sdf(grid.vertices, r))
    mesh = trimesh.Trimesh(surf.verts.numpy(), surf.faces.numpy(), process=False)
    assert surf.faces.dtype == torch.int64 and mesh.is_watertight
    assert mesh.area == pytest.approx(4 * math.pi * r * r, rel=0.02)
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)  # positive: normals point out
    # every face points away from the centre; the 6 grid vertices with sdf exactly 0, (+-0.5, 0, 0)
    # and permutations, give zero-area faces (several crossings at one point), which have no normal
    proper = mesh.area_faces > 1e-12
    assert (~proper).sum() == 36
    assert ((mesh.face_normals * mesh.triangles_center).sum(-1)[proper] > 0).all()
    assert (surf.verts.norm(dim=-1) - r).abs().max() < 0.01
    # one vertex per crossing edge, on that edge, every vertex used
    assert torch.unique(surf.vertex_edges).shape[0] == surf.verts.shape[0]
    a, b = grid.vertices[grid.edges[surf.vertex_edges]].unbind(1)
    t = ((surf.verts - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1)
    assert ((t >= 0) & (t <= 1)).all()
    torch.testing.assert_close(a + t[:, None] * (b - a), surf.verts, atol=1e-5, rtol=0)
    assert torch.equal(torch.unique(surf.faces), torch.arange(surf.verts.shape[0]))


def test_marching_tets_is_empty_without_a_crossing():
    grid = make_tet_grid(4, 1.0)
    for sdf in (torch.ones(125), -torch.ones(125)):
        surf = marching_tets(grid, grid.vertices, sdf)
        assert surf.verts.shape == (0, 3) and surf.faces.shape == (0, 3)
    with pytest.raises(UserError, match="marching tets needs"):
        marching_tets(grid, grid.vertices, torch.ones(7))


def test_marching_tets_gradients_reach_sdf_and_positions():
    grid = make_tet_grid(8, 1.0)
    pos = grid.vertices.clone().requires_grad_(True)
    sdf = sphere_sdf(grid.vertices, 0.45).requires_grad_(True)
    surf = marching_tets(grid, pos, sdf)
    (surf.verts**2).sum().backward()
    near = torch.zeros(pos.shape[0], dtype=torch.bool)
    near[grid.edges[surf.vertex_edges].reshape(-1)] = True
    assert sdf.grad[near].abs().sum() > 0 and pos.grad[near].abs().sum() > 0
    assert (sdf.grad[~near] == 0).all() and (pos.grad[~near] == 0).all()

    # the interpolation's derivatives, numerically (the topology does not change under eps)
    small = make_tet_grid(2, 1.0)
    p0 = small.vertices.double()
    s0 = sphere_sdf(p0, 0.6).double() + 0.01 * torch.randn(27, generator=torch.Generator().manual_seed(1))
    fn = lambda p, s: marching_tets(small, p, s).verts  # noqa: E731
    assert torch.autograd.gradcheck(fn, (p0.requires_grad_(True), s0.requires_grad_(True)))


def test_dmtet_from_scratch_groups_deformation_and_mesh_gradients():
    geo = DMTetGeometry(TINY)
    assert [g["name"] for g in geo.param_groups()] == ["sdf", "deformation", "encoding", "network"]
    assert "grid_vertices" not in geo.state_dict() and "sdf" in geo.state_dict()
    verts, faces = geo.mesh()
    assert (verts.norm(dim=-1) - 0.5).abs().max() < 0.02  # the init_radius sphere
    loss = (verts * torch.tensor([1.0, 2.0, 3.0])).sum()
    loss.backward()
    assert geo.sdf.grad.abs().sum() > 0 and geo.deformation.grad.abs().sum() > 0
    assert geo.inverted_tets() == 0
    # a vertex moves at most deformation_scale cells per axis
    with torch.no_grad():
        geo.deformation.copy_(
            torch.sign(torch.randn(geo.deformation.shape, generator=torch.Generator().manual_seed(0)))
        )
        geo.deformation.mul_(50.0)
    assert geo.inverted_tets() > 0  # half a cell each way, at random, turns some inside out
    moved = geo.positions() - geo.grid_vertices
    assert moved.abs().max() <= 0.5 * geo.cell_size + 1e-6 and moved.abs().max() > 0.49 * geo.cell_size
    albedo = geo.albedo(torch.rand(10, 3) * 2 - 1)
    assert albedo.shape == (10, 3) and ((albedo >= 0) & (albedo <= 1)).all()

    fixed = DMTetGeometry(replace(TINY, deformation=False))
    assert "deformation" not in [g["name"] for g in fixed.param_groups()]
    assert torch.equal(fixed.positions(), fixed.grid_vertices)
    info = fixed.describe()
    assert info["grid_vertices"] == 17**3 and info["grid_tets"] == 6 * 16**3 and info["deformation"] is False


def test_dmtet_config_errors():
    for bad in ({"grid_resolution": 0}, {"deformation_scale": 0.0}, {"init_threshold": "median"}, {"bound": -1.0}):
        with pytest.raises(UserError):
            DMTetConfig(**bad)


def blob_nerf(colour=(0.2, 0.6, 0.9)):
    """A tiny NeRF whose density is exactly its blob, softplus(10 (1 - |x| / 0.5)), and whose albedo is constant."""
    torch.manual_seed(0)
    nerf = NeRFGeometry(NeRFConfig(encoding=TINY_ENCODING, hidden_dim=16))
    with torch.no_grad():
        nerf.density_net[-1].weight.zero_()
        nerf.density_net[-1].bias.zero_()
        nerf.albedo_net[-1].weight.zero_()
        nerf.albedo_net[-1].bias.copy_(torch.logit(torch.tensor(colour)))
    return nerf


def test_create_from_a_nerf_gives_a_closed_coloured_mesh_at_its_surface():
    colour = torch.tensor([0.2, 0.6, 0.9])
    nerf = blob_nerf(tuple(colour.tolist()))
    geo = DMTetGeometry.create_from(nerf, TINY)
    level = geo.init_info["threshold"]
    _, nerf_info = nerf.export_mesh(48)
    assert level == pytest.approx(nerf_info["threshold"])  # the NeRF's own export level
    # the sign of the SDF is the density's side of the level, at every grid vertex
    sigma = nerf.density(geo.grid_vertices)
    assert torch.equal(geo.sdf < 0, sigma > level)
    # radius where softplus(10 (1 - r / 0.5)) = level
    r_level = 0.5 * (1 - math.log(math.expm1(level)) / 10)
    verts, faces = geo.mesh()
    mesh = trimesh.Trimesh(verts.detach().numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert (verts.norm(dim=-1) - r_level).abs().max() < 0.25 * geo.cell_size
    # the SDF is a distance near the surface (|grad sdf| ~ 1 there), clamped to init_sdf_clamp cells
    assert geo.sdf.abs().max() <= TINY.init_sdf_clamp * geo.cell_size + 1e-6
    slope = torch.stack(torch.gradient(geo.sdf.detach().reshape(17, 17, 17), spacing=geo.cell_size)).norm(dim=0)
    assert 0.8 < float(slope.reshape(-1)[geo.sdf.detach().abs() < geo.cell_size].median()) < 1.2
    assert geo.init_info["texture_mse"] < 1e-3
    torch.testing.assert_close(geo.albedo(verts.detach()), colour.expand(len(verts), 3), atol=0.05, rtol=0)

    exported, info = geo.export_mesh()
    assert isinstance(exported, trimesh.Trimesh) and exported.is_watertight and exported.volume > 0
    rgba = np.asarray(exported.visual.vertex_colors)
    assert rgba.dtype == np.uint8 and rgba.shape == (len(exported.vertices), 4) and (rgba[:, 3] == 255).all()
    np.testing.assert_allclose(rgba[:, :3].mean(0), colour.numpy() * 255, atol=13)
    assert info["components_total"] == info["components_kept"] == 1 and info["threshold"] == 0.0
    assert info["faces"] == len(exported.faces) and info["resolution"] == 16
    assert geo.describe()["init_threshold"] == level

    copy = DMTetGeometry.create_from(geo, TINY)
    assert all(torch.equal(a, b) for a, b in zip(geo.state_dict().values(), copy.state_dict().values()))
    with pytest.raises(UserError, match="same bound, grid_resolution"):
        DMTetGeometry.create_from(geo, replace(TINY, grid_resolution=8))
    with pytest.raises(UserError, match="cannot start from"):
        DMTetGeometry.create_from(torch.nn.Linear(2, 2), TINY)


def test_export_drops_small_components_and_faces_outwards():
    geo = DMTetGeometry(replace(TINY, grid_resolution=24))
    x = geo.grid_vertices
    with torch.no_grad():
        geo.sdf.copy_(torch.minimum(sphere_sdf(x, 0.45), sphere_sdf(x, 0.12, (0.7, 0.7, 0.7))))
    mesh, info = geo.export_mesh(keep_fraction=0.2)
    assert info["components_total"] == 2 and info["components_kept"] == 1
    assert np.abs(mesh.vertices).max() < 0.5 and mesh.volume > 0
    both, info = geo.export_mesh(keep_fraction=0.0)
    assert info["components_kept"] == 2 and both.is_watertight
    with pytest.raises(UserError, match="no surface"):
        geo.export_mesh(threshold=5.0)
