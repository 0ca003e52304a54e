"""``dream3d batch txt2mesh``: one text-to-3D run per (prompt, seed), on a backend, resumable.

Layout of the output folder::

    batch.json            the batch's settings (config, model, overrides) and items
    <name>/               one txt2mesh run folder per item (see dream3d.text_to_3d), plus
    <name>/item.json      what the batch knows of the item: status, attempts, error, resumed
    index.jsonl           one line per item: status (ok / failed / pending), error, metrics
    contact-sheet.png     every run's turntable, labelled

A rerun with the same settings skips the finished runs, resumes the unfinished ones from their
checkpoints and runs the rest; a failing item is recorded and the batch goes on; a worker that
dies is replaced and its item run again (see :mod:`dream3d.batch.backends`). Shard ``K/N`` runs
the items whose name hashes to ``K``, so a job array splits a batch with no coordination.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError
from ..io import ensure_writable_dir, write_json
from ..text_to_3d import load_txt2mesh_config, run_txt2mesh
from .backends import LocalBackend
from .index import (
    INDEX,
    MANIFEST,
    finished_metrics,
    read_json,
    write_contact_sheets,
    write_index,
    write_record,
)
from .items import BatchItem, make_items, shard_items

INDEX_EVERY_S = 10.0  # rewrite index.jsonl at most this often (1 s per 100 items) while the batch runs, and at the end


@dataclass
class BatchSummary:
    """What one invocation did: ``ran`` items finished now, ``skipped`` finished before, ``failed``
    ``(name, error)``; ``counts``: the statuses of the whole batch in ``index.jsonl``."""

    ran: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    sheets: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.ran} run(s) finished, {self.skipped} skipped (finished before), {len(self.failed)} failed "
            f"in {self.seconds:.0f} s"
        )


def has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(folder.glob("*.pt"))


def run_item(job: dict) -> dict:
    """One item in a worker: its txt2mesh run, resumed when the folder holds a checkpoint; returns
    the item's record. Errors are the record's, never raised (Ctrl-C still stops)."""
    run_dir = Path(job["out"]) / job["name"]
    start = time.perf_counter()
    record = {"name": job["name"], "prompt": job["prompt"], "seed": job["seed"]}
    try:
        if finished_metrics(run_dir) is not None:  # another shard or an earlier attempt finished it
            return {**record, "status": "ok", "resumed": False, "seconds": 0.0}
        resume = has_checkpoint(run_dir)
        cfg = load_txt2mesh_config(job["prompt"], job["config"], job["model"], job["seed"], job["overrides"])
        run_txt2mesh(cfg, run_dir, resume=resume, progress=False)
        record.update(status="ok", resumed=resume)
        if job.get("drop_checkpoints"):  # finished (metrics.json says so): the checkpoints only cost disk now
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    except Exception as e:  # one failing run must not stop the batch: record it
        message = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
        record.update(status="failed", error=" ".join(message.split())[:500])
        if not isinstance(e, UserError):
            record["traceback"] = traceback.format_exc()[-4000:]
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def share_cpus(workers: int) -> Callable[[int], None]:
    """A worker initializer that gives each of ``workers`` workers its share of the CPU threads
    (unless ``OMP_NUM_THREADS`` says otherwise) and, on a machine with several GPUs, one GPU."""
    return _SharedMachine(workers)


@dataclass
class _SharedMachine:
    workers: int

    def __call__(self, number: int) -> None:
        import torch  # noqa: PLC0415 - runs in the worker, where the run imports it anyway

        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.workers)))
        if torch.cuda.device_count() > 1:
            torch.cuda.set_device(number % torch.cuda.device_count())


def check_manifest(out: Path, settings: dict) -> None:
    """A folder holds one batch's runs: refuse other settings (config, model, overrides)."""
    old = read_json(out / MANIFEST)
    if old is not None:
        differ = [k for k in settings if k != "items" and old.get(k) != settings[k]]
        if differ:
            was = "; ".join(f"{k}: {old.get(k)!r} then, {settings[k]!r} now" for k in differ)
            raise UserError(
                f"'{out}' holds a batch with other settings ({was}); rerun with the same settings to "
                f"resume, or choose another output folder"
            )
    write_json(out / MANIFEST, settings)


