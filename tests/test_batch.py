"""Batches (`dream3d batch txt2mesh`, `dream3d stereo generate --backend ray`): the index and the
contact sheet, resuming, a failing prompt, a killed worker, shards, bad input, the Ray backend."""

import builtins
import json
import os
import signal
from pathlib import Path

import pytest
from batch_helpers import double_or_die
from PIL import Image
from test_stereo_writer import make_inputs
from txt2mesh_fast import FAST

import dream3d.batch.txt2mesh as batch_txt2mesh
from dream3d.batch.backends import LocalBackend, RayBackend
from dream3d.batch.index import INDEX, SHEET
from dream3d.batch.items import BatchItem, make_items, parse_seeds, read_prompts, shard_items
from dream3d.batch.txt2mesh import run_batch, run_item
from dream3d.cli import main
from dream3d.errors import UserError
from dream3d.guidance.denoised_target import DenoisedTargetGuidance

ARGS = [*FAST, "steps=4", "checkpoint_every=2", "export.turntable_formats=[gif]"]


def index_of(out):
    return {row["prompt"] + f"/{row['seed']}": row for row in map(json.loads, (out / INDEX).read_text().splitlines())}


def prompts_file(tmp_path, *prompts):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment, then a blank line\n\n" + "\n".join(prompts) + "\n")
    return path


def test_batch_writes_a_run_per_prompt_and_seed_an_index_and_a_contact_sheet(tiny_model, tmp_path, capsys):
    prompts = prompts_file(tmp_path, "a red cube", "a blue cone")
    out = tmp_path / "out"
    code = main(
        ["batch", "txt2mesh", str(prompts), "-o", str(out), "--model", str(tiny_model), "--seeds", "0,1"]
        + ["--workers", "0", "--no-progress", "--drop-checkpoints", *ARGS]
    )
    assert code == 0
    rows = index_of(out)
    assert sorted(rows) == ["a blue cone/0", "a blue cone/1", "a red cube/0", "a red cube/1"]
    for row in rows.values():
        assert row["status"] == "ok" and row["attempts"] == 1 and row["resumed"] is False
        assert row["metrics"]["steps"] == 4 and row["metrics"]["seed"] == row["seed"]
        assert (out / row["run_dir"] / "mesh.glb").is_file()
        assert not (out / row["run_dir"] / "checkpoints").exists()  # --drop-checkpoints
    assert json.loads((out / rows["a red cube/1"]["run_dir"] / "metrics.json").read_text())["seed"] == 1
    with Image.open(out / SHEET) as sheet:
        assert sheet.size == (2 * 128, 2 * (128 + 26))
    assert "4 run(s) finished" in capsys.readouterr().out
    (out / INDEX).unlink()
    assert main(["batch", "index", str(out)]) == 0 and len(index_of(out)) == 4  # rebuilt from the run folders
    assert main(["batch", "index", str(tmp_path)]) == 2 and "holds no batch" in capsys.readouterr().err


def test_a_rerun_skips_finished_runs_and_resumes_an_unfinished_one(tiny_model, tmp_path):
    out = tmp_path / "out"
    prompts = ["a red cube", "a blue cone"]
    first = run_batch(prompts, out, model=str(tiny_model), overrides=ARGS, backend=LocalBackend(0), progress=False)
    assert first.ran == 2
    cube, cone = (out / BatchItem(p, 0).name for p in prompts)
    (cone / "metrics.json").unlink()  # as if the run had been killed after its last checkpoint
    before = {p: p.stat().st_mtime_ns for p in cube.rglob("*")}
    again = run_batch(prompts, out, model=str(tiny_model), overrides=ARGS, backend=LocalBackend(0), progress=False)
    assert (again.ran, again.skipped, again.failed) == (1, 1, [])
    assert {p: p.stat().st_mtime_ns for p in cube.rglob("*")} == before  # untouched
    rows = index_of(out)
    assert rows["a blue cone/0"]["status"] == "ok" and rows["a blue cone/0"]["resumed"] is True
    assert rows["a red cube/0"]["resumed"] is False
    # another config in the same folder is refused, before anything runs
    with pytest.raises(UserError, match="other settings"):
        run_batch(prompts, out, model=str(tiny_model), overrides=[*ARGS, "steps=5"], backend=LocalBackend(0))


