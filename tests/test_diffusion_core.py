"""The latent diffusion core on a tiny random model: loading, schedulers, seed contract, guidance math."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from dream3d.diffusion.core import cfg_combine, cfg_rescale
from dream3d.diffusion.schedulers import SCHEDULERS, make_scheduler


@pytest.fixture(scope="module")
def pipe(tiny_model):
    p = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


def test_loads_folder_in_fp32_on_cpu(tiny_core):
    assert tiny_core.device.type == "cpu"
    assert tiny_core.dtype == torch.float32
    assert tiny_core.vae_scale_factor == 2
    assert tiny_core.default_size == 32
    assert all(not p.requires_grad for p in tiny_core.unet.parameters())


@pytest.mark.parametrize(
    "scheduler,rescale", [(name, 0.0) for name in list(SCHEDULERS) + [None]] + [("ddim", 0.7), ("dpm", 0.7)]
)
def test_seed_contract_matches_diffusers_pipeline(tiny_core, pipe, scheduler, rescale):
    """--seed S == StableDiffusionPipeline with torch.Generator('cpu').manual_seed(S) (and its guidance_rescale)."""
    kwargs = dict(negative_prompt="blue", guidance_scale=5.0, height=32, width=48, guidance_rescale=rescale)
    ours = tiny_core.sample(
        "a red cube",
        steps=5,
        scheduler=scheduler,
        num_images=2,
        output="np",
        progress=False,
        generator=torch.Generator("cpu").manual_seed(11),
        **kwargs,
    )
    pipe.scheduler = make_scheduler(scheduler, tiny_core.scheduler_config)
    theirs = pipe(
        "a red cube",
        num_inference_steps=5,
        num_images_per_prompt=2,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(11),
        **kwargs,
    ).images
    ours_u8 = (ours * 255).round().astype(np.int16)
    theirs_u8 = (theirs * 255).round().astype(np.int16)
    assert ours.shape == (2, 32, 48, 3)
    assert np.abs(ours_u8 - theirs_u8).max() <= 1


def test_different_seeds_and_schedulers_differ(tiny_core):
    def run(seed, scheduler="ddim"):
        return tiny_core.sample(
            "a red cube",
            steps=3,
            scheduler=scheduler,
            output="np",
            progress=False,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b = run(0), run(1)
    assert np.abs(a - b).max() > 1e-3
    assert np.array_equal(run(0), a)  # same seed, same image
    assert np.abs(run(0, "euler-a") - a).max() > 1e-3


def test_each_scheduler_builds_from_model_schedule(tiny_core):
    for name in SCHEDULERS:
        s = make_scheduler(name, tiny_core.scheduler_config)
        assert s.config.num_train_timesteps == tiny_core.num_train_timesteps
        assert not getattr(s.config, "clip_sample", False)
        s.set_timesteps(4)
        assert len(s.timesteps) >= 4
    assert type(make_scheduler("dpm", tiny_core.scheduler_config)).__name__ == "DPMSolverMultistepScheduler"
    assert make_scheduler("dpm", tiny_core.scheduler_config).config.algorithm_type == "dpmsolver++"


def test_cfg_combine_convention():
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    assert torch.equal(cfg_combine(u, c, 1.0), c)
    assert torch.equal(cfg_combine(u, c, 0.0), u)
    assert torch.allclose(cfg_combine(u, c, 7.5), u + 7.5 * (c - u))


def test_cfg_rescale_is_diffusers_formula():
    g = torch.Generator().manual_seed(4)
    u, c = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g) * 2
    guided = cfg_combine(u, c, 7.5)
    for r in (0.0, 0.3, 0.7, 1.0):
        assert torch.allclose(cfg_rescale(guided, c, r), rescale_noise_cfg(guided, c, r), atol=1e-6)
    full = cfg_rescale(guided, c, 1.0)  # rescale 1: the conditional output's spread, per sample
    assert torch.allclose(full.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)), rtol=1e-5)
    assert cfg_rescale(guided, c, 0.0) is guided


def test_predict_noise_rescales_the_raw_output(tiny_core, monkeypatch):
    """Guidance rescale acts on the model's output (v for a v-prediction model), then converts to epsilon."""
    monkeypatch.setitem(tiny_core.scheduler_config, "prediction_type", "v_prediction")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([300, 900])
    cond, uncond = tiny_core.text_conditioning(["a red cube", "a blue sphere"])
    with torch.no_grad():
        v_c = tiny_core.unet_forward(x, t, cond)
        v_u = tiny_core.unet_forward(x, t, uncond)
        got = tiny_core.predict_noise(x, t, cond, uncond, 7.5, guidance_rescale=0.7)
        plain = tiny_core.predict_noise(x, t, cond, uncond, 7.5)
    want = tiny_core.to_epsilon(cfg_rescale(cfg_combine(v_u, v_c, 7.5), v_c, 0.7), x, t)
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_predict_noise_batches_branches_like_separate_calls(tiny_core):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([100, 700])
    cond, uncond = tiny_core.text_conditioning(["a red cube", "a blue sphere"])
    with torch.no_grad():
        eps_c = tiny_core.predict_noise(x, t, cond)
        eps_u = tiny_core.predict_noise(x, t, uncond)
        guided = tiny_core.predict_noise(x, t, cond, uncond, guidance_scale=7.5)
        only_cond = tiny_core.predict_noise(x, t, cond, uncond, guidance_scale=1.0)
    assert torch.allclose(guided, eps_u + 7.5 * (eps_c - eps_u), atol=1e-4)  # batched vs separate: float noise only
    assert torch.allclose(only_cond, eps_c, atol=1e-6)
    assert not torch.allclose(eps_c, eps_u)


