"""Throughput of `dream3d batch txt2mesh`: local workers (1 vs 2) and Ray against local processes.

One small batch (``--prompts`` prompts, seed 0, short runs of the bundled prior) is run on three
backends into fresh folders, in ``--repeats`` interleaved rounds in this one process (after an
untimed one-run warm-up that reads torch and the prior from disk), so a change in the machine's
load hits all three; each backend's best round is compared (the round least disturbed by other
work on a shared machine):

- ``local, 1 worker``: the baseline (the worker gets every CPU thread);
- ``local, N workers`` (``--workers``, default 2): the workers share the threads;
- ``ray, N CPUs``: a Ray started here with N CPUs, one task per run (Ray's start-up is timed
  apart: on a cluster it is paid once, not per batch).

Reported: wall seconds of each batch (best and median round; worker start-up included), runs per
minute, and the ratios the issue asks for (throughput of N workers / 1 worker; Ray seconds / local
seconds with the same N). Run it with ``OMP_NUM_THREADS=1`` to compare processes, not thread
pools. Results go to ``benchmarks/results/batch.json``.

    OMP_NUM_THREADS=1 python benchmarks/batch.py                  # 4 prompts x steps=150, 2 rounds
    OMP_NUM_THREADS=1 python benchmarks/batch.py --prompts 6 --steps 100 --no-ray
"""

from __future__ import annotations

import argparse
import shutil
import statistics
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
    p.add_argument("--steps", type=int, default=150, help="steps per run (default 150)")
    p.add_argument("--workers", type=int, default=2, help="workers (and Ray CPUs) to compare with 1 (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the three batches, interleaved (default 2)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    args = p.parse_args()

    from dream3d.batch.backends import LocalBackend, RayBackend
    from dream3d.batch.txt2mesh import run_batch, share_cpus

    prompts = PROMPTS[: args.prompts]
    overrides = [f"steps={args.steps}", "export.turntable_formats=[gif]", "val_every=0"]
    root = Path(tempfile.mkdtemp(prefix="dream3d-batch-bench-"))
    n = args.workers
    labels = ["local 1 worker", f"local {n} workers"] + ([] if args.no_ray else [f"ray {n} cpus"])
    seconds = {label: [] for label in labels}

    def measure(label, backend, repeat):
        start = time.perf_counter()
        out = root / f"{label.replace(' ', '-')}-{repeat}"
        summary = run_batch(prompts, out, overrides=overrides, backend=backend, progress=False)
        seconds[label].append(time.perf_counter() - start)
        if summary.failed or summary.ran != len(prompts):
            sys.exit(f"{label}: {summary.line()}: {summary.failed}")
        shutil.rmtree(out)

    ray_backend, ray_start = None, None
    try:
        # warm-up (not timed): the first process to load torch and the prior reads them from disk
        run_batch(prompts[:1], root / "warm-up", overrides=["steps=1", *overrides[1:]], progress=False)
        if not args.no_ray:
            ray_backend = RayBackend(local_cpus=n)
            start = time.perf_counter()
            ray_backend.start()  # once: on a cluster Ray is up before a batch
            ray_start = time.perf_counter() - start
        for repeat in range(args.repeats):  # interleaved, so a change in the machine's load hits every backend
            measure(labels[0], LocalBackend(1, initializer=share_cpus(1)), repeat)
            measure(labels[1], LocalBackend(n, initializer=share_cpus(n)), repeat)
            if ray_backend is not None:
                measure(labels[2], ray_backend, repeat)
    finally:
        if ray_backend is not None:
            ray_backend.ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    best = {label: min(times) for label, times in seconds.items()}
    results = {
        label: {"seconds": [round(t, 1) for t in times], "best": round(best[label], 1)}
        for label, times in seconds.items()
    }
    rows = [
        [label, best[label], statistics.median(times), 60 * len(prompts) / best[label]]
        for label, times in seconds.items()
    ]
    ratios = {f"throughput {n} workers / 1 worker": round(best[labels[0]] / best[labels[1]], 2)}
    if not args.no_ray:
        ratios[f"ray / local seconds ({n})"] = round(best[labels[2]] / best[labels[1]], 2)
    print(f"\n{len(prompts)} prompts x {args.steps} steps, bundled prior, {args.repeats} rounds; {machine()}")
    print_table(["batch", "best s", "median s", "runs/min (best)"], rows)
    for name, value in ratios.items():
        print(f"{name}: {value} (best of {args.repeats})")
    if ray_start is not None:
        print(f"Ray start-up (once, not in the batch times): {ray_start:.1f} s")
    write_results(
        "batch",
        {
            "prompts": prompts,
            "steps": args.steps,
            "workers": n,
            "repeats": args.repeats,
            "results": results,
            "ratios": ratios,
            "ray_start_seconds": None if ray_start is None else round(ray_start, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
