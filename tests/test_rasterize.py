"""Triangle rasterisation: coverage and depth against analytic silhouettes, perspective-correct
interpolation, occlusion, near-plane culling, silhouette gradients, and nvdiffrast vs ours."""

import math

import pytest
import torch
import trimesh

from dream3d.cameras import Camera, Cameras
from dream3d.errors import UserError
from dream3d.renderers.rasterize import (
    RasterizerConfig,
    antialias,
    edge_topology,
    interpolate,
    project_screen,
    rasterize,
    rasterize_mesh,
)

TORCH = RasterizerConfig(backend="torch")


def front_camera(size=64, fov=50.0, distance=2.0):
    """At (distance, 0, 0) looking at the origin: image right is world +Y, image up is world +Z."""
    return Camera(0.0, 0.0, distance, fov, size, size)


def square(half=0.3):
    """A square in the plane x = 0 facing +X (two counter-clockwise triangles sharing a diagonal)."""
    verts = torch.tensor([[0.0, -half, -half], [0.0, half, -half], [0.0, half, half], [0.0, -half, half]])
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]])


def sphere(radius=0.5, subdivisions=4, dtype=torch.float32):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces, dtype=torch.long)


def pixel_grid(size):
    c = torch.arange(size, dtype=torch.float64) + 0.5
    return torch.meshgrid(c, c, indexing="ij")  # (v, u): row, column centres


def test_square_covers_the_expected_pixels_at_its_depth():
    cam = front_camera()
    verts, faces = square(0.3)
    out = rasterize_mesh(verts, faces, Cameras.stack(cam), cfg=TORCH)
    half_px = cam.focal_px * 0.3 / 2.0  # 10.29 px: no pixel centre on the outline
    v, u = pixel_grid(64)
    expected = ((u - 32).abs() < half_px) & ((v - 32).abs() < half_px)
    mask = out["mask"][0, ..., 0] > 0
    assert torch.equal(mask, expected)  # the diagonal runs through pixel centres: no crack
    assert set(out["face_id"][0][mask].unique().tolist()) == {0, 1}
    assert (out["face_id"][0][~mask] == -1).all()
    assert torch.allclose(out["depth"][0, ..., 0][mask], torch.tensor(2.0), atol=1e-5)  # z-depth
    assert (out["depth"][0, ..., 0][~mask] == 0).all()
    full = out["opacity"][0, ..., 0] == 1
    assert torch.allclose(out["normal"][0][full], torch.tensor([1.0, 0.0, 0.0]))
    # Anti-aliased coverage measures the square's area; the hard mask is off by the outline.
    area = (2 * half_px) ** 2
    assert abs(float(out["opacity"].sum()) - area) < 1.0
    assert abs(float(mask.sum()) - area) > 10


def test_sphere_gives_a_disc_of_the_expected_radius_and_depth():
    cam = front_camera(size=128)
    d, r = 2.0, 0.5
    verts, faces = sphere(r)
    out = rasterize_mesh(verts, faces, Cameras.stack(cam), cfg=RasterizerConfig(backend="torch", normals="vertex"))
    radius = cam.focal_px * r / math.sqrt(d * d - r * r)  # the cone of rays tangent to the sphere
    mask = out["mask"][0, ..., 0] > 0
    assert abs(math.sqrt(float(mask.sum()) / math.pi) - radius) < 0.3
    assert abs(float(out["opacity"].sum()) - math.pi * radius**2) < 0.005 * math.pi * radius**2
    v, u = pixel_grid(128)
    dist = ((u - 64) ** 2 + (v - 64) ** 2).sqrt()
    assert mask[dist < radius - 1.0].all() and not mask[dist > radius + 1.0].any()
    # The outline blends; interior edges between faces do not.
    assert (out["opacity"][0, ..., 0][dist < radius - 2.0] == 1).all()
    centre = out["depth"][0, 63:65, 63:65, 0]
    assert torch.allclose(centre, torch.tensor(d - r), atol=2e-3)
    assert torch.allclose(out["normal"][0, 63:65, 63:65], torch.tensor([1.0, 0.0, 0.0]), atol=2e-2)


