"""The occupancy grid's update: our deterministic write vs nerfacc's indexed write, and its share of a step.

After the warm-up an update draws cells at random, some twice. nerfacc writes the new values with
``occs[cells] = values``; which of a repeated cell's values wins is then left to the threads, so
two runs of one seed could differ. Ours (:meth:`dream3d.renderers.sampler.OccupancyGrid.update`)
gives a repeated cell its last draw's value whatever the thread count, at the cost of a
``torch.unique``. This script times both on the same cells (median of ``--repeats``), checks that
ours equals the one-thread write, counts how often the plain write differs from it at the current
thread count, and relates the extra time to a measured step of ``dream3d txt2mesh`` on the bundled
prior's recipe (one update every ``renderer.grid.update_every`` steps). Target: the extra cost at
most 5% of the step time.

    python benchmarks/occupancy_update.py                  # grids of 32^3 (the CPU recipe), 64^3, 128^3
    python benchmarks/occupancy_update.py --threads 2 --resolutions 32 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, print_table, write_results  # noqa: E402


def draws(resolution: int, seed: int = 0):
    """Cells and values of one post-warm-up update: a quarter of the cells uniformly, a quarter more."""
    g = torch.Generator().manual_seed(seed)
    n = resolution**3
    occs = torch.rand(n, generator=g)
    cells = torch.cat([torch.randint(n, (n // 4,), generator=g), torch.randint(n, (n // 4,), generator=g)])
    return occs, cells, torch.rand(cells.numel(), generator=g)


def plain_write(occs, cells, occ, decay=0.95):
    occs[cells] = torch.maximum(occs[cells] * decay, occ)


def ours(occs, cells, occ, decay=0.95):
    values = torch.maximum(occs[cells] * decay, occ)
    unique, inverse = torch.unique(cells, return_inverse=True)
    last = torch.full_like(unique, -1).scatter_reduce_(0, inverse, torch.arange(cells.numel()), reduce="amax")
    occs[unique] = values[last]


def timed(fn, occs, cells, occ, repeats):
    times = []
    for _ in range(repeats):
        o = occs.clone()
        t0 = time.perf_counter()
        fn(o, cells, occ)
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


def step_seconds(steps: int) -> tuple[float, int]:
    """Seconds per step of the shapes recipe after its grid warm-up, and its update interval."""
    from dream3d.diffusion.core import LatentDiffusion
    from dream3d.systems.dreamfusion import DreamFusion
    from dream3d.text_to_3d import load_txt2mesh_config
    from dream3d.trainer import Trainer

    cfg = load_txt2mesh_config("a red cube")
    system = DreamFusion(cfg, cfg.prompt, LatentDiffusion.from_pretrained(None, device="cpu"), torch.device("cpu"))
    trainer = Trainer(
        system, cfg.renderer.grid.warmup_steps + steps, None, torch.Generator().manual_seed(0), progress=False
    )
    trainer.steps = cfg.renderer.grid.warmup_steps
    trainer.fit()
    start, t0 = trainer.step, time.perf_counter()
    trainer.steps += steps
    trainer.fit()
    return (time.perf_counter() - t0) / (trainer.step - start), cfg.renderer.grid.update_every


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--steps", type=int, default=20, help="txt2mesh steps timed for the step time (0: skip)")
    args = p.parse_args()
    if args.threads < 0 or args.repeats < 1 or args.steps < 0 or min(args.resolutions) < 2:
        p.error("--threads >= 0, --repeats >= 1, --steps >= 0 and resolutions >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    step_s, every = step_seconds(args.steps) if args.steps else (None, 16)

    rows, results = [], []
    for res in args.resolutions:
        occs, cells, occ = draws(res)
        torch.set_num_threads(1)
        reference = occs.clone()
        plain_write(reference, cells, occ)
        torch.set_num_threads(threads)
        ours_out, differs = occs.clone(), 0
        ours(ours_out, cells, occ)
        assert torch.equal(ours_out, reference), "ours must equal the one-thread write"
        for _ in range(args.repeats):
            o = occs.clone()
            plain_write(o, cells, occ)
            differs += not torch.equal(o, reference)
        t_plain, t_ours = (
            timed(plain_write, occs, cells, occ, args.repeats),
            timed(ours, occs, cells, occ, args.repeats),
        )
        share = (t_ours - t_plain) / 1000 / every / step_s if step_s else None
        results.append(
            {
                "resolution": res,
                "plain_ms": t_plain,
                "ours_ms": t_ours,
                "plain_differs": differs,
                "repeats": args.repeats,
                "extra_share_of_step": share,
            }
        )
        rows.append(
            [
                f"{res}^3",
                f"{t_plain:.2f}",
                f"{t_ours:.2f}",
                f"{differs}/{args.repeats}",
                f"{100 * share:.3f}%" if share is not None else "-",
            ]
        )
    print(
        f"{machine()}, {threads} torch threads; txt2mesh step (shapes recipe) "
        f"{step_s * 1000:.0f} ms, one update every {every} steps"
        if step_s
        else f"{machine()}, {threads} threads"
    )
    print_table(["grid", "nerfacc write ms", "ours ms", "write != 1-thread", "extra / step"], rows)
    write_results(
        "occupancy_update",
        {
            "threads": threads,
            "step_seconds": step_s,
            "update_every": every,
            "results": results,
            "target_extra_share": 0.05,
        },
    )


if __name__ == "__main__":
    main()
