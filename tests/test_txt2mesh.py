"""Text to 3D on a tiny random prior: gradients, NaN guard, resume (Ctrl-C, kill -9), outputs, CLI errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from txt2mesh_fast import FAST as BASE_FAST

import dream3d
from dream3d.cli import main
from dream3d.errors import UserError
from dream3d.geometry.hashgrid_kernel import kernel_available
from dream3d.guidance import SDSConfig
from dream3d.guidance.denoised_target import DenoisedTargetGuidance, TargetConfig, match_silhouette_size, silhouette
from dream3d.systems.dreamfusion import DreamFusion
from dream3d.text_to_3d import default_config_path, load_txt2mesh_config, run_txt2mesh
from dream3d.trainer import Trainer

FAST = BASE_FAST + ["regularizers.opacity_entropy=0.01"]


def cfg_for(model, *extra):
    return load_txt2mesh_config("a red cube", model=str(model), overrides=FAST + list(extra))


def system_for(cfg, core):
    return DreamFusion(cfg, cfg.prompt, core, torch.device("cpu"), cfg.seed)


def trainer_for(system, steps, tmp_path, **kw):
    return Trainer(system, steps, tmp_path / "ckpt.pt", torch.Generator().manual_seed(0), progress=False, **kw)


@pytest.mark.parametrize("kind", ["sds", "target"])
def test_guidance_gradients_reach_the_geometry(tiny_model, tiny_core, tmp_path, kind):
    system = system_for(cfg_for(tiny_model, f"guidance.kind={kind}", "steps=1"), tiny_core)
    before = [p.detach().clone() for p in system.geometry.parameters()]
    trainer = trainer_for(system, 1, tmp_path)
    trainer._zero_grad()
    out = system.training_step(0, trainer.generator)
    out.loss.backward()
    enc = system.geometry.encoding.params
    assert enc.grad is not None and float(enc.grad.abs().sum()) > 0
    assert kind in out.logs or "guidance" in out.logs
    for opt in trainer.optimizers.values():
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, system.geometry.parameters()))


def test_skipped_steps_leave_parameters_and_moments_unchanged(tiny_model, tiny_core, tmp_path, monkeypatch):
    """The NaN guard: a non-finite loss and a non-finite gradient each skip their step without touching any
    parameter or optimizer moment; max_skipped_steps skipped steps in a row stop the run."""
    system = system_for(cfg_for(tiny_model, "steps=6"), tiny_core)
    trainer = trainer_for(system, 6, tmp_path, max_skipped_steps=3)
    trainer.run_step()  # one real step, so that the optimizer has moments
    trainer.step += 1
    real = system.guidance.forward
    breaks = {
        "loss": lambda out: out.terms.update(target=out.terms["target"] * float("nan")),
        "gradient": lambda out: out.terms.update(
            target=out.terms["target"] + 0 * system.geometry.encoding.params.sum() * float("inf")
        ),
    }
    for how, spoil in breaks.items():

        def broken(*args, **kwargs):
            out = real(*args, **kwargs)
            spoil(out)
            return out

        monkeypatch.setattr(system.guidance, "forward", broken)
        params = [p.detach().clone() for p in system.parameters()]
        moments = [{k: v.clone() for k, v in st.items()} for st in trainer.optimizers["scene"].state.values()]
        logs, skipped = trainer.run_step()
        assert skipped, how
        assert all(torch.equal(a, b) for a, b in zip(params, system.parameters())), how
        after = list(trainer.optimizers["scene"].state.values())
        assert all(torch.equal(m[k], st[k]) for m, st in zip(moments, after) for k in m), how
        assert all(p.grad is None for p in system.parameters()), how
    trainer.step = 2
    with pytest.raises(UserError, match="3 steps in a row gave non-finite values"):
        trainer.fit()
    assert trainer.skipped == [2, 3, 4]
    monkeypatch.setattr(system.guidance, "forward", real)


def _checkpoint(folder):
    return torch.load(Path(folder) / "checkpoints" / "coarse.pt", weights_only=False)


def _assert_same_state(a, b):
    assert a["step"] == b["step"] and torch.equal(a["generator"], b["generator"])
    for k in a["task"]:
        assert torch.equal(a["task"][k], b["task"][k]), k
    sa, sb = a["optimizers"]["scene"]["state"], b["optimizers"]["scene"]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


RESUME = ["steps=6", "checkpoint_every=2", "renderer.grid.update_every=3", "renderer.grid.warmup_steps=1"]


def test_ctrl_c_on_an_occupancy_update_step_resumes_to_the_same_run(tiny_model, tmp_path, monkeypatch):
    """SIGINT while the guidance of step 3 runs (step 3 updates the occupancy grid): the step finishes, a
    checkpoint is saved, the partial asset and metrics are written; --resume then gives the uninterrupted
    run's checkpoint (every part, every optimizer moment, the generator) and mesh, byte for byte."""
    run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "a", progress=False)
    real = DenoisedTargetGuidance.forward

    def interrupt_at_step_3(self, images, cameras, step, generator):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, images, cameras, step, generator)

    monkeypatch.setattr(DenoisedTargetGuidance, "forward", interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "b", progress=False)
    monkeypatch.setattr(DenoisedTargetGuidance, "forward", real)
    interrupted = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert interrupted["interrupted"] and interrupted["steps"] == 4 and _checkpoint(tmp_path / "b")["step"] == 4
    with pytest.raises(UserError, match="--resume"):
        run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "b", progress=False)
    run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "b", resume=True, progress=False)
    _assert_same_state(_checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b"))
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()


def test_a_hard_interrupt_mid_step_keeps_the_last_checkpoint(tiny_model, tmp_path, monkeypatch):
    """A KeyboardInterrupt inside a step (a second Ctrl-C) writes no checkpoint of the half-done step."""
    run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "a", progress=False)
    real = DenoisedTargetGuidance.forward

    def raise_at_step_3(self, images, cameras, step, generator):
        if step == 3:
            raise KeyboardInterrupt
        return real(self, images, cameras, step, generator)

    monkeypatch.setattr(DenoisedTargetGuidance, "forward", raise_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "b", progress=False)
    monkeypatch.setattr(DenoisedTargetGuidance, "forward", real)
    assert _checkpoint(tmp_path / "b")["step"] == 2  # the periodic checkpoint, not the update of step 3
    run_txt2mesh(cfg_for(tiny_model, *RESUME), tmp_path / "b", resume=True, progress=False)
    _assert_same_state(_checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b"))
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()


KILL_SCRIPT = """
import os, signal, sys
from dream3d.guidance.denoised_target import DenoisedTargetGuidance
from dream3d.text_to_3d import load_txt2mesh_config, run_txt2mesh
real = DenoisedTargetGuidance.forward
def killed_at_step_5(self, images, cameras, step, generator):
    if step == 5 and os.environ.get("KILL_AT_5"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, images, cameras, step, generator)
DenoisedTargetGuidance.forward = killed_at_step_5
cfg = load_txt2mesh_config("a red cube", model=sys.argv[1], overrides=sys.argv[4:])
run_txt2mesh(cfg, sys.argv[2], resume=sys.argv[3] == "resume", progress=False)
"""


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_mesh(tiny_model, tmp_path):
    """A subprocess (two threads) killed with SIGKILL during step 5, after the checkpoint of step 4, and
    resumed with --resume gives the uninterrupted run's mesh, byte for byte."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [*FAST, *RESUME, "steps=8"]

    def run(out, mode, **extra):
        cmd = [sys.executable, "-c", KILL_SCRIPT, str(tiny_model), str(tmp_path / out), mode, *args]
        return subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, timeout=600)

    assert run("a", "fresh").returncode == 0
    killed = run("b", "fresh", KILL_AT_5="1")
    assert killed.returncode == -signal.SIGKILL and _checkpoint(tmp_path / "b")["step"] == 4
    assert not (tmp_path / "b" / "mesh.ply").exists()
    resumed = run("b", "resume")
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()
    _assert_same_state(_checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b"))


@pytest.mark.slow
def test_same_seed_same_mesh_with_two_threads(tiny_model, tmp_path):
    """Two runs of one seed at two threads each, at the same time (so their threads compete for the
    cores, as on a busy machine), give the same mesh bytes. A 32^3 occupancy grid updated every other
    step draws repeated cells, whose value used to depend on which thread wrote last."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [*FAST, "steps=10", "renderer.grid.resolution=32", "export.turntable_formats=[]"]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(tiny_model), str(tmp_path / out), "fresh", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for out in ("a", "b")
    ]
    assert [r.wait(timeout=600) for r in runs] == [0, 0]
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()