def test_constant_colour_interpolates_to_itself_and_barycentrics_sum_to_one():
    verts, faces = sphere(0.5, subdivisions=3)
    cams = Cameras.stack([Camera(20.0, 30.0, 1.8, 45.0, 48, 48), Camera(-5.0, 150.0, 2.0, 60.0, 48, 48)])
    colour = torch.tensor([0.2, 0.5, 0.7])
    hard = rasterize_mesh(
        verts,
        faces,
        cams,
        {"rgb": colour.expand(len(verts), 3)},
        cfg=RasterizerConfig(backend="torch", antialias=False),
    )
    assert torch.allclose(hard["rgb"], colour * hard["mask"], atol=1e-6)
    out = rasterize_mesh(verts, faces, cams, {"rgb": colour.expand(len(verts), 3)}, cfg=TORCH)
    full = out["opacity"][..., 0] == 1
    assert full.sum() > 500 and torch.allclose(out["rgb"][full], colour, atol=1e-6)
    raster = out["raster"]
    mask = raster.mask[..., 0] > 0
    assert torch.allclose(raster.bary.sum(-1)[mask], torch.tensor(1.0), atol=1e-5)
    assert (raster.bary[mask] > -1e-5).all() and (raster.bary[~mask] == 0).all()


def test_interpolated_positions_lie_on_the_pixel_rays_at_the_raster_depth():
    """Perspective-correct barycentrics: a tilted quad's interpolated world points project back to
    the pixel centres, at the rasterised z-depth."""
    angle = math.radians(55.0)
    rot = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    verts, faces = square(0.5)
    verts = verts @ rot.T + torch.tensor([0.1, 0.05, -0.1])
    cam = Camera(15.0, 10.0, 1.6, 60.0, 40, 40)
    raster = rasterize(verts, faces, Cameras.stack(cam), TORCH)
    points = interpolate(verts, raster)[0]
    mask = raster.mask[0, ..., 0] > 0
    assert mask.sum() > 100
    uv, z = cam.project(points[mask].double())
    v, u = pixel_grid(40)
    assert torch.allclose(uv[:, 0].double(), u[mask], atol=2e-3)
    assert torch.allclose(uv[:, 1].double(), v[mask], atol=2e-3)
    assert torch.allclose(z, raster.depth[0, ..., 0][mask], rtol=1e-5)
    assert float(raster.depth[0][mask].max() - raster.depth[0][mask].min()) > 0.2  # depth varies


def test_nearer_triangle_wins_and_ties_go_to_the_smaller_face_id():
    cams = Cameras.stack(front_camera())
    far_tri = [[0.0, -0.5, -0.4], [0.0, 0.3, -0.4], [0.0, -0.1, 0.4]]
    near_tri = [[0.5, -0.2, -0.3], [0.5, 0.4, -0.3], [0.5, 0.1, 0.3]]
    verts = torch.tensor(far_tri + near_tri)
    for faces, near_id in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 1), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 0)):
        raster = rasterize(verts, faces, cams, TORCH)
        near_only = rasterize(verts, faces[near_id : near_id + 1], cams, TORCH).mask[0, ..., 0] > 0
        far_only = rasterize(verts, faces[1 - near_id : 2 - near_id], cams, TORCH).mask[0, ..., 0] > 0
        overlap = near_only & far_only
        assert overlap.sum() > 50
        assert (raster.face_id[0][near_only] == near_id).all()
        assert (raster.face_id[0][far_only & ~near_only] == 1 - near_id).all()
        assert torch.allclose(raster.depth[0, ..., 0][overlap], torch.tensor(1.5), atol=1e-5)
        # The nearer triangle's outline over the farther one is a silhouette: it blends.
        aa = antialias(raster.depth, raster)
        assert (aa[0, ..., 0][overlap] != raster.depth[0, ..., 0][overlap]).any()
    # Equal depths (the same face twice): the smaller id, wherever that face is visible.
    twice = rasterize(verts, torch.tensor([[3, 4, 5], [0, 1, 2], [0, 1, 2]]), cams, TORCH)
    assert set(twice.face_id.unique().tolist()) == {-1, 0, 1}


