"""Image to 3D on a tiny random view prior: the camera encoding through the guidance, the guidance's
gradient, the reference losses, mask extraction, the CLI's errors, outputs and resume."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt
from txt2mesh_fast import FAST as TXT2MESH_FAST

import dream3d
from dream3d.cameras import Camera, Cameras
from dream3d.cli import main
from dream3d.config import _set_dotted, parse_override
from dream3d.diffusion.framing import on_background
from dream3d.diffusion.zero123 import ViewDiffusion, build_view_model, save_view_model
from dream3d.errors import UserError
from dream3d.geometry import isosurface
from dream3d.geometry.isosurface import extract_mesh
from dream3d.guidance.zero123 import Zero123Config, Zero123Guidance
from dream3d.image_to_3d import (
    load_img2mesh_config,
    load_input_image,
    prepare_image,
    prepare_reference,
    run_img2mesh,
)
from dream3d.shapes import ShapeObject, render, to_uint8
from dream3d.shapes.photo import object_rgba, photo_like
from dream3d.shapes.scoring import mesh_occupancy
from dream3d.systems.image_to_3d import ImageTo3D
from dream3d.systems.reference import depth_loss, mask_loss
from dream3d.trainer import Trainer

FAST = [o for o in TXT2MESH_FAST if not o.startswith("guidance.")] + ["reference.size=16"]  # the guidance is zero123
CAMERA = Camera(10.0, 35.0, 1.8, 50.0, 64, 64)


@pytest.fixture(scope="module")
def tiny_view_model(tmp_path_factory):
    """A tiny random Zero-1-to-3 model in the community pipeline's layout (32 px, object fraction 0.7)."""
    folder = tmp_path_factory.mktemp("models") / "tiny-view"
    return save_view_model(build_view_model(seed=0), folder, object_fraction=0.7)


@pytest.fixture(scope="module")
def view_core(tiny_view_model):
    return ViewDiffusion.from_pretrained(tiny_view_model, device="cpu")


@pytest.fixture(scope="module")
def cube_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "red-cube.png"
    Image.fromarray(to_uint8(object_rgba(ShapeObject("cube", "red"), CAMERA))).save(path)
    return path


def cfg_for(image, model, *extra):
    return load_img2mesh_config(image, model=str(model), overrides=FAST + list(extra))


def system_for(cfg, core):
    rgba = load_input_image(cfg.image)
    reference = prepare_reference(rgba, cfg.reference)
    condition = on_background(prepare_image(rgba, core.default_size, core.object_fraction))[None]
    return ImageTo3D(cfg, reference, condition, core, torch.device("cpu"), cfg.seed)


# ------------------------------------------------------------------------------ the guidance
@pytest.mark.parametrize("variant", ["zero123", "stable-zero123"])
def test_relative_cameras_through_the_guidance(view_core, variant):
    """Target minus reference: [d_polar = -d_elevation (rad), sin d_azimuth, cos d_azimuth, d_distance], or
    Stable Zero123's reference polar angle last; the conditioning is cc_projection of [image embedding, camera]
    and the image's unscaled latents, as the core computes them from scratch."""
    guidance = Zero123Guidance(view_core, Zero123Config(variant=variant))
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    guidance.set_reference(image, Camera(20.0, 0.0, 1.8, 50.0))
    cameras = Cameras.stack([Camera(35.0, 90.0, 2.0, 50.0, 16, 16), Camera(-10.0, -45.0, 1.8, 50.0, 16, 16)])
    rows = guidance.relative_cameras(cameras)
    last = [0.2, 0.0] if variant == "zero123" else [math.radians(70.0)] * 2
    want = torch.tensor(
        [
            [math.radians(-15.0), 1.0, 0.0, last[0]],
            [math.radians(30.0), -math.sqrt(0.5), math.sqrt(0.5), last[1]],
        ]
    )
    assert torch.allclose(rows, want, atol=1e-6)
    embeddings, latents = guidance.conditioning(cameras)
    with torch.no_grad():
        direct = view_core.image_conditioning(image, rows)
    assert torch.allclose(embeddings, direct[0], atol=1e-6) and torch.allclose(latents, direct[1], atol=1e-6)


