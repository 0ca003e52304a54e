"""Write a stereo data set from a folder of photos (``dream3d stereo generate``).

Layout of ``out_dir`` (``<stem>`` is the photo's file name without its suffix)::

    left/<stem>.png           left view, RGB
    right/<stem>.png          synthesised right view, RGB
    disparity/<stem>.pfm      float32 disparity in pixels, left-referenced
    disparity_png/<stem>.png  KITTI-style uint16 disparity * 256 (only with kitti_png)
    occlusion/<stem>.png      255 where the left pixel is visible in the right view
    holes/<stem>.png          255 where the right pixel was filled from the background
    preview/<stem>.png        colour-mapped disparity (only with preview)
    meta/<stem>.json          source, background, scale, seed, mode, ... (written last)
    pairs.txt                 "left right disparity" per line, paths relative to out_dir
    settings.json             options that every sample of the folder shares
    failures.txt              samples that failed in the last run, with the reason

Guarantees:

- Deterministic: a sample depends only on the global seed and its stem (see
  :mod:`stereo.seeds`), not on workers, shards, order or resumption. Draws from the sample's
  generator, in order: the scale (two numbers), then the background's index (one).
- Atomic and resumable: every file is written to a temporary name and renamed; the meta file is
  written last, so a sample with a meta file is complete and a rerun skips it. A killed run
  leaves no partial file.
- Robust: a corrupt, unreadable or unsupported image, or a missing depth map, is reported by
  name and counted as failed; the run goes on. A background that cannot be read is replaced by
  the image itself (recorded in the meta file).
- Shardable: ``shard=(K, N)`` processes the samples whose stem hashes to K (of N), so N machines
  or array jobs split a corpus with no coordination. ``pairs.txt`` lists every complete sample
  in the folder when a run ends; after concurrent shards, :func:`write_index` (``dream3d
  stereo index``) rebuilds it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dream3d.errors import UserError
from dream3d.io import atomic_path, write_json, write_text

from .depth_sources import MissingDepth, UnreadableDepth
from .disparity import MAX_DISPARITY, draw_scale
from .images import UnreadableImage, is_image_path, load_rgb
from .kitti_png import encode_disparity_png
from .pair import crop_margin, make_pair
from .pfm import write_pfm
from .preview import disparity_preview
from .resize import cover_crop, resize_rgb
from .seeds import sample_seed, shard_of

FORMAT_VERSION = 1
SUBDIRS = ("left", "right", "disparity", "occlusion", "holes", "meta")


@dataclass
class GenerateOptions:
    """Options shared by every sample of an output folder (recorded in ``settings.json``).

    ``height``/``width`` set the output size (both or neither). With neither, a photo keeps
    its resolution and the pair is its first ``W - ceil(max_disparity)`` columns; with both, the
    photo is scaled (aspect kept) to cover ``height x (width + margin)`` and centre-cropped.
    """

    seed: int = 0
    mode: str = "default"
    max_disparity: float = MAX_DISPARITY
    height: int | None = None
    width: int | None = None
    kitti_png: bool = False
    fill_cracks: bool = False
    preview: bool = False

    def __post_init__(self):
        if self.mode not in ("default", "reference"):
            raise ValueError(f"mode must be 'default' or 'reference', got {self.mode!r}")
        if (self.height is None) != (self.width is None):
            raise ValueError("give both height and width, or neither")
        if self.height is not None and (self.height < 1 or self.width < 1):
            raise ValueError("height and width must be positive")
        if not self.max_disparity > 0:
            raise ValueError("max_disparity must be positive")


@dataclass
class Summary:
    """What a run did. ``failed`` holds ``(file name, reason)``; ``ignored`` non-image files."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        text = f"written {self.written}, skipped {self.skipped} (already done), failed {len(self.failed)}"
        if self.ignored:
            text += f", ignored {len(self.ignored)} non-image file(s)"
        return text + f" in {self.seconds:.1f} s ({rate:.2f} pairs/s)"


@dataclass(frozen=True)
class Sample:
    stem: str
    file: str  # file name inside the images folder


