"""The CUDA code paths agree with the CPU ones where both run (skipped where CUDA is absent).

Randomness comes from CPU generators and module weights are drawn on the CPU, so the same seed
gives the same field on either device; what remains is float rounding (and TF32 convolutions in the
UNet on CUDA), hence tolerances rather than equality after the first step.
"""

import pytest
import torch

from dream3d.cameras import Camera
from dream3d.diffusion.build import build_components
from dream3d.geometry.hashgrid import HashGridConfig, HashGridEncoding, TcnnEncoding, tcnn_available
from dream3d.geometry.nerf import NeRFConfig, NeRFGeometry
from dream3d.prior.train import PriorTrainConfig, model_spec, unet_stage
from dream3d.renderers.volume import VolumeRenderer, VolumeRendererConfig
from dream3d.text_to_3d import load_txt2mesh_config, run_txt2mesh
from dream3d.trainer import StagedRun

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("cfg", [HashGridConfig.cpu_default(), HashGridConfig()], ids=["cpu-default", "ngp"])
def test_hash_encoding_on_cuda_matches_cpu(cfg):
    torch.manual_seed(0)
    cpu = HashGridEncoding(cfg)
    torch.manual_seed(0)
    gpu = HashGridEncoding(cfg, device="cuda")
    assert torch.equal(cpu.params.detach(), gpu.params.detach().cpu())  # the same table from the same seed
    with torch.no_grad():  # a table with structure, not the tiny init, so interpolation errors would show
        cpu.params.normal_(generator=torch.Generator().manual_seed(1))
        gpu.params.copy_(cpu.params)
    x = torch.rand(8192, 3, generator=torch.Generator().manual_seed(2))
    a, b = cpu(x), gpu(x.cuda())
    torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=1e-5)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    a.backward(g)
    b.backward(g.cuda())
    torch.testing.assert_close(gpu.params.grad.cpu(), cpu.params.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann (not on PyPI; see the README)")
@pytest.mark.parametrize("cfg", [HashGridConfig.cpu_default(), HashGridConfig()], ids=["cpu-default", "ngp"])
def test_tinycudann_matches_ours(cfg):  # pragma: no cover - machines with tinycudann only
    """Same parameterisation: tinycudann's HashGrid given our table (in its layout) gives our values
    and our table gradient."""
    ours = HashGridEncoding(cfg, device="cuda")
    theirs = TcnnEncoding(cfg, "cuda")
    assert theirs.params.numel() == ours.params.numel()
    with torch.no_grad():
        ours.params.copy_(torch.randn(ours.params.shape, generator=torch.Generator().manual_seed(1)))
        theirs.params.copy_(ours.tcnn_params().to(theirs.params.dtype))
    x = torch.rand(8192, 3, generator=torch.Generator().manual_seed(2)).cuda()
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(3)).cuda()
    a.backward(g)
    b.backward(g)
    F, rows = ours.params.shape
    torch.testing.assert_close(theirs.params.grad.float().reshape(rows, F).t(), ours.params.grad, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_field_render_on_cuda_matches_cpu(backend):
    """Our renderer on the CPU vs on CUDA (``auto`` = nerfacc's packed kernels when they load):
    the same images and the same parameter gradients."""
    cfg = NeRFConfig(encoding=HashGridConfig.cpu_default(), hidden_dim=32, normal_method="finite_difference")
    torch.manual_seed(0)
    f_cpu = NeRFGeometry(cfg)
    torch.manual_seed(0)
    f_gpu = NeRFGeometry(cfg, device="cuda")
    r_cpu = VolumeRenderer(f_cpu, cfg=VolumeRendererConfig(grid=None, backend="torch"))
    r_gpu = VolumeRenderer(f_gpu, cfg=VolumeRendererConfig(grid=None, backend=backend))
    o, d = Camera(20.0, 30.0, 2.5, 45.0, 24, 24).rays()
    a = r_cpu.render_rays(o, d, normals=True)
    b = r_gpu.render_rays(o.cuda(), d.cuda(), normals=True)
    assert float(a["opacity"].detach().max()) > 0.5  # the density blob is in view
    for key in ("rgb", "opacity", "depth", "normal"):
        torch.testing.assert_close(b[key].cpu(), a[key], atol=1e-4, rtol=1e-4, msg=key)
    (a["rgb"].square().sum() + a["opacity"].sum()).backward()
    (b["rgb"].square().sum() + b["opacity"].sum()).backward()
    for (name, p), q in zip(f_cpu.named_parameters(), f_gpu.parameters()):
        scale = float(p.grad.abs().max()) + 1e-12
        assert float((q.grad.cpu() - p.grad).abs().max()) <= 1e-3 * scale, name


@pytest.mark.slow
def test_txt2mesh_on_cuda_follows_the_cpu_run(tiny_model, tmp_path):
    """Same config and seed on both devices (fp32): the first step's loss agrees, the run finishes on
    CUDA and exports a mesh."""
    fast = [
        "cameras.height=16",
        "cameras.width=16",
        "cameras.batch=1",
        "renderer.sampler.num_samples=24",
        "renderer.grid.resolution=16",
        "renderer.grid.warmup_steps=2",
        "renderer.grid.update_every=2",
        "export.resolution=24",
        "export.turntable_source=field",
        "export.turntable_formats=[gif]",
        "export.turntable_frames=2",
        "export.turntable_size=16",
        "val_every=0",
        "val_size=16",
        "steps=4",
        "checkpoint_every=0",
        "dtype=fp32",
        "geometry.encoding.levels=8",
        "geometry.encoding.log2_table_size=15",
    ]
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=fast + [f"device={device}"])
        runs[device] = run_txt2mesh(cfg, tmp_path / device, progress=False)
    assert runs["cuda"]["device"].startswith("cuda") and runs["cuda"]["steps"] == 4
    first = {}
    for device in runs:
        ckpt = torch.load(tmp_path / device / "checkpoints" / "coarse.pt", map_location="cpu", weights_only=False)
        first[device] = ckpt["history"][0]["loss"]
    assert first["cuda"] == pytest.approx(first["cpu"], rel=2e-2)
    assert (tmp_path / "cuda" / "mesh.glb").is_file() and (tmp_path / "cuda" / "turntable.gif").is_file()


def test_prior_unet_stage_trains_on_cuda_like_on_the_cpu(tmp_path):
    """``dream3d prior train`` on a GPU: the same seeded draws (CPU generator) give the same first losses."""
    cfg = PriorTrainConfig(
        vae_channels=(8, 16),
        unet_channels=(16, 32),
        unet_cross_attention_blocks=(False, True),
        unet_heads=2,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        unet_steps=30,
        batch=4,
        warmup_steps=1,
        lr=3e-3,
        checkpoint_every=100,
    )
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    captions = ["a red cube, side view", "a blue sphere, front view"] * 4
    records = {}
    for device in ("cpu", "cuda"):
        parts = build_components(model_spec(cfg), seed=0)
        stage = unet_stage(lambda: parts, lambda: images, lambda: captions, cfg, device)
        records[device] = StagedRun([stage], tmp_path / device, progress=False).run()["unet"]
        assert next(parts["unet"].parameters()).device.type == "cpu"  # handed back on the CPU, ready to save
    assert records["cuda"]["final_loss"] < records["cuda"]["first_loss"]
    assert abs(records["cuda"]["first_loss"] - records["cpu"]["first_loss"]) < 3e-2 * records["cpu"]["first_loss"]
