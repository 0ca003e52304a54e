"""Magic3D's fine stage: the mesh renderer, the mesh regularisers, coarse to fine in one run, --from, resume."""

import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import trimesh
from txt2mesh_fast import FAST as BASE_FAST

from dream3d.cameras import Camera, Cameras
from dream3d.errors import UserError
from dream3d.geometry.dmtet import DMTetConfig, DMTetGeometry
from dream3d.geometry.hashgrid import HashGridConfig
from dream3d.guidance.denoised_target import DenoisedTargetGuidance
from dream3d.renderers.backgrounds import SolidBackground, SolidBackgroundConfig
from dream3d.renderers.materials import LambertianConfig, LambertianMaterial
from dream3d.renderers.mesh import MeshRenderer, MeshRendererConfig
from dream3d.systems.dreamfusion import DreamFusion
from dream3d.systems.regularizers import face_pairs, laplacian_loss, normal_consistency_loss
from dream3d.text_to_3d import load_txt2mesh_config, run_txt2mesh

SMALL = HashGridConfig.from_max_resolution(64, levels=4, log2_table_size=12)


def sphere(n=32, radius=0.5):
    torch.manual_seed(0)
    return DMTetGeometry(DMTetConfig(grid_resolution=n, init_radius=radius, encoding=SMALL))


def renderer_for(geometry, supersample=1):
    white = SolidBackground(SolidBackgroundConfig(color=(1.0, 1.0, 1.0)))
    return MeshRenderer(geometry, white, MeshRendererConfig(supersample=supersample))


@pytest.mark.parametrize("supersample", [1, 2])
def test_mesh_renderer_draws_the_sphere_where_it_is(supersample):
    """A DMTet sphere (r 0.5) seen from distance 2: a disc of radius f r / sqrt(d^2 - r^2) pixels, z-depth
    d - r at the centre, the white background around it, normals facing the camera at the centre."""
    cam = Camera(20.0, 30.0, 2.0, 50.0, 32, 32)
    out = renderer_for(sphere(), supersample)(Cameras.stack(cam), normals=True)
    radius_px = cam.focal_px * 0.5 / math.sqrt(2.0**2 - 0.5**2)
    assert out.opacity.sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.04)
    centre = out.depth[0, 15:17, 15:17, 0] / out.opacity[0, 15:17, 15:17, 0]
    assert centre.mean().item() == pytest.approx(1.5, abs=0.03)
    assert torch.allclose(out.rgb[0, 0, 0], torch.ones(3)) and out.opacity[0, 0, 0, 0] == 0
    facing = (out.normal[0, 16, 16] * F_normalize(cam.position)).sum()
    assert facing > 0.95
    assert out.rgb.shape == (1, 32, 32, 3) and out.albedo.shape == (1, 32, 32, 3)


def F_normalize(v):
    return torch.nn.functional.normalize(torch.as_tensor(v, dtype=torch.float32), dim=-1)


def test_gradients_reach_sdf_deformation_and_texture_through_the_render():
    geometry = sphere(16)
    material = LambertianMaterial(LambertianConfig(albedo_warmup_steps=0))
    cams = Cameras.stack([Camera(10.0, a, 2.0, 50.0, 16, 16) for a in (0.0, 120.0)])
    shader = material.training_shader(5, cams, torch.Generator().manual_seed(0))
    out = renderer_for(geometry, 2)(cams, shader=shader)
    (out.rgb.mean() + out.opacity.mean()).backward()
    for name, p in geometry.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mask_loss_moves_the_surface_onto_a_target():
    """Only the anti-aliased opacity: the sphere (r 0.35) grows towards a target disc of r 0.5."""
    target = renderer_for(sphere(16, 0.5))
    geometry = sphere(16, 0.35)
    cams = Cameras.stack([Camera(0.0, a, 2.0, 50.0, 24, 24) for a in (0.0, 90.0, 180.0)])
    with torch.no_grad():
        goal = target(cams).opacity
    render = renderer_for(geometry)
    opt = torch.optim.Adam([geometry.sdf], lr=0.01)
    before = (render(cams).opacity - goal).abs().mean().item()
    for _ in range(60):
        loss = (render(cams).opacity - goal).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = (render(cams).opacity - goal).abs().mean().item()
    assert after < 0.3 * before


def test_mesh_regularisers_on_known_meshes():
    box = trimesh.creation.box()  # 12 triangles: 12 cube edges (cos 0) and 6 face diagonals (cos 1)
    v, f = torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces)
    assert len(face_pairs(f)) == 18
    assert normal_consistency_loss(v, f).item() == pytest.approx(12 / 18, abs=1e-6)
    ball = trimesh.creation.icosphere(4)
    vb, fb = torch.tensor(ball.vertices, dtype=torch.float32), torch.tensor(ball.faces)
    assert normal_consistency_loss(vb, fb).item() < 0.01  # smooth
    # one triangle: each vertex's neighbours are the other two; |mean - v|^2 = 0.5, 1.25, 1.25
    tri = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    one = torch.tensor([[0, 1, 2]])
    loss = laplacian_loss(tri, one)
    assert loss.item() == pytest.approx(1.0)
    assert laplacian_loss(tri + 3.0, one).item() == pytest.approx(1.0)  # translation invariant
    loss.backward()
    assert tri.grad.abs().sum() > 0


