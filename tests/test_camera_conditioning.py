"""Camera-conditioned priors: camera features, the model layout, sampling at a camera, guidance passing
the render's cameras, and training one (tiny random models, nothing downloaded)."""

import json
import math

import pytest
import torch
from diffusers import StableDiffusionPipeline

from dream3d.cameras import CAMERA_FEATURES, Camera, Cameras, camera_features, mirror_features
from dream3d.cli import main
from dream3d.diffusion.build import ModelSpec, build_random_model
from dream3d.diffusion.core import LatentDiffusion
from dream3d.errors import ModelLoadError, UserError
from dream3d.guidance import SDSConfig, SDSGuidance
from dream3d.prior.evaluate import (
    CAMERA_AZIMUTHS,
    CAMERA_VIEW,
    PriorEvalConfig,
    azimuth_error,
    camera_following,
    evaluate_prior,
    format_table,
)
from dream3d.prior.train import PriorTrainConfig, train_prior
from dream3d.shapes.objects import ShapeObject
from dream3d.shapes.render import render


@pytest.fixture(scope="module")
def camera_model(tmp_path_factory):
    return build_random_model(tmp_path_factory.mktemp("models") / "tiny-camera", ModelSpec(camera_input=True), seed=0)


@pytest.fixture(scope="module")
def camera_core(camera_model):
    return LatentDiffusion.from_pretrained(camera_model, device="cpu")


def test_camera_features_and_the_mirror():
    f = camera_features([30.0, 30.0], [60.0, -60.0], [1.5, 2.0], [40.0, 70.0])
    assert f.shape == (2, len(CAMERA_FEATURES)) == (2, 11) and f.dtype == torch.float32
    e, a = math.radians(30), math.radians(60)
    harmonics = [g(k * a) for k in (1, 2, 4) for g in (math.sin, math.cos)]
    torch.testing.assert_close(f[0], torch.tensor([math.sin(e), math.cos(e), *harmonics, -1.0, -1.0, 1.0]))
    torch.testing.assert_close(mirror_features(f[:1])[0, :8], f[1, :8])  # the view from -a is the mirror image
    cube_period = camera_features([30.0], [60.0 + 90.0], [1.5], [40.0])  # the 4th harmonic repeats every 90 degrees
    torch.testing.assert_close(cube_period[0, 6:8], f[0, 6:8], atol=1e-6, rtol=0)
    cams = [Camera(30.0, 60.0, 1.5, 40.0, 8, 8), Camera(30.0, -60.0, 2.0, 70.0, 8, 8)]
    torch.testing.assert_close(Cameras.stack(cams).features(), f)


