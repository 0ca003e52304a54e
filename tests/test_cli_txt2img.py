"""``dream3d txt2img``: outputs, the parameter record, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dream3d import txt2img
from dream3d.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_writes_pngs_and_json(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        capsys,
        "txt2img",
        "a red cube",
        "--model",
        str(tiny_model),
        "--steps",
        "3",
        "--seed",
        "5",
        "--num-images",
        "2",
        "--scheduler",
        "euler",
        "--width",
        "48",
        "-o",
        str(out),
    )
    assert code == 0
    record = json.loads((out / "txt2img.json").read_text())
    assert record["config"]["seed"] == 5 and record["config"]["scheduler"] == "euler"
    assert record["config"]["steps"] == 3 and record["config"]["prompt"] == "a red cube"
    assert record["resolved"]["device"] == "cpu" and record["resolved"]["dtype"] == "fp32"
    assert record["images"] == ["image-000.png", "image-001.png"]
    sizes = {Image.open(out / name).size for name in record["images"]}
    assert sizes == {(48, 32)}
    assert str(out) in stdout


def test_python_api_matches_cli(tiny_model, tmp_path, capsys):
    images = txt2img("a red cube", model=str(tiny_model), steps=3, seed=5, scheduler="euler", progress=False)
    run_cli(
        capsys,
        "txt2img",
        "a red cube",
        "--model",
        str(tiny_model),
        "--steps",
        "3",
        "--seed",
        "5",
        "--scheduler",
        "euler",
        "-o",
        str(tmp_path),
    )
    assert np.array_equal(np.asarray(images[0]), np.asarray(Image.open(tmp_path / "image-000.png")))


def test_guidance_rescale_reaches_the_sampler(tiny_model, tmp_path, capsys):
    common = ["txt2img", "a red cube", "--model", str(tiny_model), "--steps", "3", "--guidance", "9"]
    run_cli(capsys, *common, "-o", str(tmp_path / "plain"))
    code, _, _ = run_cli(capsys, *common, "--guidance-rescale", "0.7", "-o", str(tmp_path / "rescaled"))
    assert code == 0
    record = json.loads((tmp_path / "rescaled" / "txt2img.json").read_text())
    assert record["config"]["guidance_rescale"] == 0.7
    plain = np.asarray(Image.open(tmp_path / "plain" / "image-000.png"), dtype=np.int16)
    rescaled = np.asarray(Image.open(tmp_path / "rescaled" / "image-000.png"), dtype=np.int16)
    assert np.abs(plain - rescaled).max() > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/model"], "does not exist"),
        (["--model", "{not_sd}"], "not a Stable Diffusion model in diffusers layout"),
        (["--model", "someone/not-cached-model"], "HF_HUB_OFFLINE"),
        (["--model", "{tiny}", "--height", "33"], "not a positive multiple of the VAE factor 2"),
        (["--model", "{tiny}", "--steps", "0"], "steps must be at least 1"),
        (["--model", "{tiny}", "--guidance", "-1"], "guidance must be >= 0"),
        (["--model", "{tiny}", "--guidance-rescale", "1.5"], "guidance rescale must be in [0, 1]"),
        (["--model", "{tiny}", "-o", "{file}/sub"], "cannot write to output folder"),
        (["--model", "{tiny}", "--dtype", "fp16", "--device", "cpu"], "fp16 is not supported on the CPU"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_sd = tmp_path / "not-sd"
    not_sd.mkdir()
    (not_sd / "unet").mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    args = [a.format(not_sd=not_sd, tiny=tiny_model, file=a_file) for a in args]
    code, _, err = run_cli(
        capsys, "txt2img", "a red cube", *args, "--steps" if "--steps" not in args else "--seed", "1"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err


def test_error_from_the_installed_command_has_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dream3d", "txt2img", "a cube", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "does not exist" in proc.stderr
