"""The data-set writer (`dream3d stereo generate`): layout, resume, atomicity, bad inputs,
sharding, workers, the command line and a tiny transformers depth model."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import stereo.writer as writer
from dream3d.cli import main
from dream3d.errors import UserError
from stereo.depth_sources import DepthDir
from stereo.kitti_png import read_disparity_png
from stereo.pfm import read_pfm, write_pfm
from stereo.writer import GenerateOptions, generate, write_index


def make_inputs(root, count=4, size=(24, 230)):
    """Photos of several kinds with inverse-depth maps in .npy, .pfm and 16-bit .png."""
    rng = np.random.default_rng(0)
    images, depth = root / "images", root / "depth"
    images.mkdir(parents=True)
    depth.mkdir()
    h, w = size
    stems = []
    for i in range(count):
        stem = f"img{i}"
        rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        inv = np.zeros((h, w), np.float32)
        inv[:, : w // 2] = 1.0
        inv += rng.uniform(0, 0.05, (h, w)).astype(np.float32)
        kind = i % 4
        if kind == 0:
            Image.fromarray(rgb).save(images / f"{stem}.jpg", quality=90)
            np.save(depth / f"{stem}.npy", inv)
        elif kind == 1:
            Image.fromarray(rgb[..., 0]).save(images / f"{stem}.png")  # grayscale
            write_pfm(depth / f"{stem}.pfm", inv[::2, ::2])  # other size: resized
        elif kind == 2:
            rgba = np.dstack([rgb, np.full((h, w), 200, np.uint8)])
            Image.fromarray(rgba, "RGBA").save(images / f"{stem}.png")
            Image.fromarray((inv * 20000).astype(np.uint16)).save(depth / f"{stem}.png")
        else:
            Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(images / f"{stem}.png")  # 16-bit
            np.save(depth / f"{stem}.npy", inv)
        stems.append(stem)
    return images, depth, stems


def run(images, out, depth, **kw):
    options = GenerateOptions(**{k: v for k, v in kw.items() if k in GenerateOptions.__dataclass_fields__})
    rest = {k: v for k, v in kw.items() if k not in GenerateOptions.__dataclass_fields__}
    return generate(images, out, DepthDir(depth), options, progress=False, log=lambda m: None, **rest)


def tree_bytes(out):
    """Every file under ``out`` (except the run reports) as {relative path: bytes}."""
    files = {}
    for dirpath, _, names in os.walk(out):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, out)
            if rel not in ("pairs.txt", "settings.json") and not rel.startswith("failures"):
                with open(path, "rb") as f:
                    files[rel] = f.read()
    return files


def test_layout_files_and_meta(tmp_path):
    images, depth, stems = make_inputs(tmp_path)
    out = tmp_path / "out"
    summary = run(images, out, depth, seed=3, kitti_png=True, preview=True)
    assert (summary.written, summary.skipped, summary.failed) == (4, 0, [])
    lines = (out / "pairs.txt").read_text().splitlines()
    assert lines == [f"left/{s}.png right/{s}.png disparity/{s}.pfm" for s in stems]
    for s in stems:
        left = np.array(Image.open(out / "left" / f"{s}.png"))
        right = np.array(Image.open(out / "right" / f"{s}.png"))
        disp = read_pfm(out / "disparity" / f"{s}.pfm")
        occ = np.array(Image.open(out / "occlusion" / f"{s}.png"))
        holes = np.array(Image.open(out / "holes" / f"{s}.png"))
        kitti, valid = read_disparity_png(out / "disparity_png" / f"{s}.png")
        assert left.shape == right.shape == (24, 230 - 192, 3)
        assert disp.shape == occ.shape == holes.shape == (24, 38) and disp.dtype == np.float32
        assert set(np.unique(occ)) <= {0, 255} and set(np.unique(holes)) <= {0, 255}
        assert valid.all() and np.abs(kitti - disp).max() <= 1 / 256
        assert (out / "preview" / f"{s}.png").is_file()
        meta = json.loads((out / "meta" / f"{s}.json").read_text())
        assert meta["source"].startswith(s) and meta["mode"] == "default" and meta["global_seed"] == 3
        assert meta["background"] in os.listdir(images)
        assert 50 <= meta["scale"] < 1.15 * 192 and isinstance(meta["seed"], int)
        assert disp.max() <= meta["scale"] * (1 + 1e-6)
    meta0 = json.loads((out / "meta" / "img0.json").read_text())
    assert meta0["depth"]["kind"] == "inverse"
    assert not [n for n in os.listdir(out / "left") if n.startswith(".")]


def test_output_size_options(tmp_path):
    images, depth, _ = make_inputs(tmp_path, count=2)
    out = tmp_path / "out"
    run(images, out, depth, height=16, width=40)
    assert np.array(Image.open(out / "left" / "img0.png")).shape == (16, 40, 3)
    assert read_pfm(out / "disparity" / "img1.pfm").shape == (16, 40)


def test_resume_skips_finished_samples_and_redoes_unfinished(tmp_path):
    images, depth, stems = make_inputs(tmp_path)
    out = tmp_path / "out"
    run(images, out, depth)
    before = tree_bytes(out)
    stamps = {p: os.stat(out / p).st_mtime_ns for p in before}
    (out / "meta" / "img2.json").unlink()  # as if killed before the sample finished
    os.remove(out / "right" / "img2.png")
    summary = run(images, out, depth)
    assert (summary.written, summary.skipped) == (1, 3)
    assert tree_bytes(out) == before  # the redone sample is identical
    for p, t in stamps.items():
        if "img2" not in p:
            assert os.stat(out / p).st_mtime_ns == t  # finished samples untouched


def test_killed_run_leaves_no_partial_file(tmp_path, monkeypatch):
    images, depth, _ = make_inputs(tmp_path, count=2)
    out = tmp_path / "out"
    calls = {"n": 0}
    real = writer.write_pfm

    def dying_write_pfm(path, array, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # second sample: write half a file, then get killed
            with open(path, "wb") as f:
                f.write(b"Pf\n3 3\n-1")
            raise KeyboardInterrupt
        return real(path, array, **kw)

    monkeypatch.setattr(writer, "write_pfm", dying_write_pfm)
    with pytest.raises(KeyboardInterrupt):
        run(images, out, depth)
    leftovers = [n for _, _, names in os.walk(out) for n in names if n.startswith(".")]
    assert leftovers == []
    assert sorted(os.listdir(out / "disparity")) == ["img0.pfm"]
    assert sorted(os.listdir(out / "meta")) == ["img0.json"]
    monkeypatch.setattr(writer, "write_pfm", real)
    summary = run(images, out, depth)
    assert (summary.written, summary.skipped) == (1, 1)
    assert len((out / "pairs.txt").read_text().splitlines()) == 2


def test_bad_inputs_are_reported_and_skipped(tmp_path):
    images, depth, stems = make_inputs(tmp_path, count=2)
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (images / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (images / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((24, 230, 3), np.uint8)).save(images / "nodepth.png")
    Image.fromarray(np.zeros((24, 100, 3), np.uint8)).save(images / "narrow.png")
    np.save(depth / "narrow.npy", np.ones((24, 100), np.float32))
    np.save(depth / "corrupt.npy", np.ones((24, 230), np.float32))
    out = tmp_path / "out"
    messages = []
    summary = generate(images, out, DepthDir(depth), GenerateOptions(), progress=False, log=messages.append)
    failed = dict(summary.failed)
    assert summary.written == 2 and set(failed) == {"corrupt.jpg", "vector.svg", "nodepth.png", "narrow.png"}
    assert "depth" in failed["nodepth.png"] and "narrow" in failed["narrow.png"] and "px wide" in failed["narrow.png"]
    assert summary.ignored == ["notes.txt"]
    assert all(any(name in m for m in messages) for name in failed)
    assert "written 2" in summary.line() and "failed 4" in summary.line()
    assert len((out / "failures.txt").read_text().splitlines()) == 4
    assert (out / "pairs.txt").read_text().count("\n") == 2


def test_shards_and_workers_give_the_same_samples(tmp_path):
    images, depth, stems = make_inputs(tmp_path, count=6)
    single = tmp_path / "single"
    run(images, single, depth, seed=7)
    sharded = tmp_path / "sharded"
    counts = [run(images, sharded, depth, seed=7, shard=(k, 3)).written for k in range(3)]
    assert sum(counts) == 6
    assert tree_bytes(sharded) == tree_bytes(single)
    assert write_index(sharded) == 6
    assert (sharded / "pairs.txt").read_text() == (single / "pairs.txt").read_text()


def test_worker_processes_give_the_same_samples(tmp_path):
    images, depth, stems = make_inputs(tmp_path, count=4)
    run(images, tmp_path / "a", depth, seed=1)
    summary = run(images, tmp_path / "b", depth, seed=1, workers=2)
    assert summary.written == 4
    assert tree_bytes(tmp_path / "b") == tree_bytes(tmp_path / "a")


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    images, depth, _ = make_inputs(tmp_path, count=1)
    out = tmp_path / "out"
    run(images, out, depth, seed=1)
    with pytest.raises(UserError, match="other settings.*seed"):
        run(images, out, depth, seed=2)


# ----------------------------------------------------------------------------------------------
# Command line


def cli(*argv):
    return main(["stereo", *map(str, argv)])


def test_cli_generate_and_preview(tmp_path, capsys):
    images, depth, stems = make_inputs(tmp_path, count=2)
    out = tmp_path / "out"
    assert cli("generate", images, out, "--depth-dir", depth, "--seed", 4, "--kitti-png", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "written 2, skipped 0" in err and "failed 0" in err
    assert (out / "disparity_png" / "img1.png").is_file()
    assert cli("generate", images, out, "--depth-dir", depth, "--seed", 4, "--kitti-png", "--no-progress") == 0
    assert "written 0, skipped 2" in capsys.readouterr().err
    assert cli("preview", out / "disparity" / "img0.pfm", "-o", tmp_path / "p.png") == 0
    assert np.array(Image.open(tmp_path / "p.png")).shape == (24, 38, 3)
    assert cli("preview", out) == 0 and len(os.listdir(out / "preview")) == 2
    assert cli("index", out) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "{tmp}/missing", "{tmp}/out", "--depth-dir", "{depth}"], "images folder"),
        (["generate", "{images}", "{tmp}/out"], "depth source"),
        (
            ["generate", "{images}", "{tmp}/out", "--depth-dir", "{depth}", "--depth-model", "x"],
            "exactly one depth source",
        ),
        (["generate", "{images}", "{tmp}/out", "--depth-dir", "{depth}", "--shard", "3/2"], "0 <= K < N"),
        (["generate", "{images}", "{tmp}/out", "--depth-dir", "{depth}", "--shard", "two"], "K/N"),
        (["generate", "{images}", "{tmp}/out", "--depth-dir", "{tmp}/nodepth"], "depth folder"),
        (["generate", "{images}", "{tmp}/afile/out", "--depth-dir", "{depth}"], "cannot write to output folder"),
        (["generate", "{images}", "{tmp}/out", "--depth-model", "{tmp}/no-such-model"], "cannot load depth model"),
        (["generate", "{images}", "{tmp}/out", "--depth-dir", "{depth}", "--width", "64"], "--width and --height"),
        (["generate", "{tmp}/empty", "{tmp}/out", "--depth-dir", "{depth}"], "no images"),
        (["preview", "{tmp}/missing.pfm"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    images, depth, _ = make_inputs(tmp_path, count=1)
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, images=images, depth=depth) for a in args]
    assert cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# A tiny transformers depth model (random weights, built in conftest.py: nothing downloaded)


def test_cli_generate_with_a_depth_model(tmp_path, capsys, tiny_depth_model):
    images, _, stems = make_inputs(tmp_path, count=2)
    out = tmp_path / "out"
    assert cli("generate", images, out, "--depth-model", tiny_depth_model, "--no-progress", "--device", "cpu") == 0
    assert "written 2" in capsys.readouterr().err
    meta = json.loads((out / "meta" / "img0.json").read_text())
    assert meta["depth"] == {"type": "depth-model", "model": str(tiny_depth_model), "kind": "inverse"}
    assert np.isfinite(read_pfm(out / "disparity" / "img0.pfm")).all()
    # forcing the kind is allowed and recorded (a different setting: another folder)
    assert (
        cli(
            "generate",
            images,
            tmp_path / "o2",
            "--depth-model",
            tiny_depth_model,
            "--depth-kind",
            "depth",
            "--no-progress",
        )
        == 0
    )
    assert json.loads((tmp_path / "o2" / "meta" / "img1.json").read_text())["depth"]["kind"] == "depth"


def test_cli_shapes_then_generate_needs_no_download(tmp_path, capsys):
    inputs = tmp_path / "shapes"
    assert cli("shapes", inputs, "--count", 2, "--height", 64, "--width", 256) == 0
    assert sorted(os.listdir(inputs / "images")) == ["scene-00000.png", "scene-00001.png"]
    assert read_pfm(inputs / "depth" / "scene-00000.pfm").shape == (64, 256)
    assert (inputs / "truth" / "scene-00001.png").is_file()
    out = tmp_path / "pairs"
    assert cli("generate", inputs / "images", out, "--depth-dir", inputs / "depth", "--no-progress") == 0
    assert "written 2" in capsys.readouterr().err
    assert np.array(Image.open(out / "right" / "scene-00000.png")).shape == (64, 64, 3)
