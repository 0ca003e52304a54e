"""Throughput of `dream3d batch txt2mesh`: local workers (1 vs 2) and Ray against local processes.

One small batch (``--prompts`` prompts, seed 0, short runs of the bundled prior) is run three times
into fresh folders, one after another in this one process (after an untimed one-run warm-up that
reads torch and the prior from disk):

- ``local, 1 worker``: the baseline (the worker gets every CPU thread);
- ``local, N workers`` (``--workers``, default 2): the workers share the threads;
- ``ray, N CPUs``: a Ray started here with N CPUs, one task per run (Ray's start-up is timed
  apart: on a cluster it is paid once, not per batch).

Reported: wall seconds of each batch, runs per minute, and the ratios the issue asks for
(throughput of N workers / 1 worker; Ray seconds / local seconds with the same N). Results go to
``benchmarks/results/batch.json``.

    python benchmarks/batch.py                        # 4 prompts x steps=50
    python benchmarks/batch.py --prompts 6 --steps 100 --no-ray
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, print_table, write_results  # noqa: E402

PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a yellow torus", "a purple cylinder", "a red sphere"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=4, help="how many prompts (default 4, at most 6)")
    p.add_argument("--steps", type=int, default=50, help="steps per run (default 50)")
    p.add_argument("--workers", type=int, default=2, help="workers (and Ray CPUs) to compare with 1 (default 2)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    args = p.parse_args()

    from dream3d.batch.backends import LocalBackend, RayBackend
    from dream3d.batch.txt2mesh import run_batch, share_cpus

    prompts = PROMPTS[: args.prompts]
    overrides = [f"steps={args.steps}", "export.turntable_formats=[gif]", "val_every=0"]
    root = Path(tempfile.mkdtemp(prefix="dream3d-batch-bench-"))
    rows, results = [], {}

    def measure(label, backend, **extra):
        start = time.perf_counter()
        summary = run_batch(
            prompts, root / label.replace(" ", "-"), overrides=overrides, backend=backend, progress=False
        )
        seconds = time.perf_counter() - start
        if summary.failed or summary.ran != len(prompts):
            sys.exit(f"{label}: {summary.line()}: {summary.failed}")
        results[label] = {
            "seconds": round(seconds, 1),
            "runs_per_minute": round(60 * len(prompts) / seconds, 2),
            **extra,
        }
        rows.append([label, seconds, 60 * len(prompts) / seconds])

    try:
        # warm-up (not timed): the first process to load torch and the prior reads them from disk
        run_batch(prompts[:1], root / "warm-up", overrides=["steps=1", *overrides[1:]], progress=False)
        measure("local 1 worker", LocalBackend(1, initializer=share_cpus(1)))
        n = args.workers
        measure(f"local {n} workers", LocalBackend(n, initializer=share_cpus(n)))
        if not args.no_ray:
            ray_backend = RayBackend(local_cpus=n)
            start = time.perf_counter()
            ray_backend.start()
            started = time.perf_counter() - start
            try:
                measure(f"ray {n} cpus", ray_backend, ray_start_seconds=round(started, 1))
            finally:
                ray_backend.ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    local1, localn = results["local 1 worker"], results[f"local {args.workers} workers"]
    ratios = {f"throughput {args.workers} workers / 1 worker": round(local1["seconds"] / localn["seconds"], 2)}
    if not args.no_ray:
        ratios[f"ray / local seconds ({args.workers})"] = round(
            results[f"ray {args.workers} cpus"]["seconds"] / localn["seconds"], 2
        )
    print(f"\n{len(prompts)} prompts x {args.steps} steps, bundled prior; {machine()}")
    print_table(["batch", "seconds", "runs/min"], rows)
    for name, value in ratios.items():
        print(f"{name}: {value}")
    if not args.no_ray:
        print(f"Ray start-up (not in the batch time): {results[f'ray {args.workers} cpus']['ray_start_seconds']} s")
    write_results(
        "batch",
        {"prompts": prompts, "steps": args.steps, "workers": args.workers, "results": results, "ratios": ratios},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
