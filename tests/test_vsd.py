"""Variational score distillation (dream3d/guidance/vsd.py) on tiny random priors: the LoRA's state,
the pretrained pass untouched by the particle, gradients, a step of the scene, resume."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict
from test_fine_stage import FINE as FINE_STAGE
from txt2mesh_fast import FAST as BASE_FAST

from dream3d.cameras import CameraSampling
from dream3d.diffusion.build import ModelSpec, build_random_model
from dream3d.diffusion.core import LatentDiffusion
from dream3d.errors import UserError
from dream3d.guidance import VSDConfig, VSDGuidance
from dream3d.systems.dreamfusion import DreamFusion
from dream3d.text_to_3d import load_finished_run, load_txt2mesh_config, run_txt2mesh
from dream3d.trainer import Trainer

FAST = BASE_FAST + ["guidance.kind=vsd", "regularizers.opacity_entropy=0.01"]


@pytest.fixture(scope="module")
def camera_v_model(tmp_path_factory):
    """A camera-conditioned v-prediction model, like the bundled prior."""
    spec = ModelSpec(camera_input=True, prediction_type="v_prediction")
    return build_random_model(tmp_path_factory.mktemp("models") / "tiny-camera-v", spec, seed=0)


@pytest.fixture(params=["sd", "camera-v"])
def model(request, tiny_model, camera_v_model):
    return tiny_model if request.param == "sd" else camera_v_model


def core_of(model):
    return LatentDiffusion.from_pretrained(model, device="cpu")  # its own UNet: adapters stay in this test


def batch(seed=0, size=16):
    generator = torch.Generator().manual_seed(seed)
    cameras = CameraSampling(height=size, width=size, batch=2).sample(generator)
    return torch.rand(2, 3, size, size, generator=generator), cameras, generator


def trained_guidance(core, steps=2, seed=0):
    """A VSD guidance after ``steps`` optimizer steps of its own loss (its LoRA and camera embedding moved)."""
    torch.manual_seed(seed)
    guidance = VSDGuidance(core, VSDConfig(), "a red cube")
    images, cameras, generator = batch(seed)
    for step in range(steps):
        guidance.optimizer().zero_grad()
        guidance(images, cameras, step, generator).terms["lora"].backward()
        guidance.optimizer().step()
    return guidance


def test_the_lora_state_round_trips_through_the_guidance_state_dict(model, tmp_path):
    """The guidance's state is its adapter (what PEFT calls its state) and camera embedding, no base UNet
    weight; saved and loaded into a guidance on a fresh core it gives the same particle."""
    a = trained_guidance(core_of(model))
    state = a.state_dict()
    peft_state = get_peft_model_state_dict(a.core.unet, adapter_name=a.adapter)
    lora = {k[len("lora.") :].replace("/", "."): v for k, v in state.items() if k.startswith("lora.")}
    assert lora.keys() == peft_state.keys() and all(torch.equal(lora[k], peft_state[k]) for k in lora)
    assert {k for k in state if not k.startswith("lora.")} == {
        f"camera_embedding.{k}" for k in a.camera_embedding.state_dict()
    }
    assert all(p.dtype == torch.float32 for p in a.parameters())
    torch.save(state, tmp_path / "guidance.pt")

    b = trained_guidance(core_of(model), steps=0, seed=1)
    b.load_state_dict(torch.load(tmp_path / "guidance.pt"))
    peft_b = get_peft_model_state_dict(b.core.unet, adapter_name=b.adapter)
    assert all(torch.equal(peft_b[k], peft_state[k]) for k in peft_state)
    images, cameras, _ = batch(3)
    latents = a.core.encode_images(images)
    t = torch.tensor([300, 700])
    cond = a.core.encode_prompt(["a red cube"] * 2)
    pose = cameras.c2w.reshape(2, 16)
    camera = a.camera_input(cameras)
    with torch.no_grad():
        assert torch.equal(
            a.particle_output(latents, t, cond, camera, pose), b.particle_output(latents, t, cond, camera, pose)
        )


def test_the_pretrained_pass_is_the_adapter_free_unet_bit_for_bit(model):
    """With a trained LoRA and camera embedding on the UNet, the pretrained branch (and every other user
    of the core) computes exactly what the same model without any adapter computes; the particle differs."""
    core, plain = core_of(model), core_of(model)
    guidance = trained_guidance(core)
    embedding = core.unet.class_embedding
    images, cameras, _ = batch(5)
    latents = core.encode_images(images)
    t = torch.tensor([100, 900])
    cond, uncond = core.text_conditioning(guidance.prompts(cameras))
    camera = guidance.camera_input(cameras)
    with torch.no_grad():
        for scale in (1.0, 7.5):
            ours = core.predict_noise(latents, t, cond, uncond, scale, camera)
            assert torch.equal(ours, plain.predict_noise(latents, t, cond, uncond, scale, camera))
        particle = guidance.particle_output(latents, t, cond, camera, cameras.c2w.reshape(2, 16))
        assert not torch.allclose(particle, core.unet_forward(latents, t, cond, camera), atol=1e-4)
        assert torch.equal(core.predict_noise(latents, t, cond, uncond, 7.5, camera), ours)
    assert core.unet.class_embedding is embedding  # the prior's own (or None), put back
    generator = torch.Generator().manual_seed(0)
    image = core.sample("a red cube", steps=2, generator=generator, output="pt", progress=False)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(image, plain.sample("a red cube", steps=2, generator=generator, output="pt", progress=False))


def test_gradients_reach_the_lora_and_the_camera_embedding(model):
    """The ``lora`` term trains every LoRA matrix and both camera-embedding layers (B and the embedding's
    last layer start at zero, so A and its first layer receive gradients from the second step on); the
    ``vsd`` term reaches the renders and none of the guidance's weights."""
    guidance = trained_guidance(core_of(model), steps=1)
    guidance.optimizer().zero_grad()
    images, cameras, generator = batch(7)
    images.requires_grad_(True)
    out = guidance(images, cameras, 1, generator)
    assert set(out.terms) == {"vsd", "lora"}
    out.terms["vsd"].backward(retain_graph=True)
    assert images.grad.abs().sum() > 0 and all(p.grad is None for p in guidance.parameters())
    out.terms["lora"].backward()
    for name, p in guidance.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_half_precision_unet_trains_a_float32_lora(model):
    """As on a GPU in fp16 (bf16 here: the CPU refuses fp16): the LoRA and camera embedding stay float32,
    PEFT casts the UNet's activations to them, and both terms give finite gradients."""
    core = LatentDiffusion.from_pretrained(model, device="cpu", dtype="bf16")
    guidance = VSDGuidance(core, VSDConfig(), "a red cube")
    images, cameras, generator = batch(9)
    images.requires_grad_(True)
    out = guidance(images, cameras, 0, generator)
    sum(out.terms.values()).backward()
    assert core.unet.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in guidance.parameters())
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    grads = [p.grad for p in guidance.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_two_guidances_on_one_core_have_their_own_adapters(tiny_model):
    """A fine stage's VSD on the coarse stage's core adds a second adapter; each guidance holds only its own."""
    core = core_of(tiny_model)
    a = VSDGuidance(core, VSDConfig(), "a red cube")
    b = VSDGuidance(core, VSDConfig(lora_rank=2), "a red cube")
    assert (a.adapter, b.adapter) == ("vsd0", "vsd1")
    assert not {id(p) for p in a.parameters()} & {id(p) for p in b.parameters()}
    assert next(iter(b.lora.values()))["lora_A"].weight.shape[0] == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("guidance.lora_rank=0", "lora_rank"),
        ("guidance.lr=0", "guidance.lr"),
        ("guidance.camera_dropout=1.5", "camera_dropout"),
        ("guidance.lora_t_max=2", "lora_t_max"),
    ],
)
def test_bad_vsd_settings_are_one_line_errors(tiny_model, override, message):
    with pytest.raises(UserError, match=message) as err:
        load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=[*FAST, override])
    assert "\n" not in str(err.value)