def test_faces_behind_the_near_plane_are_culled():
    cams = Cameras.stack(front_camera())
    verts, faces = square(0.3)
    behind = torch.tensor([[2.5, 0.0, 0.0], [1.0, 0.2, 0.0], [1.0, 0.0, 0.2]])  # one vertex behind
    raster = rasterize(torch.cat([verts, behind]), torch.cat([faces, torch.tensor([[4, 5, 6]])]), cams, TORCH)
    alone = rasterize(verts, faces, cams, TORCH)
    assert torch.equal(raster.face_id, alone.face_id)
    close = rasterize(verts, faces, cams, RasterizerConfig(backend="torch", near=2.5))  # the square at 2.0
    assert (close.face_id == -1).all()


def test_batches_and_chunks_give_the_single_camera_images():
    verts, faces = sphere(0.5, subdivisions=3)
    cams = [Camera(10.0, 20.0, 2.0, 50.0, 40, 40), Camera(40.0, -100.0, 1.7, 45.0, 40, 40)]
    per_camera = torch.stack([verts, verts * torch.tensor([1.0, 0.6, 1.3])])  # (B, V, 3)
    batch = rasterize(per_camera, faces, Cameras.stack(cams), TORCH)
    chunked = rasterize(per_camera, faces, Cameras.stack(cams), RasterizerConfig(backend="torch", max_pairs=50))
    assert torch.equal(batch.face_id, chunked.face_id) and torch.equal(batch.depth, chunked.depth)
    colours = torch.rand(2, len(verts), 3, generator=torch.Generator().manual_seed(0))
    batch_rgb = antialias(interpolate(colours, batch), batch)
    for b, cam in enumerate(cams):
        one = rasterize(per_camera[b], faces, Cameras.stack(cam), TORCH)
        assert torch.equal(one.face_id[0], batch.face_id[b])
        assert torch.allclose(one.depth[0], batch.depth[b]) and torch.allclose(one.bary[0], batch.bary[b])
        assert torch.allclose(antialias(interpolate(colours[b], one), one)[0], batch_rgb[b], atol=1e-6)