def test_outputs_of_a_short_run(tiny_model, tmp_path):
    metrics = run_txt2mesh(cfg_for(tiny_model, "steps=2", "val_every=2"), tmp_path, progress=False)
    for name in ("config.yaml", "metrics.json", "checkpoints/coarse.pt", "val/step-00002.png"):
        assert (tmp_path / name).is_file(), name
    assert metrics["steps"] == 2 and metrics["peak_memory_mb"] > 0 and metrics["seconds"] > 0
    assert metrics["encoding_backend"] == ("c" if kernel_available() else "torch")  # what served the points
    again = load_txt2mesh_config("x", config=tmp_path / "config.yaml")
    assert again.cameras.height == 16 and again.steps == 2 and again.prompt == "x"  # the prompt given wins


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch.key=1"], "unknown config key 'nosuch'"),
        (["guidance.kind=magic"], "choose one of 'sds', 'target'"),
        (["guidance.kind=target", "guidance.guidance_scale=50"], "'guidance.guidance_scale' (kind 'target')"),
        (["steps=0"], "steps must be at least 1"),
        (["--config", "/no/such.yaml"], "does not exist"),
    ],
)
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
    package = Path(dream3d.__file__).resolve().parent
    for model in (None, "shapes", "stabilityai/stable-diffusion-2-1-base"):
        path = default_config_path(model)
        assert path.is_file() and package in path.parents
    assert load_txt2mesh_config("a red cube").steps > 0