def test_a_vsd_step_changes_the_field_and_the_particle(tiny_model, tmp_path):
    cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=[*FAST, "steps=1"])
    system = DreamFusion(cfg, cfg.prompt, core_of(tiny_model), torch.device("cpu"), cfg.seed)
    trainer = Trainer(system, 1, None, torch.Generator().manual_seed(0), progress=False)
    assert set(trainer.optimizers) == {"scene", "guidance"}
    before = {k: v.clone() for k, v in system.state_dict().items()}
    logs, skipped = trainer.run_step()
    assert not skipped and logs["lora"] > 0 and logs["grad_norm"] > 0
    after = system.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in after if not torch.equal(before[k], after[k])}
    assert "renderer.geometry" in changed and "guidance.lora" in changed and "guidance.camera_embedding" in changed


def test_resume_gives_the_uninterrupted_vsd_run(tiny_model, tmp_path, monkeypatch):
    """A run stopped inside step 3 and resumed from the checkpoint of step 2 ends with the uninterrupted
    run's state: scene, LoRA and camera embedding, both optimizers' moments, the mesh, byte for byte."""
    overrides = [*FAST, "steps=5", "checkpoint_every=2", "renderer.grid.update_every=3"]
    cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=overrides)
    run_txt2mesh(cfg, tmp_path / "a", progress=False)
    real = VSDGuidance.forward

    def stop_at_step_3(self, images, cameras, step, generator):
        if step == 3:
            raise KeyboardInterrupt
        return real(self, images, cameras, step, generator)

    monkeypatch.setattr(VSDGuidance, "forward", stop_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_txt2mesh(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(VSDGuidance, "forward", real)
    run_txt2mesh(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoints" / "coarse.pt", weights_only=False) for d in "ab")
    assert a["step"] == b["step"] == 5 and torch.equal(a["generator"], b["generator"])
    assert any(k.startswith("guidance.lora.") for k in a["task"])
    for k in a["task"]:
        assert torch.equal(a["task"][k], b["task"][k]), k
    for name in ("scene", "guidance"):
        sa, sb = a["optimizers"][name]["state"], b["optimizers"][name]["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert (tmp_path / "a" / "mesh.ply").read_bytes() == (tmp_path / "b" / "mesh.ply").read_bytes()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["steps"] == 5


def test_the_fine_mesh_stage_runs_vsd_with_a_fresh_lora(tiny_model, tmp_path):
    """VSD in both stages of a coarse-to-fine run: the fine stage's guidance adds its own adapter to the
    coarse stage's core, and each stage's checkpoint holds its own LoRA."""
    stages = [o.replace("guidance.kind=target", "guidance.kind=vsd") for o in FINE_STAGE if "denoise_steps" not in o]
    cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=[*FAST, "steps=2", *stages])
    assert cfg.fine.guidance.kind == "vsd"
    metrics = run_txt2mesh(cfg, tmp_path / "run", progress=False)
    assert metrics["stages"]["fine"]["steps"] == 6
    coarse, fine = (
        torch.load(tmp_path / "run" / "checkpoints" / f"{s}.pt", weights_only=False) for s in ("coarse", "fine")
    )
    lora = [k for k in fine["task"] if k.startswith("guidance.lora.")]
    assert lora and set(lora) <= set(coarse["task"]) and set(fine["optimizers"]) == {"scene", "guidance"}
    assert any(not torch.equal(coarse["task"][k], fine["task"][k]) for k in lora)


def _vsd_particle_script():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "vsd_particle.py"
    spec = importlib.util.spec_from_file_location("vsd_particle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_particle_diagnostic_sees_a_fresh_particle_as_the_prior_and_a_trained_one_apart(tiny_model, tmp_path):
    """benchmarks/vsd_particle.py: before any step the particle is the conditional prior (VSD's rest of
    the gradient is exactly 0, its noise error SDS's); after a finished run it has moved."""
    script = _vsd_particle_script()
    cfg = load_txt2mesh_config("a red cube", model=str(tiny_model), overrides=[*FAST, "steps=3"])
    fresh = DreamFusion(cfg, cfg.prompt, core_of(tiny_model), torch.device("cpu"), cfg.seed)
    parts = script.particle_parts(fresh, 2, 1, (0.3,), torch.Generator().manual_seed(0))[0.3]
    assert parts["vsd_rest"] == 0.0 and parts["particle_err"] == parts["sds_rest"] > 0 and parts["cfg"] > 0
    run_txt2mesh(cfg, tmp_path / "run", progress=False)
    trained = load_finished_run(tmp_path / "run")
    parts = script.particle_parts(trained, 2, 1, (0.3,), torch.Generator().manual_seed(0))[0.3]
    assert parts["vsd_rest"] > 0 and parts["particle_err"] != parts["sds_rest"]
