"""A data set written as N shards, each one task on a batch backend (``dream3d stereo generate
--backend ray``): every task runs :func:`stereo.writer.generate` on its shard, then ``pairs.txt``
is rebuilt from the complete samples.

The writer is resumable per sample, so a task that a backend runs again (its worker or node died)
skips what its first attempt finished.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .writer import GenerateOptions, Summary, generate, write_index


def generate_shard(task: tuple) -> Summary:
    """One shard (a backend task): ``(images_dir, out_dir, depth, options, (K, N))``."""
    images_dir, out_dir, depth, options, shard = task
    return generate(images_dir, out_dir, depth, options, workers=0, shard=shard, progress=False, log=lambda m: None)


def generate_sharded(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    depth: Callable[[str, np.ndarray], np.ndarray],
    options: GenerateOptions,
    backend,
    shards: int,
    progress: bool = True,
) -> Summary:
    """Generate the data set as ``shards`` tasks on ``backend`` (e.g. a
    :class:`dream3d.batch.backends.RayBackend`); returns the tasks' summaries added up."""
    images_dir, out_dir = str(Path(images_dir).resolve()), str(Path(out_dir).resolve())
    tasks = [(images_dir, out_dir, depth, options, (k, shards)) for k in range(shards)]
    total = Summary()
    bar = tqdm(total=shards, unit="shard", desc="stereo shards", disable=not progress, file=sys.stderr)
    try:
        for done in backend.map(generate_shard, tasks):
            if done.error:
                total.failed.append((f"shard {done.index}/{shards}", done.error))
            else:
                part: Summary = done.value
                total.written += part.written
                total.skipped += part.skipped
                total.failed += part.failed
                total.ignored = part.ignored
                total.seconds = max(total.seconds, part.seconds)
            bar.update()
    finally:
        bar.close()
        write_index(out_dir)
    return total
