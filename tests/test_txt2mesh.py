"""The txt2mesh runner on a tiny random prior: gradients, NaN guard, resume, outputs, CLI errors."""

import json
from pathlib import Path

import pytest
import torch

from dream3d.cli import main
from dream3d.nerf.hashgrid_kernel import kernel_available
from dream3d.text_to_3d import Txt2MeshRun, load_txt2mesh_config, run_txt2mesh

FAST = [
    "cameras.height=16", "cameras.width=16", "cameras.batch=1", "renderer.sampler.num_samples=24",
    "renderer.grid.resolution=16", "renderer.grid.warmup_steps=2", "renderer.grid.update_every=2",
    "export.resolution=24", "export.turntable_frames=2", "export.turntable_size=16", "guidance.denoise_steps=2",
    "val_every=0", "val_size=16", "shading.albedo_warmup_steps=1", "regularizers.opacity_entropy=0.01",
]


def cfg_for(model, *extra):
    return load_txt2mesh_config("a red cube", model=str(model), overrides=FAST + list(extra))


@pytest.mark.parametrize("mode", ["sds", "target"])
def test_guidance_gradients_reach_the_field(tiny_model, tmp_path, mode):
    run = Txt2MeshRun(cfg_for(tiny_model, f"guidance.mode={mode}", "steps=1"), tmp_path, progress=False)
    before = [p.detach().clone() for p in run.field.parameters()]
    log = run.train_step()
    assert not log.get("skipped")
    enc = [p for n, p in run.field.named_parameters() if n.startswith("encoding")]
    assert all(p.grad is not None for p in enc)
    assert sum(float(p.grad.abs().sum()) for p in enc) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, run.field.parameters()))


def test_non_finite_step_is_skipped_and_reported(tiny_model, tmp_path, monkeypatch):
    run = Txt2MeshRun(cfg_for(tiny_model, "steps=3", "checkpoint_every=0"), tmp_path, progress=False)
    real = run.guidance.loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss, info = real(*args, **kwargs)
        return (loss * float("nan"), info) if calls["n"] == 2 else (loss, info)

    monkeypatch.setattr(run.guidance, "loss", sometimes_nan)
    run.fit()
    assert run.skipped == [1]
    assert run.step == 3
    assert all(torch.isfinite(p).all() for p in run.field.parameters())