def test_gradients_match_finite_differences_through_silhouettes_depth_and_colour():
    """The anti-aliased mask, depth and interpolated colours are differentiable functions of the
    vertex positions (float64, central differences; no pixel centre crosses an edge)."""
    cams = Cameras.stack(front_camera(size=24), dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    base = torch.tensor([[0.1, -0.41, -0.33], [-0.05, 0.37, -0.29], [0.02, -0.03, 0.38], [0.3, 0.45, 0.2]]).double()
    colours = torch.rand(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = torch.rand(1, 24, 24, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(v):
        raster = rasterize(v, faces, cams, TORCH)
        image = torch.cat([raster.mask, raster.depth, interpolate(colours, raster)], -1)
        return (antialias(image, raster) * weights).sum()

    v = base.clone().requires_grad_(True)
    loss(v).backward()
    numeric = torch.zeros_like(base)
    eps = 1e-6
    for idx in range(base.numel()):
        step = torch.zeros(base.numel(), dtype=torch.float64)
        step[idx] = eps
        step = step.reshape(base.shape)
        numeric.view(-1)[idx] = (loss(base + step) - loss(base - step)) / (2 * eps)
    assert v.grad.abs().max() > 1.0
    assert torch.allclose(v.grad, numeric, rtol=1e-4, atol=1e-5)
    # A hard mask alone has no gradient: it comes from the anti-aliasing.
    w = base.clone().requires_grad_(True)
    raster = rasterize(w, faces, cams, TORCH)
    assert raster.mask.grad_fn is None
    (antialias(raster.mask, raster) * weights[..., :1]).sum().backward()
    assert w.grad.abs().max() > 1.0


def test_a_mask_loss_moves_a_triangle_onto_its_target():
    cams = Cameras.stack(front_camera())
    faces = torch.tensor([[0, 1, 2]])
    start = torch.tensor([[0.0, -0.4, -0.3], [0.0, 0.4, -0.3], [0.0, 0.0, 0.4]])
    target = rasterize(start + torch.tensor([0.0, 0.22, 0.12]), faces, cams, TORCH).mask

    def iou(v):
        mask = rasterize(v, faces, cams, TORCH).mask
        return float((mask * target).sum() / ((mask + target) > 0).sum())

    v = start.clone().requires_grad_(True)
    assert iou(v.detach()) < 0.6
    opt = torch.optim.Adam([v], lr=0.01)
    for _ in range(200):
        out = rasterize_mesh(v, faces, cams, cfg=TORCH)
        loss = (out["opacity"] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert iou(v.detach()) > 0.9


def test_edge_topology_and_screen_projection():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    topo = edge_topology(faces)
    # Edge 1 of face 0 (1 -> 2) is edge 0 of face 1 (2 -> 1): each sees the other's far vertex.
    assert topo.tolist() == [[-1, 3, -1], [0, -1, -1]]
    cam = Camera(25.0, -40.0, 1.9, 55.0, 30, 50)
    points = torch.rand(10, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    uv, z = cam.project(points)
    screen = project_screen(points, Cameras.stack(cam))[0]
    assert torch.allclose(screen[:, :2], uv, atol=1e-4) and torch.allclose(screen[:, 2], z, atol=1e-6)


def test_bad_inputs_are_user_errors():
    cams = Cameras.stack(front_camera())
    verts, faces = square()
    with pytest.raises(UserError):
        RasterizerConfig(backend="opengl")
    with pytest.raises(UserError):
        rasterize(verts, faces + 10, cams, TORCH)
    with pytest.raises(UserError):
        rasterize(verts[None].expand(3, -1, -1), faces, cams, TORCH)  # 3 meshes, 1 camera
    if not torch.cuda.is_available():
        with pytest.raises(UserError):
            rasterize(verts, faces, cams, RasterizerConfig(backend="nvdiffrast"))
    auto = rasterize(verts, faces, cams)  # CPU tensors: the PyTorch backend
    assert auto.backend == "torch"


def test_nvdiffrast_and_ours_give_the_same_images():
    pytest.importorskip("nvdiffrast.torch")
    if not torch.cuda.is_available():
        pytest.skip("nvdiffrast needs CUDA")
    verts, faces = sphere(0.5, subdivisions=3)
    tri = torch.tensor([[0.7, -0.3, -0.2], [0.7, 0.35, -0.25], [0.6, 0.05, 0.35]])  # in front of the sphere
    verts = torch.cat([verts, tri]).cuda()
    faces = torch.cat([faces, torch.tensor([[0, 1, 2]]) + len(verts) - 3]).cuda()
    cams = Cameras.stack([Camera(10.0, 5.0, 2.0, 50.0, 64, 80), Camera(30.0, 120.0, 1.8, 45.0, 64, 80)]).to("cuda")
    colours = torch.rand(len(verts), 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    outs, grads = {}, {}
    for backend in ("torch", "nvdiffrast"):
        v = verts.clone().requires_grad_(True)
        out = rasterize_mesh(v, faces, cams, {"rgb": colours}, cfg=RasterizerConfig(backend=backend))
        assert out["raster"].backend == backend
        (out["opacity"].sum() + out["rgb"].sum()).backward()
        outs[backend], grads[backend] = out, v.grad
    ours, theirs = outs["torch"], outs["nvdiffrast"]
    same = ours["face_id"] == theirs["face_id"]
    assert same.float().mean() > 0.995
    assert torch.allclose(ours["depth"][same], theirs["depth"][same], atol=1e-4)
    assert torch.allclose(ours["raster"].bary[same], theirs["raster"].bary[same], atol=1e-3)
    assert (ours["opacity"] - theirs["opacity"]).abs().mean() < 2e-3
    assert (ours["rgb"] - theirs["rgb"]).abs().mean() < 2e-3
    cosine = torch.nn.functional.cosine_similarity(grads["torch"].flatten(), grads["nvdiffrast"].flatten(), dim=0)
    assert cosine > 0.9
