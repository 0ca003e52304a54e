"""The bundled prior and its training/evaluation code."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file
from training_helpers import check_resume_after_interrupt

from dream3d.cli import main
from dream3d.diffusion.build import build_components
from dream3d.diffusion.core import LatentDiffusion
from dream3d.diffusion.loading import bundled_prior_path
from dream3d.diffusion.schedulers import make_scheduler
from dream3d.errors import UserError
from dream3d.prior.evaluate import PriorEvalConfig, evaluate_prior
from dream3d.prior.train import PriorTrainConfig, model_spec, train_prior, vae_stage
from dream3d.trainer import StagedRun

TINY = dict(
    views_per_object=1,
    ss=1,
    vae_channels=[8, 16],
    vae_steps=4,
    vae_batch=4,
    unet_channels=[16, 32],
    unet_cross_attention_blocks=[False, True],
    unet_heads=2,
    text_hidden=16,
    text_layers=1,
    text_heads=2,
    unet_steps=6,
    batch=4,
    warmup_steps=1,
    checkpoint_every=100,
)


def test_bundled_prior_loads_in_diffusers_and_core():
    path = bundled_prior_path()
    assert (path / "model_index.json").is_file(), "the bundled prior is missing from the package"
    size_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "train" not in f.parts) / 2**20
    assert size_mb <= 30
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    core = LatentDiffusion.from_pretrained("shapes", device="cpu")
    assert core.default_size == 32 and core.vae_scale_factor == 4
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = core.sample("a red cube, side view", steps=4, scheduler="ddim", generator=g(), output="np", progress=False)
    pipe.scheduler = make_scheduler("ddim", core.scheduler_config)
    # diffusers' pipeline passes no class labels; v2 takes the camera there, and "no camera" is zeros
    assert core.takes_camera and pipe.unet.config.class_embed_type == "projection"
    width = pipe.unet.config.projection_class_embeddings_input_dim
    forward = pipe.unet.forward
    pipe.unet.forward = lambda x, t, **kw: forward(x, t, class_labels=torch.zeros(x.shape[0], width), **kw)
    b = pipe("a red cube, side view", num_inference_steps=4, generator=g(), output_type="np").images
    assert np.abs((a * 255).round() - (b * 255).round()).max() <= 1


def test_prior_is_red_for_red_prompts():
    """A cheap sanity check of the trained weights: "a red ..." is mostly red, "a blue ..." mostly blue."""
    core = LatentDiffusion.from_pretrained("shapes", device="cpu")
    imgs = core.sample(
        ["a red sphere, front view", "a blue sphere, front view"],
        steps=10,
        scheduler="dpm",
        generator=torch.Generator().manual_seed(0),
        output="np",
        progress=False,
    )
    fg = lambda im: im[(im.min(-1) < 0.7)]  # noqa: E731  (pixels that are not white background)
    red, blue = fg(imgs[0]).mean(0), fg(imgs[1]).mean(0)
    assert red[0] > red[2] + 0.2
    assert blue[2] > blue[0] + 0.2


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_few_training_steps_reduce_the_loss(tmp_path, prediction_type):
    cfg = PriorTrainConfig(
        **{**TINY, "vae_steps": 60, "unet_steps": 60, "vae_lr": 3e-3, "lr": 3e-3, "prediction_type": prediction_type}
    )
    record = train_prior(cfg, tmp_path / "prior", progress=False)
    scheduler = json.loads((tmp_path / "prior" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == prediction_type
    vae, unet = record["stages"]["vae"], record["stages"]["unet"]
    assert vae["final_mse"] < 0.8 * vae["first_mse"]
    assert unet["final_loss"] < unet["first_loss"]
    assert (tmp_path / "prior" / "model_index.json").is_file()
    saved = json.loads((tmp_path / "prior" / "train" / "train.json").read_text())
    assert saved["stages"]["unet"]["steps"] == 60


def test_vae_rgb_preview_channels_follow_the_image(tmp_path):
    """With ``vae_rgb_weight`` the first three latent channels learn the image box-averaged to latent size."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 1, 1, generator=g).expand(16, 3, 16, 16).clone()  # flat colours
    images[:, :, 4:12, 4:12] = torch.rand(16, 3, 1, 1, generator=g)  # a square of another colour

    def preview_error(weight):
        cfg = PriorTrainConfig(**{**TINY, "size": 16, "vae_steps": 80, "vae_lr": 3e-3, "vae_rgb_weight": weight})
        vae = build_components(model_spec(cfg), seed=0)["vae"]
        StagedRun([vae_stage(lambda: vae, lambda: images, cfg)], tmp_path / str(weight), progress=False).run()
        with torch.no_grad():
            latents = vae.encode(images * 2 - 1).latent_dist.mean
        preview = torch.nn.functional.avg_pool2d(images * 2 - 1, images.shape[-1] // latents.shape[-1])
        return float(torch.nn.functional.mse_loss(latents[:, :3], preview))

    tied, free = preview_error(1.0), preview_error(0.0)
    assert tied < 0.1 * free  # measured: 0.08 vs 2.5 after 80 steps


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = PriorTrainConfig(**TINY)
    train_prior(cfg, tmp_path / "a", progress=False)
    vae_calls = (2 if cfg.vae_rgb_weight else 1) * cfg.vae_steps  # VAE steps: 1-2 MSEs each
    check_resume_after_interrupt(  # at the 4th UNet step
        train_prior, cfg, tmp_path / "a", tmp_path / "b", vae_calls + 4, ("unet", "text_encoder"), monkeypatch
    )


def test_eval_runs_on_a_small_subset(tiny_model, tmp_path):
    cfg = PriorEvalConfig(
        model=str(tiny_model), samples_per_prompt=1, steps=2, objects=2, classifier_check_views=2, classifier_steps=30
    )
    record = evaluate_prior(cfg, tmp_path, progress=False)
    assert record["samples"] == 2 * 4
    assert set(record["scores"]) == {"colour", "shape"}  # no cone/cylinder among the first two objects
    assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    by_colour = record["colour_accuracy_by_colour"]  # the first two objects (red and green cubes), 4 samples each
    assert set(by_colour) == {"red", "green"} and all(v * 4 == int(v * 4) for v in by_colour.values())
    assert record["config"]["guidance_rescale"] == 0.7  # the default: the v-prediction prior's colours
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "eval.json").is_file()