def test_denoise_step_size_gives_low_noise_targets_fewer_steps(tiny_core, monkeypatch):
    T = tiny_core.num_train_timesteps
    short = DenoisedTargetGuidance(tiny_core, TargetConfig(denoise_steps=8, denoise_step_size=0.1), "a red cube")
    plain = DenoisedTargetGuidance(tiny_core, TargetConfig(denoise_steps=8), "a red cube")
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
    for bad in (dict(denoise_step_size=0.0), dict(denoise_steps=0), dict(t_min=0.9, t_max=0.5)):
        with pytest.raises(UserError):
            TargetConfig(**bad)
    with pytest.raises(UserError, match="target_guidance_rescale 1.5 must be in"):
        TargetConfig(target_guidance_rescale=1.5)
    with pytest.raises(UserError, match="guidance_rescale -0.1 must be in"):
        SDSConfig(guidance_rescale=-0.1)


def test_target_guidance_rescale_reaches_the_denoising(tiny_core):
    T, size = tiny_core.num_train_timesteps, tiny_core.default_size
    cond, uncond = tiny_core.text_conditioning(["a red cube"])
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([int(0.7 * T)])

    def target(rescale):
        cfg = TargetConfig(denoise_steps=2, target_guidance_rescale=rescale)
        guidance = DenoisedTargetGuidance(tiny_core, cfg, "a red cube")
        return guidance.denoised_target(x, t, cond, uncond, torch.Generator().manual_seed(0))

    plain = target(0.0)
    assert torch.equal(plain, target(0.0))  # seeded: the difference below is the rescale's
    assert (plain - target(0.7)).abs().max() > 1e-4