def load_manifest(out: str | Path) -> tuple[dict, list[BatchItem]]:
    """The settings and items of the batch in ``out`` (for ``dream3d batch index``)."""
    manifest = read_json(Path(out) / MANIFEST)
    if manifest is None:
        raise UserError(f"'{out}' holds no batch (no {MANIFEST}); pass the -o folder of dream3d batch txt2mesh")
    return manifest, [BatchItem(p, s) for p, s in manifest["items"]]


def rebuild_index(out: str | Path) -> BatchSummary:
    """Rewrite ``index.jsonl`` and the contact sheet(s) of the batch in ``out`` from its run folders."""
    out = Path(out)
    _, items = load_manifest(out)
    return BatchSummary(counts=write_index(out, items), sheets=write_contact_sheets(out, items))


def run_batch(
    prompts: list[str],
    out: str | Path,
    *,
    config: str | Path | None = None,
    model: str | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    backend=None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    drop_checkpoints: bool = False,
    runner: Callable[[dict], dict] = run_item,
) -> BatchSummary:
    """Run every (prompt, seed) of shard ``shard`` into ``out/<name>/`` on ``backend`` (default:
    one local worker process) and write the index and contact sheet (module docstring).

    ``seeds``: default the config's seed. ``drop_checkpoints``: delete a run's checkpoints once it
    finished (they are a large part of a run folder). ``runner``: what runs one item in a worker (a
    picklable top-level function taking the job dict; default :func:`run_item`).
    """
    start = time.perf_counter()
    if not prompts:
        raise UserError("the batch has no prompt; pass a file with one prompt a line")
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise UserError(f"shard {k}/{n} is invalid: K/N needs 0 <= K < N")
    # Bad settings fail here, once, before any worker starts.
    cfg = load_txt2mesh_config(prompts[0], config, model, seeds[0] if seeds else None, list(overrides))
    seeds = list(seeds) if seeds else [cfg.seed]
    out = ensure_writable_dir(Path(out).resolve())
    items = make_items(prompts, seeds)
    config_path = str(Path(config).resolve()) if config is not None else None
    check_manifest(
        out,
        {"command": "txt2mesh", "config": config_path, "model": model, "overrides": list(overrides),
         "items": [[i.prompt, i.seed] for i in items]},
    )  # fmt: skip
    backend = backend or LocalBackend(1, initializer=share_cpus(1))
    mine = shard_items(items, shard)
    todo = [item for item in mine if finished_metrics(out / item.name) is None]
    summary = BatchSummary(skipped=len(mine) - len(todo))
    jobs = [
        {"out": str(out), "name": item.name, "prompt": item.prompt, "seed": item.seed, "config": config_path,
         "model": model, "overrides": list(overrides), "drop_checkpoints": drop_checkpoints}
        for item in todo
    ]  # fmt: skip
    write_index(out, items)
    written = time.monotonic()
    bar = tqdm(total=len(todo), desc="batch txt2mesh", unit="run", disable=not progress, file=sys.stderr)
    try:
        for done in backend.map(runner, jobs):
            item = todo[done.index]
            record = done.value or {"name": item.name, "prompt": item.prompt, "seed": item.seed, "status": "failed"}
            record["attempts"] = done.attempts
            if done.error:
                record["error"] = done.error
            write_record(out / item.name, record)
            if record["status"] == "ok":
                summary.ran += 1
            else:
                summary.failed.append((item.name, record.get("error", "")))
                bar.write(f"failed: {item.prompt!r} seed {item.seed}: {record.get('error')}")
            bar.set_postfix(done=summary.ran, failed=len(summary.failed), refresh=False)
            bar.update()
            if time.monotonic() - written > max(INDEX_EVERY_S, len(items) / 100):
                write_index(out, items)
                written = time.monotonic()
    finally:
        bar.close()
        summary.counts = write_index(out, items)
        summary.sheets = write_contact_sheets(out, items)
        summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["BatchSummary", "INDEX", "rebuild_index", "run_batch", "run_item"]