def _guided(view_core, cfg, renders):
    """The guidance of ``cfg`` conditioned on a random image at (0, 0), run at step 0 on ``renders`` from
    (15, 120) with a generator seeded 3 -> (guidance, image, cameras, output, a generator seeded 3 that has
    drawn the timestep, that timestep)."""
    guidance = Zero123Guidance(view_core, cfg)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    guidance.set_reference(image, Camera(0.0, 0.0, 1.8, 50.0))
    cameras = Cameras.stack([Camera(15.0, 120.0, 1.8, 50.0, 32, 32)])
    out = guidance(renders, cameras, step=0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    lo, hi = guidance.t_range(0)
    return guidance, image, cameras, out, g, torch.randint(lo, hi + 1, (1,), generator=g)


def test_zero123_sds_is_the_textbook_gradient(view_core):
    """The loss term's gradient on the latents is w(t) (eps_cfg - eps) with the draws of the run's generator,
    eps_cfg from the conditional and the zeroed (unconditional) branch at CFG 3."""
    renders = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    guidance, image, cameras, out, g, t = _guided(view_core, Zero123Config(guidance_scale=3.0), renders)
    with torch.no_grad():
        latents = view_core.encode_images(renders)
        noise = torch.randn(latents.shape, generator=g)
        noisy = view_core.add_noise(latents, noise, t)
        emb, lat = view_core.image_conditioning(image, guidance.relative_cameras(cameras))
        unet = view_core.unet
        cond = unet(torch.cat([noisy, lat], 1), t, encoder_hidden_states=emb).sample
        uncond = unet(
            torch.cat([noisy, torch.zeros_like(lat)], 1), t, encoder_hidden_states=torch.zeros_like(emb)
        ).sample
        eps = view_core.to_epsilon(uncond + 3.0 * (cond - uncond), noisy, t)
        grad = (1 - view_core.alphas_cumprod[t]).reshape(-1, 1, 1, 1) * (eps - noise)
    assert out.terms["sds"].item() == pytest.approx(0.5 * float((grad**2).sum()), rel=1e-4)
    assert out.logs["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-4)


def test_zero123_target_loss_is_the_mse_to_the_denoised_render(view_core):
    """``loss: target`` with one DDIM step: the render against the decoded x0 estimate of its noised latents
    (the CFG noise estimate), with the draws of the run's generator in SDS's order (t, then the noise)."""
    renders = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    cfg = Zero123Config(loss="target", guidance_scale=3.0, denoise_steps=1)
    guidance, _, cameras, out, g, t = _guided(view_core, cfg, renders)
    with torch.no_grad():
        latents = view_core.encode_images(renders)
        noisy = view_core.add_noise(latents, torch.randn(latents.shape, generator=g), t)
        eps = view_core.predict_noise(noisy, t, guidance.conditioning(cameras), 3.0)
        abar = view_core.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        target = view_core.decode_latents((noisy - (1 - abar).sqrt() * eps) / abar.sqrt())
    assert set(out.terms) == {"target"}
    assert out.terms["target"].item() == pytest.approx(float(((renders - target) ** 2).mean()), rel=1e-5)
    out.terms["target"].backward()
    assert torch.allclose(renders.grad, 2 * (renders - target) / renders.numel(), atol=1e-7)


def test_zero123_guidance_needs_an_image_and_a_view_model(view_core, tiny_core):
    with pytest.raises(UserError, match="view-conditioned model"):
        Zero123Guidance(tiny_core, Zero123Config())
    guidance = Zero123Guidance(view_core, Zero123Config())
    cameras = Cameras.stack([Camera(15.0, 120.0, 1.8, 50.0, 32, 32)])
    with pytest.raises(UserError, match="needs an input image"):
        guidance(torch.rand(1, 3, 32, 32), cameras, 0, torch.Generator().manual_seed(0))


def test_gradients_reach_the_field_from_the_zero123_guidance(cube_png, tiny_view_model, view_core, tmp_path):
    cfg = cfg_for(cube_png, tiny_view_model, "reference.rgb=0", "reference.mask=0")
    system = system_for(cfg, view_core)
    out = system.training_step(0, torch.Generator().manual_seed(0))
    assert set(out.logs) >= {"guidance", "t", "grad_norm"} and "ref_rgb" not in out.logs
    out.loss.backward()
    grad = system.geometry.encoding.params.grad
    assert grad is not None and float(grad.abs().sum()) > 0


# ------------------------------------------------------------------------------ the reference view
def test_reference_losses_pull_the_input_view_onto_the_image(cube_png, tiny_view_model, view_core):
    """40 steps on the reference losses alone (the guidance replaced by one without terms) move the render of
    the input's camera onto the image: both losses fall by half or more and the silhouette IoU rises."""
    cfg = cfg_for(cube_png, tiny_view_model, "reference.size=32", "steps=40")
    system = system_for(cfg, view_core)
    system.guidance.forward = lambda *a, **k: dream3d.guidance.base.GuidanceOutput({})

    def measure():
        with torch.no_grad():
            system.renderer.eval()
            out = system.render_reference()
        mask = system.reference.mask[0, ..., 0] > 0.5
        pred = out.opacity[0, ..., 0] > 0.5
        iou = float((mask & pred).sum() / (mask | pred).sum())
        return float(mask_loss(out.opacity, system.reference)), iou

    before = measure()
    trainer = Trainer(system, 40, None, torch.Generator().manual_seed(0), progress=False)
    trainer.fit()
    after = measure()
    first, last = trainer.history[:5], trainer.history[-5:]
    assert sum(h["ref_rgb"] for h in last) < 0.5 * sum(h["ref_rgb"] for h in first)
    assert after[0] < 0.5 * before[0] and after[1] > before[1] and after[1] > 0.6


def test_depth_losses_ignore_scale_and_shift():
    ref = torch.rand(200, generator=torch.Generator().manual_seed(0))
    for kind in ("ssi", "pearson"):
        assert float(depth_loss(3.0 * ref + 0.5, ref, kind)) == pytest.approx(0.0, abs=1e-5)
        other = torch.rand(200, generator=torch.Generator().manual_seed(1), requires_grad=True)
        loss = depth_loss(other, ref, kind)
        loss.backward()
        assert loss.item() > 0.01 and float(other.grad.abs().sum()) > 0


def test_prepare_reference_with_a_depth_model(cube_png):
    """The depth model gets the prepared view (uint8, on white); its inverse depth is resized to the reference."""
    cfg = load_img2mesh_config(
        cube_png, overrides=["reference.size=32", "reference.depth=1", "reference.depth_model=x"]
    )
    seen = []

    def fake_depth(stem, image):
        seen.append(image.shape)
        return np.linspace(0, 1, image.shape[0] * image.shape[1], dtype=np.float32).reshape(image.shape[:2])

    ref = prepare_reference(load_input_image(cube_png), cfg.reference, fake_depth)
    assert seen == [(256, 256, 3)] and ref.depth.shape == (1, 32, 32, 1) and ref.rgb.shape == (1, 32, 32, 3)


# ------------------------------------------------------------------------------ the input image
def _mask_iou(rgba, truth):
    mask = rgba[..., 3] >= 0.5
    return (mask & truth).sum() / (mask | truth).sum()


@pytest.mark.parametrize("kind", ["rgba", "white", "grey", "photo-like"])
def test_mask_from_alpha_or_a_plain_background(tmp_path, kind):
    obj = ShapeObject("torus", "orange")
    truth = render(obj, CAMERA, ss=4).mask
    if kind == "rgba":
        pixels = to_uint8(object_rgba(obj, CAMERA))
    elif kind == "photo-like":  # texture noise and a soft shadow (alpha < 0.5) in the matte
        pixels = photo_like(obj, CAMERA, seed=0)
    else:
        pixels = to_uint8(render(obj, CAMERA, ss=4, background=1.0 if kind == "white" else 0.3).rgb)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    rgba = load_input_image(tmp_path / "in.png")
    assert rgba.shape == (64, 64, 4) and _mask_iou(rgba, truth) > 0.97
    if kind == "photo-like":  # the shadow, in the file's alpha, is gone from the alpha a few pixels off the object
        far = distance_transform_edt(~truth) > 3
        assert (np.asarray(Image.open(tmp_path / "in.png"))[..., 3][far] > 0).sum() > 50
        assert (rgba[..., 3][far] == 0).all()


def test_framing_centres_and_scales_the_object(cube_png):
    rgba = load_input_image(cube_png)
    framed = prepare_image(rgba, 32, 0.5)
    rows, cols = np.nonzero(framed[3].numpy() >= 0.5)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == pytest.approx(16, abs=1)
    assert (rows.min() + rows.max()) / 2 == pytest.approx(15.5, abs=1) and (
        cols.min() + cols.max()
    ) / 2 == pytest.approx(15.5, abs=1)


def _write(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


def _bad_inputs(tmp_path):
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    (tmp_path / "folder").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return {
        "folder": (tmp_path / "folder", "is a folder"),
        "missing": (tmp_path / "nothing.png", "does not exist"),
        "unreadable": (tmp_path / "broken.png", "cannot read"),
        "tiny": (_write(tmp_path / "tiny.png", noise[:20, :20]), "at least 32 pixels"),
        "busy background": (_write(tmp_path / "noise.png", noise), "no plain background"),
        "no object": (_write(tmp_path / "blank.png", np.full((64, 64, 3), 200, np.uint8)), "no object to separate"),
    }


@pytest.mark.parametrize("case", ["folder", "missing", "unreadable", "tiny", "busy background", "no object"])
def test_cli_bad_images_are_one_line_exit_2(tmp_path, capsys, tiny_view_model, case):
    path, message = _bad_inputs(tmp_path)[case]
    code = main(["img2mesh", str(path), "--model", str(tiny_view_model), "-o", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and err.startswith("dream3d img2mesh: error:")
    assert not (tmp_path / "out").exists()  # refused before anything was written


BAD_SETTINGS = {
    "guidance.kind=sds": "guidance.kind",
    "reference.depth=1": "needs a depth model",
    "--elevation=120": "elevation 120.0 is outside",
    "steps=0": "steps must be at least 1",
}


@pytest.mark.parametrize("arg", list(BAD_SETTINGS))
def test_cli_bad_settings_are_one_line_exit_2(tmp_path, capsys, tiny_view_model, cube_png, arg):
    code = main(["img2mesh", str(cube_png), "--model", str(tiny_view_model), "-o", str(tmp_path), *FAST, arg])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and BAD_SETTINGS[arg] in err


def test_txt2mesh_refuses_the_image_guidance(tmp_path, capsys, tiny_model):
    code = main(["txt2mesh", "a red cube", "--model", str(tiny_model), "-o", str(tmp_path), "guidance.kind=zero123"])
    assert code == 2 and "dream3d img2mesh" in capsys.readouterr().err


def test_a_text_model_is_refused_as_a_view_prior(tmp_path, capsys, tiny_model, cube_png):
    code = main(["img2mesh", str(cube_png), "--model", str(tiny_model), "-o", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the run
RESUME = ["steps=6", "checkpoint_every=2", "val_every=3"]


def _checkpoint(folder):
    return torch.load(Path(folder) / "checkpoints" / "coarse.pt", weights_only=False)


def test_outputs_and_resume_to_the_same_result(cube_png, tiny_view_model, tmp_path, monkeypatch):
    """A tiny run writes txt2mesh's outputs plus the prepared input; a run interrupted mid-step (after the
    checkpoint of step 2) and resumed gives the uninterrupted run's checkpoint and mesh, byte for byte."""
    metrics = dream3d.img2mesh(cube_png, tmp_path / "a", model=str(tiny_view_model), progress=False, **_values(RESUME))
    for name in (
        "config.yaml",
        "metrics.json",
        "reference.png",
        "condition.png",
        "checkpoints/coarse.pt",
        "val/step-00003.png",
        "val/step-00006.png",
        "mesh.glb",
        "mesh.obj",
        "mesh.ply",
        "turntable.mp4",
        "turntable.gif",
        "export.json",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    assert metrics["steps"] == 6 and metrics["image"] == str(cube_png) and metrics["model"] == str(tiny_view_model)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["steps"] == 6
    val = np.asarray(Image.open(tmp_path / "a" / "val" / "step-00006.png"))
    assert val.shape[0] == 4 * 16 + 3 * 2  # the input's row, then RGB | normal | opacity

    real = ImageTo3D.reference_terms

    def interrupted_at_step_3(self, generator):
        if len(_calls) == 3:
            raise KeyboardInterrupt
        _calls.append(1)
        return real(self, generator)

    _calls: list = []
    monkeypatch.setattr(ImageTo3D, "reference_terms", interrupted_at_step_3)
    cfg = cfg_for(cube_png, tiny_view_model, *RESUME)
    with pytest.raises(KeyboardInterrupt):
        run_img2mesh(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(ImageTo3D, "reference_terms", real)
    assert _checkpoint(tmp_path / "b")["step"] == 2
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["interrupted"]
    with pytest.raises(UserError, match="--resume"):
        run_img2mesh(cfg, tmp_path / "b", progress=False)
    run_img2mesh(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 6 and torch.equal(a["generator"], b["generator"])
    assert all(torch.equal(a["task"][k], b["task"][k]) for k in a["task"])
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()


def test_resume_refuses_another_image(cube_png, tiny_view_model, tmp_path):
    cfg = cfg_for(cube_png, tiny_view_model, "steps=1")
    run_img2mesh(cfg, tmp_path / "a", progress=False)
    other = tmp_path / "other.png"
    Image.fromarray(to_uint8(object_rgba(ShapeObject("sphere", "blue"), CAMERA))).save(other)
    with pytest.raises(UserError, match="use the same settings"):
        run_img2mesh(cfg_for(other, tiny_view_model, "steps=2"), tmp_path / "a", resume=True, progress=False)


def _values(overrides):
    """``key=value`` overrides as the API's nested keyword arguments."""
    values: dict = {}
    for item in FAST + overrides:
        _set_dotted(values, *parse_override(item))
    return values


@pytest.mark.slow
def test_a_run_with_depth_from_a_depth_model(cube_png, tiny_view_model, tiny_depth_model, tmp_path):
    """The depth term with a transformers depth model loaded by the stereo module's DepthModel."""
    cfg = cfg_for(
        cube_png, tiny_view_model, "steps=2", "reference.depth=1", f"reference.depth_model={tiny_depth_model}"
    )
    run_img2mesh(cfg, tmp_path, progress=False)
    history = _checkpoint(tmp_path)["history"]
    assert all(0 <= h["ref_depth"] <= 2 for h in history) and len(history) == 2


def test_export_fills_a_hollow_shell(monkeypatch):
    """A density shell (dense between radius 0.3 and 0.5, faint inside, with a hole ~6 grid cells
    across at the top) renders as a solid ball; with fill_cavities its mesh is the ball, without it a
    shell with a cavity; a closing too small to seal the hole leaves it hollow."""

    class Shell(torch.nn.Module):
        bound = 1.0

        def density(self, x):
            r = x.norm(dim=-1)
            hole = (x[..., :2].norm(dim=-1) < 0.12) & (x[..., 2] > 0)
            return torch.where(r < 0.3, 1.0, torch.where((r < 0.5) & ~hole, 50.0, 0.0))

        def forward(self, x):
            return {"sigma": self.density(x), "albedo": torch.full_like(x, 0.5)}

    hollow, _ = extract_mesh(Shell(), 48)
    solid, info = extract_mesh(Shell(), 48, fill_cavities=True)
    ball = 4 / 3 * math.pi * 0.5**3 / 8  # of the box [-1, 1]^3
    shell = ball * (1 - 0.6**3)  # the hollow shell's volume: 78% of the ball's
    assert mesh_occupancy(hollow, 64).mean() == pytest.approx(shell, rel=0.05)
    assert mesh_occupancy(solid, 64).mean() == pytest.approx(ball, rel=0.05) and info["cavity_points_filled"] > 0
    monkeypatch.setattr(isosurface, "SEAL_ITERATIONS", 1)
    unsealed, _ = extract_mesh(Shell(), 48, fill_cavities=True)
    assert mesh_occupancy(unsealed, 64).mean() == pytest.approx(shell, rel=0.05)