FAST = BASE_FAST + ["steps=4", "checkpoint_every=2"]
FINE = [
    "fine.steps=6",
    "fine.checkpoint_every=2",
    "fine.val_every=3",
    "fine.val_size=16",
    "fine.cameras.height=16",
    "fine.cameras.width=16",
    "fine.cameras.batch=1",
    "fine.geometry.grid_resolution=12",
    "fine.geometry.init_resolution=24",
    "fine.geometry.init_texture_steps=5",
    "fine.guidance.kind=target",
    "fine.guidance.denoise_steps=2",
    "fine.regularizers.normal_consistency=0.1",
    "fine.regularizers.laplacian=0.1",
    "export.texture_size=128",
]


def cfg_for(model, *extra):
    return load_txt2mesh_config("a red cube", model=str(model), overrides=FAST + list(extra))


def test_coarse_to_fine_run_writes_both_stages(tiny_model, tmp_path):
    out = tmp_path / "run"
    metrics = run_txt2mesh(cfg_for(tiny_model, *FINE), out, progress=False)
    assert metrics["stages"]["coarse"]["steps"] == 4 and metrics["stages"]["fine"]["steps"] == 6
    assert metrics["steps"] == 10 and metrics["grid_resolution"] == 12
    for name in ("checkpoints/coarse.pt", "checkpoints/fine.pt", "coarse/mesh.ply", "mesh.glb", "mesh.ply"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "val-fine").iterdir()) == ["step-00003.png", "step-00006.png"]
    assert not (out / "coarse" / "turntable.mp4").exists() and (out / "turntable.mp4").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["stages"]["coarse"]["export"]["faces"] > 0


@pytest.mark.slow
def test_fine_stage_interrupted_and_resumed_is_the_uninterrupted_run(tiny_model, tmp_path, monkeypatch):
    cfg = cfg_for(tiny_model, *FINE)
    run_txt2mesh(cfg, tmp_path / "a", progress=False)
    real = DenoisedTargetGuidance.forward
    calls = {"n": 0}

    def interrupt_in_fine_step_3(self, images, cameras, step, generator):
        calls["n"] += 1
        if calls["n"] == 4 + 4:  # 4 coarse steps, then fine steps 0..3
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, images, cameras, step, generator)

    monkeypatch.setattr(DenoisedTargetGuidance, "forward", interrupt_in_fine_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_txt2mesh(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(DenoisedTargetGuidance, "forward", real)
    assert torch.load(tmp_path / "b" / "checkpoints" / "fine.pt", weights_only=False)["step"] == 4
    run_txt2mesh(cfg, tmp_path / "b", resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "checkpoints" / "fine.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "fine.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for k in a["task"]:
        assert torch.equal(a["task"][k], b["task"][k]), k
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()


@pytest.mark.slow
def test_from_starts_the_fine_stage_from_an_earlier_coarse_run(tiny_model, tmp_path):
    run_txt2mesh(cfg_for(tiny_model), tmp_path / "coarse", progress=False)  # a coarse-only run
    both = cfg_for(tiny_model, *FINE)
    metrics = run_txt2mesh(both, tmp_path / "fine", progress=False, start_from=tmp_path / "coarse")
    assert list(metrics["stages"]) == ["fine"] and metrics["started_from"] == str(tmp_path / "coarse")
    assert not (tmp_path / "fine" / "checkpoints" / "coarse.pt").exists()
    run_txt2mesh(both, tmp_path / "together", progress=False)  # same coarse stage, same fine result
    a = torch.load(tmp_path / "fine" / "checkpoints" / "fine.pt", weights_only=False)["task"]
    b = torch.load(tmp_path / "together" / "checkpoints" / "fine.pt", weights_only=False)["task"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="has none"):
        run_txt2mesh(cfg_for(tiny_model), tmp_path / "x", progress=False, start_from=tmp_path / "coarse")
    with pytest.raises(UserError, match="holds no txt2mesh run"):
        run_txt2mesh(both, tmp_path / "y", progress=False, start_from=tmp_path / "nothing")


def test_mesh_regularisers_need_a_mesh_renderer(tiny_model, tiny_core):
    cfg = cfg_for(tiny_model, "regularizers.normal_consistency=1")
    with pytest.raises(UserError, match="renderer.kind=mesh"):
        DreamFusion(cfg, cfg.prompt, tiny_core, torch.device("cpu"))


def test_magic3d_configs_load_with_their_fine_stage():
    cfg = load_txt2mesh_config("a red cube", config="configs/shapes-magic3d.yaml")
    assert cfg.fine.geometry.kind == "dmtet" and cfg.fine.renderer.kind == "mesh"
    assert cfg.guidance.kind == cfg.fine.guidance.kind == "target"
    assert np.isclose(cfg.fine.regularizers.normal_consistency, 0.1)
    gpu = load_txt2mesh_config("a hamburger", config="configs/magic3d-sd.yaml")  # threestudio's refine recipe
    assert gpu.fine.geometry.grid_resolution == 64 and gpu.fine.cameras.height == 512
    assert gpu.fine.guidance.guidance_scale == 100 and gpu.fine.regularizers.normal_consistency == 1e4
