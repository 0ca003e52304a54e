"""Text-to-3D quality on the shapes world, with the bundled prior on this machine.

For each prompt of a fixed set, one seeded ``dream3d txt2mesh`` run (in its own process, so peak
memory is per prompt), then the shapes world's measures (``docs/shapes-world.md``) on the exported mesh
(:func:`dream3d.shapes.scoring.score_asset`): best 3D IoU, the best-IoU shape, the colour of the
mean surface albedo. Targets (CPU, bundled prior): mean IoU >= 0.7, shape right >= 80%, colour
right >= 90%, each prompt <= 5 minutes and <= 4 GB.

    python benchmarks/text_to_3d.py                         # all prompts, configs/shapes-dreamfusion.yaml
    python benchmarks/text_to_3d.py --prompts "a red cube" "a blue sphere" steps=400
    python benchmarks/text_to_3d.py --jobs 2      # two prompts at a time, one thread each: quicker, slower per prompt
    python benchmarks/text_to_3d.py --no-score --out runs/gpu ...   # on a machine without open3d, then
    python benchmarks/text_to_3d.py --score-only --out runs/gpu     # score those runs here
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

PROMPTS = [
    "a red sphere",
    "a blue cube",
    "a green cone",
    "a yellow cylinder",
    "a purple torus",
    "a orange sphere",
    "a red cone",
    "a green cube",
    "a blue cylinder",
    "a yellow torus",
]
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
TARGETS = {"mean_iou": 0.7, "shape_right": 0.8, "colour_right": 0.9, "seconds": 300, "peak_mb": 4096}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", nargs="+", default=PROMPTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None)
    p.add_argument(
        "--model", default=None, help="another shapes-world prior (still with the shapes recipe unless --config)"
    )
    p.add_argument("--out", default=None, help="keep run folders here (default: a temporary folder)")
    p.add_argument(
        "--jobs", type=int, default=1, help="prompts run at once, sharing the cores (each then runs slower than alone)"
    )
    p.add_argument(
        "--no-score",
        action="store_true",
        help="run only (e.g. on a GPU machine without open3d); score later with --score-only --out DIR",
    )
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out instead of running")
    p.add_argument(
        "--picture",
        default=None,
        metavar="PNG",
        help="also save the RGB row of each run's last validation grid, two runs per row",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    # --prompts takes every word after it: key=value items there are overrides, not prompts
    args.overrides += [w for w in args.prompts if OVERRIDE.match(w)]
    args.prompts = [w for w in args.prompts if not OVERRIDE.match(w)]
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.score_only and args.no_score:
        p.error("--no-score runs without scoring and --score-only scores without running; pass one of them")
    if args.score_only and not args.out:
        p.error("--score-only needs --out DIR, the folder of an earlier --no-score run")
    from dream3d.text_to_3d import default_config_path

    config = args.config or str(default_config_path(None))  # the shapes recipe, whichever prior

    root = Path(args.out or tempfile.mkdtemp(prefix="bench-t23d-"))
    env = dict(os.environ)
    if args.jobs > 1:  # share the cores: each run gets its part (wall times then include the sharing)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))

    def run(prompt: str):
        out = root / prompt.replace(" ", "-")
        cmd = [sys.executable, "-m", "dream3d", "txt2mesh", prompt, "-o", str(out), "--seed", str(args.seed)]
        cmd += ["--config", config] + (["--model", args.model] if args.model else [])
        cmd += list(args.overrides)
        if args.score_only:  # the earlier run's exit status and wall time
            done = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
            return out, done.get("returncode", 1), done.get("stderr", "no earlier run here"), done.get("seconds", 0.0)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        stderr = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else str(proc.returncode)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps({"returncode": proc.returncode, "stderr": stderr, "seconds": wall}))
        return out, proc.returncode, stderr, wall

    from concurrent.futures import ThreadPoolExecutor

    rows, results = [], []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for prompt, (out, returncode, stderr, wall) in zip(args.prompts, pool.map(run, args.prompts)):
            if returncode != 0:
                print(f"{prompt}: run failed: {stderr}")
                results.append({"prompt": prompt, "failed": True, "seconds": wall})
                rows.append([prompt, "failed", "", "", "", f"{wall:.0f}", ""])
                continue
            metrics = json.loads((out / "metrics.json").read_text())
            if args.no_score:
                results.append(
                    {
                        "prompt": prompt,
                        "seconds": wall,
                        "peak_mb": metrics["peak_memory_mb"],
                        "device": metrics["device"],
                    }
                )
                rows.append([prompt, "", "", "", "", f"{wall:.0f}", metrics["peak_memory_mb"]])
                continue
            from dream3d.shapes.scoring import load_asset, score_asset

            score = score_asset(load_asset(out / "mesh.ply"), prompt)
            results.append({"prompt": prompt, "seconds": wall, "peak_mb": metrics["peak_memory_mb"], **score})
            rows.append(
                [
                    prompt,
                    f"{score['iou']:.3f}",
                    score["predicted_shape"],
                    score["predicted_colour"],
                    f"{score['colour_error']:.3f}",
                    f"{wall:.0f}",
                    metrics["peak_memory_mb"],
                ]
            )
    ok = [r for r in results if not r.get("failed")]
    if args.no_score:
        print(f"{machine()}; runs in {root} (not scored: --score-only --out {root} scores them)")
        print_table(["prompt", "IoU", "shape", "colour", "colour err", "s", "peak MiB"], rows)
        return
    n = max(1, len(results))
    summary = {
        "mean_iou": sum(r["iou"] for r in ok) / n,
        "shape_right": sum(r["shape_right"] for r in ok) / n,
        "colour_right": sum(r["colour_right"] for r in ok) / n,
        "max_seconds": max((r["seconds"] for r in results), default=0.0),
        "max_peak_mb": max((r["peak_mb"] for r in ok), default=0),
    }
    print(f"{machine()}; runs in {root}")
    print_table(["prompt", "IoU", "shape", "colour", "colour err", "s", "peak MiB"], rows)
    print(
        f"mean IoU {summary['mean_iou']:.3f} (>= {TARGETS['mean_iou']}), shape right {summary['shape_right']:.0%} "
        f"(>= 80%), colour right {summary['colour_right']:.0%} (>= 90%), max {summary['max_seconds']:.0f} s "
        f"(<= 300), max {summary['max_peak_mb']} MiB (<= 4096)"
    )
    if args.picture:
        save_picture(args.picture, [root / r["prompt"].replace(" ", "-") for r in ok])
    write_results(
        "text_to_3d",
        {
            "summary": summary,
            "targets": TARGETS,
            "results": results,
            "overrides": args.overrides,
            "config": config,
            "model": args.model,
            "jobs": args.jobs,
        },
    )


def save_picture(path: str, runs: list[Path]) -> None:
    """The top (RGB) row of each run's last validation grid (RGB | normal | opacity rows), two runs
    side by side per row."""
    import numpy as np
    from PIL import Image

    from dream3d.grid import make_grid
    from dream3d.io import save_image

    rows = []
    for run in runs:
        grids = sorted((run / "val").glob("step-*.png"))
        if grids:
            grid = np.asarray(Image.open(grids[-1]).convert("RGB"))
            rows.append(grid[: (grid.shape[0] + 2) // 3 - 2])  # make_grid's 2-pixel padding between rows
    if rows:
        save_image(path, make_grid(rows, cols=2, pad=6))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