def test_interrupted_run_resumes_to_the_same_result(tiny_model, tmp_path, monkeypatch):
    steps = ["steps=5", "checkpoint_every=2"]
    run_txt2mesh(cfg_for(tiny_model, *steps), tmp_path / "a", progress=False)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)

    from dream3d.guidance.sds import ScoreDistillation

    real = ScoreDistillation.loss
    calls = {"n": 0}

    def interrupt_at_step_4(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ScoreDistillation, "loss", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_txt2mesh(cfg_for(tiny_model, *steps), tmp_path / "b", progress=False)
    monkeypatch.setattr(ScoreDistillation, "loss", real)
    interrupted = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert interrupted["interrupted"] and interrupted["steps"] == 3
    with pytest.raises(Exception, match="--resume"):
        run_txt2mesh(cfg_for(tiny_model, *steps), tmp_path / "b", progress=False)
    run_txt2mesh(cfg_for(tiny_model, *steps), tmp_path / "b", resume=True, progress=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    assert b["step"] == a["step"] == 5
    for k in a["renderer"]:
        assert torch.allclose(a["renderer"][k].float(), b["renderer"][k].float(), atol=1e-6), k


def test_outputs_of_a_short_run(tiny_model, tmp_path):
    metrics = run_txt2mesh(cfg_for(tiny_model, "steps=2", "val_every=2"), tmp_path, progress=False)
    for name in ("config.yaml", "metrics.json", "checkpoints/last.pt", "val/step-00002.png"):
        assert (tmp_path / name).is_file(), name
    assert metrics["steps"] == 2 and metrics["peak_memory_mb"] > 0 and metrics["seconds"] > 0
    assert metrics["encoding_backend"] == ("c" if kernel_available() else "torch")  # what served the points
    again = load_txt2mesh_config("x", config=tmp_path / "config.yaml")
    assert again.cameras.height == 16 and again.steps == 2 and again.prompt == "x"  # the prompt given wins


@pytest.mark.parametrize("args, message", [
    (["nosuch.key=1"], "unknown config key 'nosuch'"),
    (["guidance.mode=magic"], "choose one of"),
    (["steps=0"], "steps must be at least 1"),
    (["--config", "/no/such.yaml"], "does not exist"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny_model, tmp_path, capsys, args, message):
    code = main(["txt2mesh", "a red cube", "--model", str(tiny_model), "-o", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_demo_runs_txt2mesh_on_the_bundled_prior_and_says_where(tmp_path, capsys):
    code = main(["demo", "-o", str(tmp_path), *FAST, "steps=2"])
    out = capsys.readouterr().out
    run = tmp_path / "txt2mesh" / "a-red-sphere"
    assert code == 0
    for name in ("mesh.glb", "mesh.obj", "turntable.mp4", "turntable.gif", "metrics.json"):
        assert (run / name).is_file(), name
    assert f"{run}/mesh.glb" in out and f"{run}/turntable.mp4" in out
    assert json.loads((run / "metrics.json").read_text())["model"] == "shapes"


def test_default_configs_ship_inside_the_package():
    # A wheel carries only the package: the defaults must live in it (./configs links to them).
    import dream3d
    from dream3d.text_to_3d import default_config_path

    package = Path(dream3d.__file__).resolve().parent
    for model in (None, "shapes", "stabilityai/stable-diffusion-2-1-base"):
        path = default_config_path(model)
        assert path.is_file() and package in path.parents
    assert load_txt2mesh_config("a red cube").steps > 0


def test_denoise_step_size_gives_low_noise_targets_fewer_steps(tiny_core, monkeypatch):
    from dream3d.errors import UserError
    from dream3d.guidance.sds import GuidanceConfig, ScoreDistillation

    T = tiny_core.num_train_timesteps
    short = ScoreDistillation(tiny_core, GuidanceConfig(mode="target", denoise_steps=8, denoise_step_size=0.1))
    plain = ScoreDistillation(tiny_core, GuidanceConfig(mode="target", denoise_steps=8))
    assert [short.denoise_step_count(torch.tensor([int(f * T)])) for f in (0.05, 0.25, 0.5, 0.95)] == [1, 3, 5, 8]
    assert plain.denoise_step_count(torch.tensor([int(0.05 * T)])) == 8
    calls = []
    real = tiny_core.unet_forward
    monkeypatch.setattr(tiny_core, "unet_forward", lambda *a: calls.append(1) or real(*a))
    cond, uncond = tiny_core.text_conditioning(["a red cube"] * 2)
    x = torch.rand(2, 3, tiny_core.default_size, tiny_core.default_size)
    t = torch.tensor([int(0.25 * T), int(0.15 * T)])  # the batch's largest t sets the count
    for guidance, expected in ((short, 3), (plain, 8)):
        calls.clear()
        target = guidance.denoised_target(x, t, cond, uncond, torch.Generator().manual_seed(0))
        assert len(calls) == expected and target.shape == x.shape and torch.isfinite(target).all()
    for bad in (dict(denoise_step_size=0.0), dict(denoise_steps=0)):
        with pytest.raises(UserError):
            GuidanceConfig(**bad)


def _disc(radius, n=32, background=1.0):
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    inside = (x * x + y * y < radius * radius).float()
    img = torch.full((1, 3, n, n), background)
    img[:, 0] -= 0.8 * inside
    img[:, 2] -= 0.5 * inside
    return img


@pytest.mark.parametrize("background", [1.0, 0.6])
def test_match_silhouette_size_zooms_targets_to_the_render(background):
    from dream3d.guidance.sds import match_silhouette_size, silhouette

    big, small = _disc(0.8, background=background), _disc(0.4, background=background)
    area = lambda img: int(silhouette(img)[0].sum())  # noqa: E731
    shrunk, grown = match_silhouette_size(big, small), match_silhouette_size(small, big)
    assert abs(area(shrunk) - area(small)) <= 0.15 * area(small) and area(big) > 3 * area(small)
    assert abs(area(grown) - area(big)) <= 0.15 * area(big)
    torch.testing.assert_close(shrunk[..., 0, 0], torch.full((1, 3), background))  # uncovered border: background
    torch.testing.assert_close(match_silhouette_size(small, small), small, atol=1e-5, rtol=0)
    empty = torch.full_like(big, background)
    torch.testing.assert_close(match_silhouette_size(big, empty), big, atol=1e-5, rtol=0)  # nothing to match