@pytest.mark.parametrize(
    "override, message",
    [
        ("vae_rgb_weight=-1", "vae_rgb_weight must be >= 0"),
        ("prediction_type=magic", "prediction_type"),
        ("vae_from=/no/such/model", "/no/such/model"),
    ],
)
def test_prior_train_bad_config_is_one_line_exit_2(tmp_path, capsys, override, message):
    code = main(["prior", "train", "-o", str(tmp_path / "p"), override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "p" / "train" / "checkpoints").exists()


def test_training_on_the_vae_of_another_model_skips_stage_1(tmp_path):
    train_prior(PriorTrainConfig(**TINY), tmp_path / "a", progress=False)
    record = train_prior(
        PriorTrainConfig(**{**TINY, "vae_from": str(tmp_path / "a"), "seed": 1}), tmp_path / "b", progress=False
    )
    assert record["stages"]["vae"]["from"] == str(tmp_path / "a")
    assert not (tmp_path / "b" / "train" / "checkpoints" / "vae.pt").exists()
    name = "vae/diffusion_pytorch_model.safetensors"
    wa, wb = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(UserError, match="vae_channels"):
        train_prior(
            PriorTrainConfig(**{**TINY, "vae_channels": [8, 8], "vae_from": str(tmp_path / "a")}),
            tmp_path / "c",
            progress=False,
        )