def test_a_camera_model_loads_in_diffusers_and_samples_at_a_camera(camera_model, camera_core, tiny_core):
    assert json.loads((camera_model / "camera.json").read_text())["features"] == list(CAMERA_FEATURES)
    pipe = StableDiffusionPipeline.from_pretrained(camera_model, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.class_embed_type == "projection"
    assert camera_core.takes_camera and not tiny_core.takes_camera

    def sample(camera):
        return camera_core.sample(
            "a red cube",
            steps=2,
            generator=torch.Generator().manual_seed(0),
            output="pt",
            progress=False,
            camera=camera,
        )

    front, side = camera_features([15.0, 15.0], [0.0, 90.0], [1.8, 1.8], [50.0, 50.0])
    assert not torch.equal(sample(front), sample(side))  # the camera reaches the UNet
    torch.testing.assert_close(sample(None), sample(torch.zeros(len(CAMERA_FEATURES))))  # no camera: zeros
    with pytest.raises(UserError, match="takes no camera"):
        tiny_core.sample("a red cube", steps=1, progress=False, camera=front)


def test_txt2img_camera_option(camera_model, tiny_model, tmp_path, capsys):
    assert (
        main(
            [
                "txt2img",
                "a red cube",
                "--model",
                str(camera_model),
                "--steps",
                "2",
                "--camera",
                "15,30,1.8,50",
                "-o",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "ok" / "txt2img.json").read_text())
    assert record["config"]["camera"] == [15.0, 30.0, 1.8, 50.0] and record["resolved"]["takes_camera"]
    capsys.readouterr()
    for model, camera, message in [
        (tiny_model, "15,30,1.8,50", "takes no camera"),
        (camera_model, "15,30", "must be four numbers"),
        (camera_model, "95,0,1.8,50", "elevation 95.0 is outside"),
    ]:
        code = main(["txt2img", "a red cube", "--model", str(model), "--camera", camera, "-o", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_guidance_gives_a_camera_model_the_cameras_and_other_models_the_view_words(camera_core, tiny_core, monkeypatch):
    cameras = Cameras.stack([Camera(20.0, 100.0, 1.7, 45.0, 16, 16), Camera(70.0, -10.0, 1.9, 60.0, 16, 16)])
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    for core, words in ((camera_core, False), (tiny_core, True)):
        seen = {}
        real = core.unet_forward

        def spy(latents, t, embeddings, camera=None, real=real):
            seen["camera"] = camera
            return real(latents, t, embeddings, camera)

        monkeypatch.setattr(core, "unet_forward", spy)
        guidance = SDSGuidance(core, SDSConfig(guidance_scale=7.5), "a red cube")
        assert guidance.prompts(cameras) == (
            ["a red cube, side view", "a red cube, overhead view"] if words else ["a red cube", "a red cube"]
        )
        out = guidance(images, cameras, 0, torch.Generator().manual_seed(0))
        out.terms["sds"].backward()
        if words:
            assert seen["camera"] is None
        else:  # both branches of classifier-free guidance see the render's camera
            torch.testing.assert_close(seen["camera"], torch.cat([cameras.features()] * 2))
        assert images.grad is not None and images.grad.abs().sum() > 0
        images.grad = None


def test_class_embeddings_of_another_kind_are_refused(tmp_path):
    folder = build_random_model(tmp_path / "odd", ModelSpec(camera_input=True), seed=0)
    (folder / "camera.json").unlink()
    with pytest.raises(ModelLoadError, match="class embeddings of an unknown kind"):
        LatentDiffusion.from_pretrained(folder, device="cpu")


def test_training_a_camera_conditioned_prior(tmp_path):
    tiny = dict(
        views_per_object=1,
        ss=1,
        vae_channels=[8, 16],
        vae_steps=3,
        vae_batch=4,
        unet_channels=[16, 32],
        unet_cross_attention_blocks=[False, True],
        unet_heads=2,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        unet_steps=4,
        batch=8,
        warmup_steps=1,
        checkpoint_every=100,
        camera_input=True,
    )
    record = train_prior(PriorTrainConfig(**tiny), tmp_path / "prior", progress=False)
    assert record["stages"]["unet"]["steps"] == 4
    core = LatentDiffusion.from_pretrained(tmp_path / "prior", device="cpu")
    assert core.takes_camera
    with pytest.raises(UserError, match="camera_dropout must be in"):
        PriorTrainConfig(camera_dropout=1.5)


def test_prior_eval_scores_camera_following_for_camera_models(camera_model, tmp_path):
    assert azimuth_error(100.0, 15.0) == 5.0 and azimuth_error(-80.0, 15.0) == 5.0  # modulo the cube's 90 degrees
    assert azimuth_error(60.0, 15.0) == 45.0
    cfg = PriorEvalConfig(
        model=str(camera_model), samples_per_prompt=1, steps=2, objects=1, classifier_check_views=2, classifier_steps=30
    )
    record = evaluate_prior(cfg, tmp_path, progress=False)
    follow = record["camera_following"]
    assert follow["samples"] == len(CAMERA_AZIMUTHS) and 0.0 <= record["scores"]["camera"] <= 1.0
    assert (tmp_path / "camera-samples.png").is_file() and "camera" in format_table(record)


@pytest.mark.parametrize("offset, expected", [(0.0, 1.0), (90.0, 1.0), (10.0, 1.0), (45.0, 0.0)])
def test_camera_following_scores_a_model_that_draws_the_asked_view(
    camera_core, tmp_path, monkeypatch, offset, expected
):
    """A stand-in model that draws the true cube at the asked azimuth plus ``offset``: within 15 degrees
    modulo 90 counts as following."""
    v = CAMERA_VIEW

    def draws_the_cube(prompt, camera=None, num_images=1, **kwargs):
        azimuth = math.degrees(math.atan2(float(camera[0, 2]), float(camera[0, 3])))
        cam = Camera(v["elevation"], azimuth + offset, v["distance"], v["fov"], 32, 32)
        return torch.from_numpy(render(ShapeObject("cube", "red"), cam, ss=4).rgb).permute(2, 0, 1)[None]

    monkeypatch.setattr(camera_core, "sample", draws_the_cube)
    result = camera_following(camera_core, PriorEvalConfig(objects=1, samples_per_prompt=1), tmp_path, progress=False)
    assert result["score"] == expected
