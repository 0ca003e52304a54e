"""The web app's jobs without the page: run folders, the checks, the three jobs and a runner.

How a long job runs: **in the app's process, on a worker thread** (:class:`BackgroundJob`). The
page's handler starts the thread and reads its progress from a queue; a text-to-3D run reports
through the trainer's ``callback`` (step, total, loss, the newest validation image) and stops
through the trainer's ``stop`` event: the running step finishes, a checkpoint is saved, what the
run has is exported and :class:`~dream3d.trainer.Interrupted` ends the job, exactly as Ctrl-C ends
``dream3d txt2mesh``; ``resume`` continues it to the uninterrupted run's result. A subprocess
would load torch and the model again for every job and need a pipe for progress and a signal for
cancel; a thread shares the loaded libraries and gets both as plain Python calls. The page's queue
runs one long job at a time (concurrency 1), so one thread trains at a time.

A job is announced on a :class:`JobBoard` when its button is pressed (a token), started when the
queue reaches it and may be cancelled in either state: a job cancelled while it waits never starts.
"""

from __future__ import annotations

import queue
import re
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stereo.depth_sources import DEPTH_KINDS, DEPTH_SUFFIXES, DepthDir
from stereo.shapes import write_shapes_inputs
from stereo.writer import GenerateOptions, generate, sample_files

from ..config import load_config
from ..errors import UserError
from ..text_to_3d import CONFIG_DIR, Txt2MeshConfig, check_txt2mesh_config, load_txt2mesh_config, run_txt2mesh
from ..text_to_image import Txt2ImgConfig, check_txt2img_config, run_txt2img


@dataclass(frozen=True)
class AppSettings:
    """What ``dream3d app`` was started with: where runs go and which model every tab uses."""

    output_dir: Path = Path("outputs/app")
    model: str | None = None  # None: the bundled shapes prior
    device: str | None = None
    dtype: str | None = None


# ---------------------------------------------------------------------------------- run folders
def new_run_dir(root: str | Path, kind: str, text: str) -> Path:
    """A fresh folder ``root/kind/<date>-<time>-<words of text>`` (``-2``, ``-3``... when taken)."""
    slug = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:40] or kind
    base = Path(root) / kind / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"
    for n in range(1, 1000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(
                f"cannot write to the app's output folder '{root}' ({e.strerror}); pass --output-dir"
            ) from None
    raise UserError(f"too many runs named '{base.name}' in '{root}'")


def number(value: Any, name: str, whole: bool = True) -> int | float:
    """A number typed in the page (an empty field is ``None``), or a one-line error naming the field."""
    try:
        x = float(value)
        if whole and x != int(x):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a {'whole ' if whole else ''}number, got {value!r}") from None
    return int(x) if whole else x


def parse_overrides(text: str) -> list[str]:
    """``key=value`` overrides as typed in the page (spaces or new lines between them)."""
    words = shlex.split(text or "")
    bad = [w for w in words if "=" not in w or w.startswith("=")]
    if bad:
        raise UserError(f"'{bad[0]}' is not a key=value override; write e.g. steps=200 guidance.t_max_end=0.4")
    return words


# ---------------------------------------------------------------------------------- text to 3D
def presets(model: str | None) -> list[str]:
    """Config presets for ``model``: ``configs/shapes-*.yaml`` for the bundled prior, the others otherwise."""
    shapes = model in (None, "shapes")
    # not the prior's recipe, nor image-to-3D ones (guidance.kind: zero123, dream3d img2mesh)
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "prior-shapes" and "zero123" not in p.stem)
    return [n for n in names if n.startswith("shapes-") == shapes]