def test_a_failing_prompt_is_recorded_and_the_batch_goes_on(tiny_model, tmp_path, monkeypatch, capsys):
    real = batch_txt2mesh.run_txt2mesh

    def failing(cfg, out, **kw):
        if cfg.prompt == "a green torus":
            raise RuntimeError("out of luck")
        return real(cfg, out, **kw)

    monkeypatch.setattr(batch_txt2mesh, "run_txt2mesh", failing)
    prompts = prompts_file(tmp_path, "a red cube", "a green torus", "a blue cone")
    out = tmp_path / "out"
    argv = ["batch", "txt2mesh", str(prompts), "-o", str(out), "--model", str(tiny_model), "--workers", "0", *ARGS]
    assert main(argv) == 1
    rows = index_of(out)
    assert rows["a green torus/0"]["status"] == "failed"
    assert "RuntimeError: out of luck" in rows["a green torus/0"]["error"]
    assert rows["a red cube/0"]["status"] == rows["a blue cone/0"]["status"] == "ok"
    assert "failed: a-green-torus" in capsys.readouterr().err
    # a rerun tries the failed prompt again (and only it)
    monkeypatch.setattr(batch_txt2mesh, "run_txt2mesh", real)
    assert main(argv) == 0
    assert index_of(out)["a green torus/0"]["status"] == "ok"


def run_item_killed_once(job):
    """`run_item`, but the worker running "a blue cone" the first time kills itself (SIGKILL) during
    step 3, after the checkpoint of step 2."""
    marker = Path(job["out"]) / "killed-once"
    if job["prompt"] == "a blue cone" and not marker.exists():
        real = DenoisedTargetGuidance.forward

        def forward(self, images, cameras, step, generator):
            if step == 3:
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, images, cameras, step, generator)

        DenoisedTargetGuidance.forward = forward
    return run_item(job)


@pytest.mark.slow
def test_a_killed_worker_loses_no_finished_run_and_its_item_is_retried(tiny_model, tmp_path):
    out = tmp_path / "out"
    prompts = ["a red cube", "a blue cone"]
    summary = run_batch(
        prompts,
        out,
        model=str(tiny_model),
        overrides=ARGS,
        backend=LocalBackend(1),
        runner=run_item_killed_once,
        progress=False,
    )
    assert (out / "killed-once").is_file()  # the worker was killed
    assert (summary.ran, summary.failed) == (2, [])
    rows = index_of(out)
    cone = rows["a blue cone/0"]
    assert cone["status"] == "ok" and cone["attempts"] == 2 and cone["resumed"] is True  # from step 2
    assert cone["metrics"]["steps"] == 4
    cube = out / rows["a red cube/0"]["run_dir"]
    assert rows["a red cube/0"]["attempts"] == 1
    assert (cube / "metrics.json").stat().st_mtime < (out / "killed-once").stat().st_mtime  # finished before
    assert (cube / "mesh.glb").is_file()


def test_local_workers_that_die_are_replaced_and_their_items_run_again(tmp_path):
    items = [(i, "once" if i % 2 else None, str(tmp_path / f"marker-{i}")) for i in range(5)]
    items.append((5, "always", str(tmp_path / "marker-5")))
    done = {d.index: d for d in LocalBackend(2, max_attempts=2).map(double_or_die, items)}
    assert sorted(done) == list(range(6))
    for i in range(5):
        assert done[i].value == 2 * i and done[i].error is None
        assert done[i].attempts == (2 if i % 2 else 1)
    assert done[5].value is None and done[5].attempts == 2
    assert done[5].error == "worker died (signal 9) on every attempt"
    with pytest.raises(ValueError, match="bad item 7"):  # an exception is not a death: raised, not retried
        list(LocalBackend(1).map(double_or_die, [(7, "raise", str(tmp_path / "m"))]))


def test_shards_split_the_items_disjointly_and_completely(tmp_path):
    items = make_items([f"prompt {i}" for i in range(40)], [0, 1, 2])
    parts = [shard_items(items, (k, 4)) for k in range(4)]
    names = [i.name for part in parts for i in part]
    assert sorted(names) == sorted(i.name for i in items)  # complete, no item twice
    assert all(parts)


