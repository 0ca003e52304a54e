"""The view-conditioned prior: training (checkpoints, resume), the eval, the CLI's --kind."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_helpers import check_resume_after_interrupt

from dream3d.cameras import CameraRanges
from dream3d.cli import main
from dream3d.diffusion.framing import frame_object, on_background
from dream3d.diffusion.loading import bundled_prior_path
from dream3d.diffusion.zero123 import ViewDiffusion
from dream3d.prior.view_data import HELD_OUT_CAMERAS, held_out_camera, near_held_out, training_cameras
from dream3d.prior.view_eval import TURN_AZIMUTHS, ViewEvalConfig, evaluate_view_prior, turn_scores
from dream3d.prior.view_train import BalanceStage, ViewPriorTrainConfig, pair_weights, train_view_prior
from dream3d.shapes.objects import ShapeObject
from dream3d.shapes.render import render

TINY = dict(
    views_per_object=3,
    objects=3,
    unet_channels=[16, 32],
    unet_cross_attention_blocks=[False, True],
    unet_heads=2,
    clip_hidden=16,
    clip_layers=1,
    clip_heads=2,
    clip_patch=8,
    embed_dim=16,
    steps=6,
    batch=4,
    warmup_steps=1,
    checkpoint_every=3,
    threads=1,  # the tiny model: two threads only fight over a shared CPU
    balance=BalanceStage(steps=0),  # one stage (the balancing stage has its own test)
)


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """The tiny trainings set torch's thread count (``threads=1``); the tests after these keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_view_prior(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("view") / "prior"
    record = train_view_prior(ViewPriorTrainConfig(**TINY, vae_from=str(tiny_model)), folder, progress=False)
    return folder, record


def test_training_writes_the_layout_and_its_record(tiny_view_prior, tiny_model):
    folder, record = tiny_view_prior
    for part in ("unet", "vae", "image_encoder", "cc_projection", "feature_extractor", "scheduler"):
        assert (folder / part).is_dir()
    assert json.loads((folder / "view.json").read_text())["object_fraction"] == 0.625
    saved = json.loads((folder / "train" / "train.json").read_text())
    assert saved["stages"]["view"]["steps"] == 6 and saved["seed"] == 0
    assert [tuple(c.values()) for c in saved["held_out"]["cameras"]] == list(HELD_OUT_CAMERAS)
    assert (folder / "train" / "checkpoints" / "view.pt").is_file()
    core = ViewDiffusion.from_pretrained(folder, device="cpu")
    assert core.variant == "stable-zero123" and core.unet.config.in_channels == 8
    vae = "vae/diffusion_pytorch_model.safetensors"  # the VAE is the given model's, untouched
    a, b = load_file(tiny_model / vae), load_file(folder / vae)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_training_view_is_near_a_held_out_camera():
    cams = training_cameras(400, torch.Generator().manual_seed(0), CameraRanges(), 32)
    assert len(cams) == 400 and {(c.distance, c.fov_deg) for c in cams} == {(1.8, 50.0)}
    assert not near_held_out([c.elevation_deg for c in cams], [c.azimuth_deg for c in cams]).any()
    assert near_held_out([HELD_OUT_CAMERAS[0][0] + 3.0], [HELD_OUT_CAMERAS[0][1]]).all()


def test_interrupted_training_resumes_to_the_same_weights(tiny_view_prior, tiny_model, tmp_path, monkeypatch):
    cfg = ViewPriorTrainConfig(**TINY, vae_from=str(tiny_model))
    check_resume_after_interrupt(  # at the 5th step: the checkpoint of step 3 stays
        train_view_prior,
        cfg,
        tiny_view_prior[0],
        tmp_path / "b",
        5,
        ("unet", "image_encoder", "cc_projection"),
        monkeypatch,
    )


def test_eval_runs_on_a_tiny_model(tiny_view_prior, tmp_path):
    cfg = ViewEvalConfig(model=str(tiny_view_prior[0]), steps=2, objects=2, targets=4)
    record = evaluate_view_prior(cfg, tmp_path, progress=False)
    assert record["samples"] == 8
    assert record["turn"]["samples"] == 2 * 4 * 4  # the two cubes, four relative azimuths, four samples each
    assert 0.0 <= record["turn"]["turned"] <= 1.0 and 0.0 <= record["turn"]["unturned"] <= 1.0
    assert set(record["scores"]) == {"psnr", "silhouette_iou", "shape", "colour"}
    assert 0.0 <= record["scores"]["silhouette_iou"] <= 1.0
    assert record["ground_truth_read"] == {"shape": 1.0, "colour": 1.0}
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "eval.json").is_file()
    assert np.isfinite(record["baseline_conditioning_image"]["psnr"])


