"""A batch's record of itself: ``index.jsonl`` (one line per item: status, error, metrics) and a
contact sheet of every run's turntable.

What is true lives in the run folders: a run is finished when its ``metrics.json`` exists and
says it was not interrupted (``txt2mesh`` writes that file last); ``item.json`` holds what the
batch learned about the item (attempts, the error of a failed run, whether it resumed). The index
and the contact sheet are rebuilt from them, atomically, so a crash never leaves a half index and
``dream3d batch index OUT`` rebuilds both after the shards of a job array have finished.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from ..io import save_image, write_json, write_text
from .items import BatchItem

INDEX, SHEET, RECORD, MANIFEST = "index.jsonl", "contact-sheet.png", "item.json", "batch.json"
TILE, LABEL, PER_SHEET = 128, 26, 100  # pixels per picture, pixels of text under it, pictures per sheet


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def finished_metrics(run_dir: Path) -> dict | None:
    """The run's ``metrics.json`` when the run finished (``None``: not run, unfinished, interrupted)."""
    metrics = read_json(run_dir / "metrics.json")
    return None if metrics is None or metrics.get("interrupted") else metrics


def write_record(run_dir: Path, record: dict) -> None:
    write_json(run_dir / RECORD, record)


def entry(out: Path, item: BatchItem) -> dict:
    """The index line of ``item``: status ``ok`` / ``failed`` / ``pending``, the batch's record and
    the run's scalar metrics."""
    run_dir = out / item.name
    record = read_json(run_dir / RECORD) or {}
    metrics = finished_metrics(run_dir)
    line = {"name": item.name, "prompt": item.prompt, "seed": item.seed, "run_dir": item.name}
    if metrics is not None:
        line["status"] = "ok"
        line.update({k: record[k] for k in ("attempts", "resumed") if k in record})
        line["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    elif record.get("status") == "failed":
        line.update(status="failed", error=record.get("error"), attempts=record.get("attempts"))
    else:
        line["status"] = "pending"
    return line


def write_index(out: Path, items: list[BatchItem]) -> dict[str, int]:
    """Write ``out/index.jsonl`` from the run folders; returns the count of each status."""
    rows = [entry(out, item) for item in items]
    write_text(out / INDEX, "".join(json.dumps(row) + "\n" for row in rows))
    counts = {"ok": 0, "failed": 0, "pending": 0}
    for row in rows:
        counts[row["status"]] += 1
    return counts


def write_contact_sheets(out: Path, items: list[BatchItem]) -> list[Path]:
    """``contact-sheet.png``: each run's turntable (first frame) labelled with its prompt and seed;
    a failed or unfinished run is a grey tile. More than 100 runs: ``contact-sheet-001.png``, ..."""
    pages = [items[i : i + PER_SHEET] for i in range(0, len(items), PER_SHEET)]
    paths = []
    for number, page in enumerate(pages, 1):
        path = out / (SHEET if len(pages) == 1 else f"contact-sheet-{number:03d}.png")
        save_image(path, _sheet(out, page))
        paths.append(path)
    for stale in sorted(out.glob("contact-sheet-*.png"))[len(pages) if len(pages) > 1 else 0 :]:
        stale.unlink()
    return paths


def _sheet(out: Path, items: list[BatchItem]) -> Image.Image:
    columns = math.ceil(math.sqrt(len(items)))
    rows = math.ceil(len(items) / columns)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + LABEL)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, item in enumerate(items):
        x, y = (i % columns) * TILE, (i // columns) * (TILE + LABEL)
        picture = _thumbnail(out / item.name)
        if picture is None:
            draw.rectangle([x + 2, y + 2, x + TILE - 3, y + TILE - 3], fill=(200, 200, 200))
            status = "failed" if (read_json(out / item.name / RECORD) or {}).get("status") == "failed" else "pending"
            draw.text((x + 8, y + TILE // 2 - 6), status, fill=(90, 90, 90))
        else:
            sheet.paste(picture, (x, y))
        draw.text((x + 3, y + TILE + 1), item.prompt[:21], fill=(0, 0, 0))
        draw.text((x + 3, y + TILE + 13), f"seed {item.seed}", fill=(90, 90, 90))
    return sheet


def _thumbnail(run_dir: Path) -> Image.Image | None:
    """The first turntable frame of a finished run (else its last validation grid), ``TILE`` px."""
    if finished_metrics(run_dir) is None:
        return None
    source = run_dir / "turntable.gif"
    if not source.is_file():
        grids = sorted((run_dir / "val").glob("step-*.png"))
        source = grids[-1] if grids else None
    if source is None:
        return None
    try:
        with Image.open(source) as image:
            picture = image.convert("RGB")
    except OSError:
        return None
    picture.thumbnail((TILE, TILE), Image.Resampling.NEAREST if max(picture.size) < TILE else Image.Resampling.LANCZOS)
    if max(picture.size) < TILE:
        scale = TILE / max(picture.size)
        picture = picture.resize(
            (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.NEAREST
        )
    tile = Image.new("RGB", (TILE, TILE), "white")
    tile.paste(picture, ((TILE - picture.width) // 2, (TILE - picture.height) // 2))
    return tile