def test_shards_of_a_batch_run_each_item_once(tiny_model, tmp_path):
    """Three shards in turn (as three array jobs would) run every item exactly once; the last
    shard's index shows the whole batch."""
    out = tmp_path / "out"
    prompts = [f"a red cube {i}" for i in range(6)]
    ran = []
    for k in range(3):
        summary = run_batch(
            prompts,
            out,
            model=str(tiny_model),
            overrides=ARGS,
            backend=LocalBackend(0),
            shard=(k, 3),
            progress=False,
            runner=lambda job: (ran.append(job["name"]), fake_run(job))[1],
        )
        assert summary.ran == len(shard_items(make_items(prompts, [0]), (k, 3)))
    assert sorted(ran) == sorted(i.name for i in make_items(prompts, [0]))
    assert {row["status"] for row in index_of(out).values()} == {"ok"}


def fake_run(job):
    folder = Path(job["out"]) / job["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"steps": 1}))
    return {"name": job["name"], "status": "ok", "resumed": False}


def test_items_seeds_and_prompts_files(tmp_path):
    assert parse_seeds("0,1") == [0, 1] and parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("2,0-1,2") == [2, 0, 1]
    with pytest.warns(UserWarning, match="1 repeated prompt"):
        prompts = read_prompts(prompts_file(tmp_path, "a red cube", "  a red cube ", "a blue cone"))
    assert prompts == ["a red cube", "a blue cone"]
    assert BatchItem("a red cube", 0).name.startswith("a-red-cube-")
    assert BatchItem("a red cube", 0).name != BatchItem("a red cube!", 0).name


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (None, [], "does not exist"),
        ("\n# nothing\n", [], "holds no prompt"),
        ("a red cube\n", ["--seeds", "1,x"], "--seeds takes whole numbers"),
        ("a red cube\n", ["--seeds", "3-1"], "--seeds takes whole numbers"),
        ("a red cube\n", ["--shard", "4/4"], "0 <= K < N"),
        ("a red cube\n", ["--shard", "1"], "K/N"),
        ("a red cube\n", ["--backend", "slurm"], "unknown backend 'slurm'"),
        ("a red cube\n", ["--workers", "-1"], "--workers must be 0 or more"),
        ("a red cube\n", ["steps=x"], "steps"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, setup, extra, message):
    prompts = tmp_path / "prompts.txt"
    if setup is not None:
        prompts.write_text(setup)
    code = main(["batch", "txt2mesh", str(prompts), "-o", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_here():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dream3d[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_runs_the_batch_and_stereo_shards(ray_here, tiny_model, tmp_path):
    out = tmp_path / "out"
    summary = run_batch(
        ["a red cube", "a blue cone"], out, model=str(tiny_model), overrides=ARGS, backend=RayBackend(), progress=False
    )
    assert (summary.ran, summary.failed) == (2, [])
    assert {row["status"] for row in index_of(out).values()} == {"ok"}
    assert (out / SHEET).is_file()

    make_inputs(tmp_path / "in", count=4)
    args = ["stereo", "generate", str(tmp_path / "in" / "images"), str(tmp_path / "pairs")]
    args += ["--depth-dir", str(tmp_path / "in" / "depth"), "--max-disparity", "16", "--no-progress"]
    assert main([*args, "--backend", "ray", "--workers", "3"]) == 0
    assert len((tmp_path / "pairs" / "pairs.txt").read_text().splitlines()) == 4
    assert main([*args[:3], str(tmp_path / "local"), *args[4:]]) == 0  # the same pairs as on one machine
    for name in sorted(os.listdir(tmp_path / "local" / "right")):
        assert (tmp_path / "pairs" / "right" / name).read_bytes() == (tmp_path / "local" / "right" / name).read_bytes()


def test_ray_missing_is_one_line(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    prompts = prompts_file(tmp_path, "a red cube")
    assert main(["batch", "txt2mesh", str(prompts), "-o", str(tmp_path / "out"), "--backend", "ray"]) == 2
    assert "pip install 'dream3d[ray]'" in capsys.readouterr().err