def test_prompt_cache_encodes_each_text_once(tiny_core, monkeypatch):
    tiny_core._prompt_cache.clear()
    calls = []
    real = tiny_core._encode_texts
    monkeypatch.setattr(tiny_core, "_encode_texts", lambda texts: calls.append(list(texts)) or real(texts))
    a = tiny_core.encode_prompt(["a red cube", "a red cube", "a cone"])
    b = tiny_core.encode_prompt("a cone")
    assert calls == [["a red cube", "a cone"]]
    assert a.shape[0] == 3 and torch.equal(a[2], b[0]) and torch.equal(a[0], a[1])


def test_vae_round_trip_shapes_and_gradients(tiny_core):
    images = torch.rand(2, 3, 32, 48, requires_grad=True)
    latents = tiny_core.encode_images(images)
    assert latents.shape == (2, 4, 16, 24)
    decoded = tiny_core.decode_latents(latents)
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1
    decoded.mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    sampled = tiny_core.encode_images(images.detach(), generator=torch.Generator().manual_seed(0), sample=True)
    assert not torch.allclose(sampled, latents.detach())


def test_add_noise_and_predict_x0_invert_each_other(tiny_core):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    noisy = tiny_core.add_noise(x0, noise, t)
    ref = make_scheduler("ddpm", tiny_core.scheduler_config).add_noise(x0, noise, t)
    assert torch.allclose(noisy, ref, atol=1e-5)
    assert torch.allclose(tiny_core.predict_x0(noisy, noise, t), x0, atol=1e-3)


def test_v_prediction_converts_to_epsilon(tiny_core, monkeypatch):
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([200, 800])
    noisy = tiny_core.add_noise(x0, noise, t)
    abar = tiny_core.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    monkeypatch.setitem(tiny_core.scheduler_config, "prediction_type", "v_prediction")
    assert torch.allclose(tiny_core.to_epsilon(v, noisy, t), noise, atol=1e-5)


def test_negative_prompt_changes_the_image(tiny_core):
    def run(neg):
        return tiny_core.sample(
            "a red cube",
            negative_prompt=neg,
            steps=3,
            guidance_scale=7.5,
            scheduler="ddim",
            output="np",
            progress=False,
            generator=torch.Generator().manual_seed(0),
        )

    assert np.abs(run(None) - run("a blue sphere")).max() > 1e-3