def txt2mesh_config(
    settings: AppSettings, prompt: str, preset: str, seed: int, steps: int, overrides: str = ""
) -> Txt2MeshConfig:
    """The checked config of a text-to-3D job (the errors ``dream3d txt2mesh`` gives)."""
    if preset not in presets(settings.model):
        raise UserError(f"unknown config preset '{preset}'; choose one of {', '.join(presets(settings.model))}")
    values = {k: v for k, v in (("device", settings.device), ("dtype", settings.dtype)) if v is not None}
    cfg = load_txt2mesh_config(
        prompt,
        CONFIG_DIR / f"{preset}.yaml",
        settings.model,
        number(seed, "seed"),
        [f"steps={number(steps, 'steps')}", *parse_overrides(overrides)],
        values=values,
    )
    check_txt2mesh_config(cfg)
    return cfg


def resumable_config(run_dir: str | Path) -> Txt2MeshConfig:
    """The config of the stopped run in ``run_dir`` (to continue it with ``resume=True``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not any((run_dir / "checkpoints").glob("*.pt")):
        raise UserError(f"'{run_dir}' holds no stopped text-to-3D run to resume; start a new one")
    return load_config(Txt2MeshConfig, run_dir / "config.yaml")


def txt2mesh_job(cfg: Txt2MeshConfig, run_dir: Path, resume: bool = False) -> Callable:
    """The body of a :class:`BackgroundJob` that runs (or resumes) ``cfg`` in ``run_dir``."""
    return lambda callback, stop: run_txt2mesh(
        cfg, run_dir, resume=resume, progress=False, callback=callback, stop=stop
    )


def txt2mesh_files(run_dir: str | Path) -> dict[str, Any]:
    """What a finished (or stopped) run shows: the GLB, the downloads, the turntable, the newest
    validation image (``None`` where missing)."""
    run_dir = Path(run_dir)

    def found(name: str) -> Path | None:
        return run_dir / name if (run_dir / name).is_file() else None

    vals = sorted(run_dir.glob("val*/step-*.png"), key=lambda p: (p.parent.name != "val", p.name))
    return {
        "glb": found("mesh.glb"),
        "downloads": sorted(p for p in run_dir.glob("mesh.*") if p.is_file()),
        "video": found("turntable.mp4"),
        "val_image": vals[-1] if vals else None,
    }


# ---------------------------------------------------------------------------------- text to image
def txt2img_config(settings: AppSettings, **fields) -> Txt2ImgConfig:
    """The checked config of a text-to-image job (``fields``: :class:`Txt2ImgConfig`'s)."""
    cfg = Txt2ImgConfig(model=settings.model, device=settings.device, dtype=settings.dtype, **fields)
    check_txt2img_config(cfg)
    return cfg


def txt2img_job(cfg: Txt2ImgConfig, run_dir: Path) -> list[Path]:
    """Sample the images into ``run_dir`` (as ``dream3d txt2img`` writes them); returns their files."""
    _, record = run_txt2img(cfg, output=run_dir, progress=False)
    return [run_dir / name for name in record["images"]]


# ---------------------------------------------------------------------------------- stereo pairs
@dataclass(frozen=True)
class StereoRequest:
    """One stereo pair to make: from a photo and its depth map, or (``scene_seed``) from a
    shapes-world scene as ``dream3d stereo shapes`` renders it."""

    image: str | Path | None = None
    depth: str | Path | None = None
    depth_kind: str = "inverse"  # what the map holds: "inverse" depth or "depth"
    scene_seed: int | None = None
    seed: int = 0
    max_disparity: float = 192.0

    def options(self) -> GenerateOptions:
        """The writer's options, after the checks (one-line errors) that need no file read."""
        seed, top = number(self.seed, "seed"), number(self.max_disparity, "the maximum disparity", whole=False)
        if self.scene_seed is not None:
            number(self.scene_seed, "the scene")
        try:
            options = GenerateOptions(seed=seed, max_disparity=top, preview=True)
        except ValueError as e:
            raise UserError(f"{e}; e.g. a maximum disparity of 64 for a 320 px wide photo") from None
        if self.scene_seed is None:
            if not self.image or not self.depth:
                raise UserError(
                    "upload a photo and its depth map (.npy, .pfm or 16-bit .png), or pick the shapes scene"
                )
            if Path(self.depth).suffix.lower() not in DEPTH_SUFFIXES:
                raise UserError(f"{Path(self.depth).name}: unsupported depth file type (use .npy, .pfm or .png)")
        if self.depth_kind not in DEPTH_KINDS:
            raise UserError(f"the depth map holds 'inverse' depth or 'depth', not {self.depth_kind!r}")
        return options

    def run(self, run_dir: Path) -> dict[str, Path]:
        """Write the inputs to ``run_dir/inputs`` and the pair to ``run_dir/pairs`` as ``dream3d stereo
        generate`` writes a data set; returns the pair's files by kind (``left``, ``right``,
        ``disparity``, ``preview``, ...)."""
        options, inputs = self.options(), run_dir / "inputs"
        if self.scene_seed is not None:
            stem = write_shapes_inputs(inputs, 1, seed=number(self.scene_seed, "the scene"))[0]
        else:
            stem = "photo"
            for source, folder in ((Path(self.image), "images"), (Path(self.depth), "depth")):
                (inputs / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, inputs / folder / f"{stem}{source.suffix.lower()}")
        depth = DepthDir(inputs / "depth", kind=self.depth_kind)
        summary = generate(inputs / "images", run_dir / "pairs", depth, options, progress=False, log=lambda _: None)
        if summary.failed:
            name, reason = summary.failed[0]
            raise UserError(reason if name in reason else f"{name}: {reason}")
        return {k: run_dir / "pairs" / v for k, v in sample_files(stem, options).items()}


# ---------------------------------------------------------------------------------- the runner
class BackgroundJob:
    """``body(callback, stop)`` on a daemon thread: :meth:`updates` yields what it reports through
    ``callback(step, total, info)``, :meth:`cancel` sets ``stop``, :meth:`result` returns what it
    returned or raises what it raised."""

    def __init__(self, body: Callable[[Callable, threading.Event], Any]):
        self.stop = threading.Event()
        self._body, self._reports = body, queue.Queue()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="dream3d-app-job")

    def start(self) -> BackgroundJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._body(self._report, self.stop)
        except BaseException as e:  # handed to the page's thread by result()
            self._error = e

    def _report(self, step: int, total: int, info: dict) -> None:
        self._reports.put({**info, "step": step, "total": total})

    def cancel(self) -> None:
        self.stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def updates(self, interval: float = 0.25) -> Iterator[dict]:
        """The reports since the last one, merged (the newest step; a validation image sticks), at
        most every ``interval`` seconds, until the body returns."""
        while self.running or not self._reports.empty():
            merged: dict = {}
            try:
                merged.update(self._reports.get(timeout=interval))
                while True:
                    merged.update(self._reports.get_nowait())
            except queue.Empty:
                pass
            if merged:
                yield merged

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class JobBoard:
    """The app's jobs by token, shared by every session: announced (waiting in the queue), running,
    or cancelled before it started."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, BackgroundJob | None] = {}
        self._cancelled: set[str] = set()

    def announce(self) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._jobs[token] = None
        return token

    def start(self, token: str, body: Callable[[Callable, threading.Event], Any]) -> BackgroundJob | None:
        """Start the job of ``token``; ``None`` when it was cancelled while it waited."""
        with self._lock:
            if token in self._cancelled:
                self._cancelled.discard(token)
                self._jobs.pop(token, None)
                return None
            job = self._jobs[token] = BackgroundJob(body).start()
            return job

    def cancel(self, token: str | None) -> bool:
        """Stop the job of ``token`` at its next step (or before it starts); False: no such job."""
        with self._lock:
            if not token or token not in self._jobs:
                return False
            job = self._jobs[token]
            if job is None:
                self._cancelled.add(token)
            else:
                job.cancel()
            return True

    def finish(self, token: str) -> None:
        with self._lock:
            self._jobs.pop(token, None)