def test_turn_check_tells_a_turned_cube_from_a_copied_view():
    objects = [ShapeObject("cube", "red"), ShapeObject("cube", "blue")]
    cond = held_out_camera(0)
    cams = [replace(cond, azimuth_deg=cond.azimuth_deg + a) for a in TURN_AZIMUTHS]

    def views(azimuth=None):  # object-major, one per camera: the truth, or every view unturned; twice over
        one = [
            torch.from_numpy(render(o, c if azimuth is None else replace(c, azimuth_deg=azimuth), ss=4).rgb)
            .permute(2, 0, 1)
            .float()
            for o in objects
            for c in cams
        ]
        return torch.stack(one + one)

    right, copied = turn_scores(views(), objects, cams, cond, 0.1), turn_scores(views(35.0), objects, cams, cond, 0.1)
    assert right["turned"] == 1.0 and right["unturned"] < 0.95
    assert copied["unturned"] == 1.0 and copied["turned"] == pytest.approx(right["unturned"])


@pytest.mark.parametrize("action", ["train", "eval"])
def test_bad_kind_is_one_line_exit_2(tmp_path, capsys, action):
    code = main(["prior", action, "--kind", "sound", "-o", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--kind text or --kind view" in err


def test_view_train_bad_config_is_one_line_exit_2(tmp_path, capsys):
    code = main(["prior", "train", "--kind", "view", "-o", str(tmp_path / "p"), "cond_dropout=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cond_dropout" in err


def test_bundled_view_prior_loads_and_keeps_the_colour():
    path = bundled_prior_path("shapes-view")
    assert (path / "model_index.json").is_file(), "the bundled view prior is missing from the package"
    size_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    assert size_mb <= 30 and not (path / "train").exists()
    core = ViewDiffusion.from_pretrained("shapes-view", device="cpu")
    assert core.default_size == 32 and core.variant == "stable-zero123"
    cam = held_out_camera(0, 128)
    out = render(ShapeObject("sphere", "blue"), cam)
    rgba = torch.cat([torch.from_numpy(out.rgb).permute(2, 0, 1), torch.from_numpy(out.alpha)[None]])
    image = on_background(frame_object(rgba, core.object_fraction, size=32))[None]
    camera = core.relative_camera((cam.elevation_deg, cam.azimuth_deg, 1.8), (10.0, 120.0, 1.8))
    sample = core.sample(image, camera, num_steps=10, scheduler="dpm", generator=torch.Generator().manual_seed(0))
    pixels = sample[0].permute(1, 2, 0).reshape(-1, 3)
    fg = pixels[pixels.min(-1).values < 0.7].mean(0)  # not the white background
    assert fg[2] > fg[0] + 0.2 and fg[2] > fg[1] + 0.2


def test_balancing_stage_trains_after_the_first_and_weights_pairs_by_shape(tiny_model, tmp_path):
    balance = BalanceStage(steps=2, shape_weights={"sphere": 4.0})
    cfg = ViewPriorTrainConfig(**{**TINY, "objects": 7, "steps": 2, "balance": balance}, vae_from=str(tiny_model))
    record = train_view_prior(cfg, tmp_path / "p", progress=False)
    assert record["stages"]["view"]["steps"] == 2 and record["stages"]["balance"]["steps"] == 2
    assert (tmp_path / "p" / "train" / "checkpoints" / "balance.pt").is_file()
    # objects 0-5 are the six cubes, object 6 the first sphere: 4x as likely as each cube
    weights = pair_weights(7, cfg.balance.shape_weights)
    assert weights.tolist() == [1.0] * 6 + [4.0]
    draws = torch.multinomial(weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs(float((draws == 6).float().mean()) - 0.4) < 0.02


def test_balancing_stage_rejects_unknown_shapes(tmp_path, capsys):
    code = main(["prior", "train", "--kind", "view", "-o", str(tmp_path / "p"), "balance.shape_weights.cubes=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "shape_weights" in err and "cube" in err