def _disc(radius, n=32, background=1.0):
    y, x = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    inside = (x * x + y * y < radius * radius).float()
    img = torch.full((1, 3, n, n), background)
    img[:, 0] -= 0.8 * inside
    img[:, 2] -= 0.5 * inside
    return img


@pytest.mark.parametrize("background", [1.0, 0.6])
def test_match_silhouette_size_zooms_targets_to_the_render(background):
    big, small = _disc(0.8, background=background), _disc(0.4, background=background)
    area = lambda img: int(silhouette(img)[0].sum())  # noqa: E731
    shrunk, grown = match_silhouette_size(big, small), match_silhouette_size(small, big)
    assert abs(area(shrunk) - area(small)) <= 0.15 * area(small) and area(big) > 3 * area(small)
    assert abs(area(grown) - area(big)) <= 0.15 * area(big)
    torch.testing.assert_close(shrunk[..., 0, 0], torch.full((1, 3), background))  # uncovered border: background
    torch.testing.assert_close(match_silhouette_size(small, small), small, atol=1e-5, rtol=0)
    empty = torch.full_like(big, background)
    torch.testing.assert_close(match_silhouette_size(big, empty), big, atol=1e-5, rtol=0)  # nothing to match


def test_python_api_takes_nested_values_like_txt2img(tiny_model, tmp_path):
    values = dict(
        steps=2,
        cameras={"height": 16, "width": 16, "batch": 1},
        renderer={"sampler": {"num_samples": 24}, "grid": {"resolution": 16}},
        export={"resolution": 24, "turntable_formats": []},
        val_every=0,
        guidance=SDSConfig(guidance_scale=50.0, t_max=0.5),
    )
    cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), values=values)
    assert cfg.guidance == SDSConfig(guidance_scale=50.0, t_max=0.5) and cfg.cameras.height == 16
    assert cfg.renderer.grid.resolution == 16 and cfg.renderer.grid.update_every == 16  # nested: merged with the recipe
    assert cfg.background.kind == "mlp"  # the recipe's, untouched
    metrics = dream3d.txt2mesh("a red cube", tmp_path, model=str(tiny_model), progress=False, **values)
    assert metrics["steps"] == 2 and (tmp_path / "mesh.glb").is_file()
    with pytest.raises(UserError, match="'guidance.denoise_steps' \\(kind 'sds'\\)"):
        load_txt2mesh_config("a red cube", values={"guidance": {"kind": "sds", "denoise_steps": 3}})


def test_old_names_and_kind_switches_keep_command_lines_working(tiny_model):
    cfg = load_txt2mesh_config("a blue cone", overrides=["guidance.mode=sds", "shading.albedo_prob=0.4"])
    assert cfg.guidance.kind == "sds" and cfg.guidance.guidance_scale == 100.0  # SDS's own default, not the recipe's
    assert cfg.guidance.t_max_end == 0.5  # the timestep schedule is shared by both kinds: the recipe's stays
    assert cfg.material.albedo_prob == 0.4


def test_unknown_words_warn_in_one_line_for_the_bundled_prior(tmp_path):
    def txt2img(prompt):
        cmd = [sys.executable, "-m", "dream3d", "txt2img", prompt, "--steps", "1", "-o", str(tmp_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    done = txt2img("a DSLR photo of a hamburger")
    lines = [ln for ln in done.stderr.splitlines() if "warning" in ln]
    assert done.returncode == 0 and len(lines) == 1, done.stderr[-800:]
    assert "'dslr', 'photo', 'of', 'hamburger'" in lines[0] and "cube" in lines[0] and "--model" in lines[0]
    assert "warning" not in txt2img("a red cube, side view").stderr