def list_samples(images_dir: Path) -> tuple[list[Sample], list[str], list[tuple[str, str]]]:
    """(samples sorted by file name, ignored non-image files, duplicate stems as failures)."""
    samples, ignored, duplicates = [], [], []
    seen: set[str] = set()
    for entry in sorted(os.scandir(images_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if not is_image_path(entry.name):
            ignored.append(entry.name)
            continue
        stem = Path(entry.name).stem
        if stem in seen:
            duplicates.append((entry.name, f"another image with the stem '{stem}' comes first; rename one of them"))
            continue
        seen.add(stem)
        samples.append(Sample(stem, entry.name))
    return samples, ignored, duplicates


def sample_files(stem: str, options: GenerateOptions) -> dict[str, str]:
    """Relative paths of a sample's files."""
    files = {
        "left": f"left/{stem}.png",
        "right": f"right/{stem}.png",
        "disparity": f"disparity/{stem}.pfm",
        "occlusion": f"occlusion/{stem}.png",
        "holes": f"holes/{stem}.png",
    }
    if options.kitti_png:
        files["disparity_png"] = f"disparity_png/{stem}.png"
    if options.preview:
        files["preview"] = f"preview/{stem}.png"
    files["meta"] = f"meta/{stem}.json"
    return files


def completed_stems(out_dir: Path) -> set[str]:
    """Stems whose meta file exists (a sample's meta file is written after all its other files)."""
    meta = out_dir / "meta"
    if not meta.is_dir():
        return set()
    return {e.name[:-5] for e in os.scandir(meta) if e.name.endswith(".json") and not e.name.startswith(".")}


def write_index(out_dir: str | os.PathLike) -> int:
    """(Re)write ``pairs.txt`` listing every complete sample of ``out_dir``; returns the count."""
    out_dir = Path(out_dir)
    stems = sorted(completed_stems(out_dir))
    lines = [f"left/{s}.png right/{s}.png disparity/{s}.pfm\n" for s in stems]
    write_text(out_dir / "pairs.txt", "".join(lines))
    return len(stems)


def _settings(options: GenerateOptions, depth: Any) -> dict:
    describe = depth.describe() if hasattr(depth, "describe") else {"type": type(depth).__name__}
    source = {"type": describe.get("type"), "kind": describe.get("kind")}
    if "model" in describe:
        source["model"] = Path(str(describe["model"])).name
    values = asdict(options)
    values.pop("preview")
    return {"format": FORMAT_VERSION, **values, "depth": source}


def _check_settings(out_dir: Path, settings: dict) -> None:
    path = out_dir / "settings.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old != settings:
            diffs = [
                f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in settings if old.get(k) != settings.get(k)
            ]
            raise UserError(
                f"'{out_dir}' was generated with other settings ({'; '.join(diffs)}); "
                f"rerun with the same options to resume, or choose another output folder"
            )
    write_json(path, settings)


# ----------------------------------------------------------------------------------------------
# One sample (runs in the main process or in a worker).

_CONTEXT: dict[str, Any] = {}


def _init_context(images_dir: str, out_dir: str, backgrounds: list[str], depth: Any, options: GenerateOptions) -> None:
    _CONTEXT.clear()
    _CONTEXT.update(
        images_dir=Path(images_dir), out_dir=Path(out_dir), backgrounds=backgrounds, depth=depth, options=options
    )


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=3)


def _process(sample: Sample) -> tuple[str, str, str | None]:
    """Make and write one sample; returns ``(status, file, reason)``, status ok / failed / fatal."""
    try:
        _make_and_write(sample)
        return ("ok", sample.file, None)
    except (UnreadableImage, MissingDepth, UnreadableDepth) as e:
        return ("failed", sample.file, str(e))
    except UserError as e:  # a bad model or folder: stop the whole run
        return ("fatal", sample.file, str(e))
    except MemoryError:
        return ("failed", sample.file, "out of memory")
    except Exception as e:  # keep the run going; the reason names the problem
        return ("failed", sample.file, f"{type(e).__name__}: {e}".replace("\n", " ")[:300])


def _make_and_write(sample: Sample) -> None:
    images_dir: Path = _CONTEXT["images_dir"]
    out_dir: Path = _CONTEXT["out_dir"]
    backgrounds: list[str] = _CONTEXT["backgrounds"]
    options: GenerateOptions = _CONTEXT["options"]
    depth = _CONTEXT["depth"]

    seed = sample_seed(options.seed, sample.stem)
    rng = np.random.default_rng(seed)
    image = load_rgb(images_dir / sample.file)
    inverse = depth(sample.stem, image)
    margin = crop_margin(options.max_disparity)
    if options.height is not None:
        image, inverse = cover_crop(image, inverse, options.height, options.width + margin)
    elif image.shape[1] <= margin:
        raise UnreadableImage(
            f"image is {image.shape[1]} px wide, too narrow for a pair with a {margin} px margin; pass --width/--height"
        )
    scale = draw_scale(rng, options.max_disparity)
    bg_file = backgrounds[int(rng.integers(len(backgrounds)))]
    bg_note = None
    try:
        background = image if bg_file == sample.file else resize_rgb(load_rgb(images_dir / bg_file), *image.shape[:2])
    except UnreadableImage as e:
        background, bg_note = image, f"background {bg_file} unreadable ({e}); used the image itself"
        bg_file = sample.file

    pair = make_pair(
        image,
        inverse,
        background,
        mode=options.mode,
        scale=scale,
        max_disparity=options.max_disparity,
        crop=True,
        fill_cracks=options.fill_cracks,
    )

    files = sample_files(sample.stem, options)
    _save_png(out_dir / files["left"], pair.left)
    _save_png(out_dir / files["right"], pair.right)
    with atomic_path(out_dir / files["disparity"]) as tmp:
        write_pfm(tmp, pair.disparity)
    if options.kitti_png:
        _save_png(out_dir / files["disparity_png"], encode_disparity_png(pair.disparity))
    _save_png(out_dir / files["occlusion"], pair.visible.astype(np.uint8) * 255)
    _save_png(out_dir / files["holes"], pair.holes.astype(np.uint8) * 255)
    if options.preview:
        _save_png(out_dir / files["preview"], disparity_preview(pair.disparity, max_disparity=options.max_disparity))
    meta = {
        "stem": sample.stem,
        "source": sample.file,
        "background": bg_file,
        "scale": pair.scale,
        "seed": seed,
        "global_seed": options.seed,
        "mode": options.mode,
        "max_disparity": options.max_disparity,
        "size": [int(pair.left.shape[0]), int(pair.left.shape[1])],
        "fill_cracks": options.fill_cracks,
        "depth": depth.describe() if hasattr(depth, "describe") else type(depth).__name__,
        "visible_fraction": float(pair.visible.mean()),
        "hole_fraction": float(pair.holes.mean()),
        "files": {k: v for k, v in files.items() if k != "meta"},
        "format": FORMAT_VERSION,
    }
    if bg_note:
        meta["background_note"] = bg_note
    write_json(out_dir / files["meta"], meta)  # last: its presence marks the sample complete


# ----------------------------------------------------------------------------------------------


def _default_log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def generate(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    depth: Callable[[str, np.ndarray], np.ndarray],
    options: GenerateOptions | None = None,
    *,
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Generate the pairs of ``images_dir`` into ``out_dir`` (see the module docstring).

    Args:
        images_dir: folder of photos (not searched recursively).
        out_dir: output folder (created).
        depth: a depth source, ``depth(stem, image) -> inverse depth`` (see
            :mod:`stereo.depth_sources`); must be picklable when ``workers > 0``.
        options: :class:`GenerateOptions`.
        workers: worker processes (spawned); 0 runs in this process.
        shard: ``(K, N)``: only samples whose stem hashes to shard K of N.
        progress: show a progress bar with the rate.
        log: where per-sample failures are reported (default: stderr).

    Raises:
        dream3d.errors.UserError: missing folder, unwritable output, no images, settings that
            differ from an earlier run in the same folder, or a depth model that cannot load.
    """
    options = options or GenerateOptions()
    log = log or _default_log
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise UserError(f"images folder '{images_dir}' does not exist or is not a folder; pass a folder of photos")
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise UserError(f"shard {k}/{n} is invalid: K/N needs 0 <= K < N")
    _ensure_output(out_dir)
    samples, ignored, duplicates = list_samples(images_dir)
    if not samples:
        raise UserError(
            f"no images in '{images_dir}' (looked for .png, .jpg, .jpeg, .webp, .bmp, .tif, ...); pass a folder of photos"
        )
    if hasattr(depth, "kind"):
        _ = depth.kind  # a model that cannot load or whose output kind is unknown fails here, once
    _check_settings(out_dir, _settings(options, depth))
    for sub in SUBDIRS + (("disparity_png",) if options.kitti_png else ()) + (("preview",) if options.preview else ()):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    summary = Summary(ignored=ignored)
    mine = [s for s in samples if n == 1 or shard_of(s.stem, n) == k]
    done = completed_stems(out_dir)
    todo = [s for s in mine if s.stem not in done]
    summary.skipped = len(mine) - len(todo)
    for name, reason in duplicates:
        if n == 1 or shard_of(Path(name).stem, n) == k:
            summary.failed.append((name, reason))
            log(f"failed: {name}: {reason}")
    context = (str(images_dir), str(out_dir), [s.file for s in samples], depth, options)

    bar = tqdm(
        total=len(todo), unit="pair", desc="stereo pairs", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    try:
        for status, name, reason in _run(todo, context, workers):
            if status == "ok":
                summary.written += 1
            elif status == "fatal":
                raise UserError(reason)
            else:
                summary.failed.append((name, reason))
                log(f"failed: {name}: {reason}")
            bar.update(1)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        failures = out_dir / ("failures.txt" if n == 1 else f"failures-{k}-of-{n}.txt")
        if summary.failed:
            write_text(failures, "".join(f"{name}\t{reason}\n" for name, reason in summary.failed))
        elif failures.exists():
            failures.unlink()
        write_index(out_dir)
    return summary


def _ensure_output(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(
            f"cannot write to output folder '{out_dir}' ({e.strerror or type(e).__name__}); choose a writable OUT_DIR"
        ) from None


def _run(todo: list[Sample], context: tuple, workers: int) -> Iterable[tuple[str, str, str | None]]:
    if not todo:
        return
    if workers <= 0:
        _init_context(*context)
        for sample in todo:
            yield _process(sample)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=workers, initializer=_init_context, initargs=context) as pool:
        chunk = max(1, min(16, len(todo) // (workers * 8)))
        yield from pool.imap_unordered(_process, todo, chunksize=chunk)
