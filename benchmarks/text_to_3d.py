"""Text-to-3D quality on the shapes world, with the bundled prior on this machine: a held-out benchmark.

Two prompt sets: **dev**, ten prompts the recipes may be tuned on, and **test**, the other 20
shape-colour pairs, never used for tuning (docs/benchmarks.md records which recipe was tuned on
which set). Each (prompt, seed) is one ``dream3d txt2mesh`` run in its own process (so peak memory
is per run), scored on its exported mesh with the shapes world's measures
(:func:`dream3d.shapes.scoring.score_asset`, ``docs/shapes-world.md``): best 3D IoU, the best-IoU
shape, the colour of the mean surface albedo, the **saturation error** (the surface's mean HSV
saturation minus the asked colour's: > 0 over-saturated, as SDS tends to be) and the **margin**, the
asked shape's IoU minus the best other shape's (> 0 when the asked shape wins).

Next to the results it prints what answers that ignore the optimisation score, computed from the
ground truth: the true sphere for every prompt, and the best single fixed shape for all prompts
(its mean IoU and shape accuracy). Targets (test set, both seeds, CPU, bundled prior): mean IoU
>= 0.80 and at least 0.15 above the best fixed answer; asked shape wins >= 90%; colour right >= 95%;
each run <= 4 minutes alone; peak memory <= 2 GB.

    python benchmarks/text_to_3d.py --jobs 2                    # test set, seeds 0 and 1, the shapes recipe
    python benchmarks/text_to_3d.py --set dev --seeds 0          # tuning: the dev set
    python benchmarks/text_to_3d.py --prompts "a red cube" "a blue sphere" steps=400
    python benchmarks/text_to_3d.py --no-score --out runs/gpu ...   # on a machine without open3d, then
    python benchmarks/text_to_3d.py --score-only --out runs/gpu ... # score those runs here (same set/seeds)
    python benchmarks/text_to_3d.py --reexport --out runs/gpu ...   # export finished runs again, then score
    python benchmarks/text_to_3d.py --compare runs/sds runs/vsd --picture cmp.png  # their turntables side by side
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

DEV = [
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
TARGETS = {
    "mean_iou": 0.80,
    "margin_over_fixed": 0.15,
    "shape_right": 0.90,
    "colour_right": 0.95,
    "seconds": 240,
    "peak_mb": 2048,
}


def prompt_sets() -> dict[str, list[str]]:
    """``dev`` (the ten tuning prompts) and ``test`` (the other 20 objects, shape-major)."""
    from dream3d.shapes.objects import all_objects

    test = [o.prompt for o in all_objects() if o.prompt not in DEV]
    return {"dev": list(DEV), "test": test, "all": list(DEV) + test}


def fixed_answers(prompts: list[str]) -> dict[str, dict]:
    """What answering one true shape for every prompt scores (mean IoU, shape accuracy), per shape."""
    from dream3d.shapes.metrics import best_iou, occupancy_grid
    from dream3d.shapes.objects import SHAPES, parse_prompt

    asked = [parse_prompt(p)[0] for p in prompts]
    out = {}
    for answer in SHAPES:
        occ = occupancy_grid(answer)
        ious = {shape: best_iou(occ, shape).iou for shape in set(asked)}
        out[answer] = {
            "mean_iou": sum(ious[a] for a in asked) / len(asked),
            "shape_right": sum(a == answer for a in asked) / len(asked),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=["dev", "test", "all"], default="test", help="prompt set (default: test)")
    p.add_argument("--prompts", nargs="+", default=None, help="these prompts instead of a set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--config", default=None)
    p.add_argument(
        "--model", default=None, help="another shapes-world prior (still with the shapes recipe unless --config)"
    )
    p.add_argument("--out", default=None, help="keep run folders here (default: a temporary folder)")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs at once, sharing the cores (each then runs slower than alone)"
    )
    p.add_argument(
        "--no-score",
        action="store_true",
        help="run only (e.g. on a GPU machine without open3d); score later with --score-only --out DIR",
    )
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out instead of running")
    p.add_argument(
        "--reexport",
        action="store_true",
        help="export the finished runs in --out again with this code (after a change to the export; pass the same "
        "--config and key=value) and score them; their times and peak memory stay those of the runs",
    )
    p.add_argument(
        "--picture",
        default=None,
        metavar="PNG",
        help="also save the RGB row of each run's last validation grid, two runs per row; for coarse-to-fine runs, "
        "turntable frames of the coarse and the fine asset side by side, a run per row",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="DIR",
        help="with --picture: draw turntable frames of the same prompt and seed from each of these earlier --out "
        "folders side by side (e.g. one per guidance), a row per run of the set; runs and scores nothing",
    )
    p.add_argument(
        "--from-runs",
        default=None,
        metavar="DIR",
        help="a coarse-to-fine --config: start each fine stage from the finished run of the same prompt and seed "
        "in DIR (e.g. an earlier --out of configs/shapes-dreamfusion.yaml); its mesh is the coarse asset",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    prompts = args.prompts
    if prompts is not None:  # --prompts takes every word after it: key=value items there are overrides
        args.overrides += [w for w in prompts if OVERRIDE.match(w)]
        prompts = [w for w in prompts if not OVERRIDE.match(w)]
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.score_only and args.no_score:
        p.error("--no-score runs without scoring and --score-only scores without running; pass one of them")
    if args.score_only and not args.out:
        p.error("--score-only needs --out DIR, the folder of an earlier --no-score run")
    if args.reexport and (args.score_only or args.no_score or not args.out):
        p.error("--reexport needs --out DIR, the folder of earlier runs, and neither --score-only nor --no-score")
    from dream3d.shapes.objects import parse_prompt
    from dream3d.text_to_3d import default_config_path

    set_name = "custom" if prompts is not None else args.set
    prompts = prompts if prompts is not None else prompt_sets()[args.set]
    bad = [q for q in prompts if parse_prompt(q) is None]
    if bad:
        p.error(f"not shapes-world prompts: {bad}; use 'a <colour> <shape>'")
    if args.compare:
        if not args.picture:
            p.error("--compare draws a picture; pass --picture PNG")
        names = [f"{prompt.replace(' ', '-')}-seed{seed}" for seed in args.seeds for prompt in prompts]
        save_side_by_side_picture(args.picture, [[Path(d) / name for d in args.compare] for name in names])
        return
    config = args.config or str(default_config_path(None))  # the shapes recipe, whichever prior
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-t23d-"))
    env = dict(os.environ)
    if args.jobs > 1:  # share the cores: each run gets its part (wall times then include the sharing)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    runs = [(prompt, seed) for seed in args.seeds for prompt in prompts]

    def run(item):
        prompt, seed = item
        out = root / f"{prompt.replace(' ', '-')}-seed{seed}"
        cmd = [sys.executable, "-m", "dream3d", "txt2mesh", prompt, "-o", str(out), "--seed", str(seed)]
        cmd += ["--config", config] + (["--model", args.model] if args.model else [])
        cmd += list(args.overrides)
        if args.from_runs:
            cmd += ["--from", str(Path(args.from_runs) / out.name)]
        if args.score_only or args.reexport:  # the earlier run's exit status, wall time and peak memory
            done = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
            if args.reexport and done.get("returncode") == 0:
                if "peak_mb" not in done:  # older bench.json: the run's own metrics still hold it
                    done["peak_mb"] = json.loads((out / "metrics.json").read_text())["peak_memory_mb"]
                    (out / "bench.json").write_text(json.dumps(done))
                proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    return out, proc.returncode, (proc.stderr.strip().splitlines() or ["?"])[-1], done["seconds"]
            return out, done.get("returncode", 1), done.get("stderr", "no earlier run here"), done.get("seconds", 0.0)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        stderr = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else str(proc.returncode)
        out.mkdir(parents=True, exist_ok=True)
        done = {"returncode": proc.returncode, "stderr": stderr, "seconds": wall}
        if proc.returncode == 0:
            done["peak_mb"] = json.loads((out / "metrics.json").read_text())["peak_memory_mb"]
        (out / "bench.json").write_text(json.dumps(done))
        return out, proc.returncode, stderr, wall

    headers = ["prompt", "seed", "IoU", "margin", "shape", "colour", "colour err", "sat err", "s", "peak MiB"]
    rows, results = [], []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (prompt, seed), (out, returncode, stderr, wall) in zip(runs, pool.map(run, runs)):
            if returncode != 0:
                print(f"{prompt} (seed {seed}): run failed: {stderr}")
                results.append({"prompt": prompt, "seed": seed, "failed": True, "seconds": wall})
                rows.append([prompt, seed, "failed", "", "", "", "", "", f"{wall:.0f}", ""])
                continue
            metrics = json.loads((out / "metrics.json").read_text())
            done = json.loads((out / "bench.json").read_text())
            peak = done.get("peak_mb", metrics["peak_memory_mb"])  # the run's, not a re-export's
            if args.no_score:
                results.append(
                    {"prompt": prompt, "seed": seed, "seconds": wall, "peak_mb": peak, "device": metrics["device"]}
                )
                rows.append([prompt, seed, "", "", "", "", "", "", f"{wall:.0f}", peak])
                continue
            from dream3d.shapes.scoring import load_asset, score_asset

            score = score_asset(load_asset(out / "mesh.ply"), prompt)
            others = [v for k, v in score["shape_ious"].items() if k != score["shape"]]
            margin = score["shape_ious"][score["shape"]] - max(others)
            result = {"prompt": prompt, "seed": seed, "seconds": wall, "peak_mb": peak, "margin": margin, **score}
            coarse_mesh = Path(args.from_runs) / out.name if args.from_runs else out / "coarse"
            if (coarse_mesh / "mesh.ply").is_file():  # a coarse-to-fine run: its coarse stage's asset too
                coarse = score_asset(load_asset(coarse_mesh / "mesh.ply"), prompt)
                keys = ("iou", "predicted_shape", "shape_right", "predicted_colour", "colour_right", "colour_error")
                result["coarse"] = {k: coarse[k] for k in keys}
                result["stage_seconds"] = {k: v["seconds"] for k, v in metrics.get("stages", {}).items()}
                if args.from_runs:  # the coarse stage ran there
                    earlier = json.loads((coarse_mesh / "metrics.json").read_text())
                    result["stage_seconds"] = {"coarse": earlier["seconds"], **result["stage_seconds"]}
            results.append(result)
            rows.append(
                [
                    prompt,
                    seed,
                    f"{score['iou']:.3f}" + (f" (coarse {result['coarse']['iou']:.3f})" if "coarse" in result else ""),
                    f"{margin:+.3f}",
                    score["predicted_shape"],
                    score["predicted_colour"],
                    f"{score['colour_error']:.3f}",
                    f"{score['saturation_error']:+.3f}",
                    f"{wall:.0f}",
                    peak,
                ]
            )
    ok = [r for r in results if not r.get("failed")]
    if args.no_score:
        print(f"{machine()}; runs in {root} (not scored: --score-only --out {root} scores them)")
        print_table(headers, rows)
        return
    n = max(1, len(results))
    fixed = fixed_answers(prompts)
    best_fixed = max(fixed, key=lambda k: fixed[k]["mean_iou"])
    summary = {
        "mean_iou": sum(r["iou"] for r in ok) / n,
        "mean_margin": sum(r["margin"] for r in ok) / n,
        "shape_right": sum(r["shape_right"] for r in ok) / n,
        "colour_right": sum(r["colour_right"] for r in ok) / n,
        "mean_colour_error": sum(r["colour_error"] for r in ok) / max(1, len(ok)),
        "mean_saturation_error": sum(abs(r["saturation_error"]) for r in ok) / max(1, len(ok)),
        "mean_saturation_bias": sum(r["saturation_error"] for r in ok) / max(1, len(ok)),
        "max_seconds": max((r["seconds"] for r in results), default=0.0),
        "max_peak_mb": max((r["peak_mb"] for r in ok), default=0),
        "sphere_for_all": fixed["sphere"],
        "best_fixed_shape": {"shape": best_fixed, **fixed[best_fixed]},
    }
    summary["margin_over_fixed"] = summary["mean_iou"] - fixed[best_fixed]["mean_iou"]
    staged = [r for r in ok if "coarse" in r]
    if staged:  # coarse to fine: what the fine stage added over the coarse asset it started from
        summary["coarse"] = {
            "runs": len(staged),
            "mean_iou": sum(r["coarse"]["iou"] for r in staged) / len(staged),
            "shape_right": sum(r["coarse"]["shape_right"] for r in staged) / len(staged),
            "colour_right": sum(r["coarse"]["colour_right"] for r in staged) / len(staged),
            "mean_colour_error": sum(r["coarse"]["colour_error"] for r in staged) / len(staged),
        }
        summary["fine_gain"] = sum(r["iou"] - r["coarse"]["iou"] for r in staged) / len(staged)
        summary["max_stage_seconds"] = {
            k: max(r["stage_seconds"].get(k, 0.0) for r in staged) for k in staged[0]["stage_seconds"]
        }
    print(f"{machine()}; set {set_name}, seeds {args.seeds}, {args.jobs} at a time; runs in {root}")
    print_table(headers, rows)
    print(
        f"do-nothing answers: the true sphere for every prompt: mean IoU {fixed['sphere']['mean_iou']:.3f}, shape "
        f"{fixed['sphere']['shape_right']:.0%}; the best fixed shape ({best_fixed}): mean IoU "
        f"{fixed[best_fixed]['mean_iou']:.3f}, shape {fixed[best_fixed]['shape_right']:.0%}"
    )
    t = TARGETS
    print(
        f"mean IoU {summary['mean_iou']:.3f} (>= {t['mean_iou']}), {summary['margin_over_fixed']:+.3f} over the best "
        f"fixed answer (>= +{t['margin_over_fixed']}), mean margin of the asked shape {summary['mean_margin']:+.3f}, "
        f"shape right {summary['shape_right']:.0%} (>= {t['shape_right']:.0%}), colour right "
        f"{summary['colour_right']:.0%} (>= {t['colour_right']:.0%}), mean colour error "
        f"{summary['mean_colour_error']:.3f}, mean |saturation error| {summary['mean_saturation_error']:.3f} "
        f"(signed {summary['mean_saturation_bias']:+.3f}), max {summary['max_seconds']:.0f} s "
        f"(<= {t['seconds']} alone), max {summary['max_peak_mb']} MiB (<= {t['peak_mb']})"
    )
    if staged:
        c = summary["coarse"]
        print(
            f"coarse stage: mean IoU {c['mean_iou']:.3f}, shape right {c['shape_right']:.0%}, colour right "
            f"{c['colour_right']:.0%}, mean colour error {c['mean_colour_error']:.3f}; the fine stage: "
            f"{summary['fine_gain']:+.3f} mean IoU, mean colour error {summary['mean_colour_error']:.3f}; slowest "
            + ", ".join(f"{k} {v:.0f} s" for k, v in summary["max_stage_seconds"].items())
        )
    if args.picture:
        done = [root / f"{r['prompt'].replace(' ', '-')}-seed{r['seed']}" for r in ok]
        if staged:
            coarse_dirs = [Path(args.from_runs) / d.name if args.from_runs else d / "coarse" for d in done]
            save_side_by_side_picture(args.picture, [list(pair) for pair in zip(coarse_dirs, done)])
        else:
            save_picture(args.picture, done)
    write_results(
        "text_to_3d",
        {
            "summary": summary,
            "targets": TARGETS,
            "set": set_name,
            "prompts": prompts,
            "seeds": args.seeds,
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


def save_side_by_side_picture(path: str, rows: list[list[Path]], frames: int = 3) -> None:
    """A row per prompt and seed: ``frames`` turntable frames of each run in the row, in the order
    given (coarse then fine, or one run per recipe); every turntable is rendered from the exported
    files at the same angles. Rows missing a turntable are left out."""
    import imageio.v3 as iio
    import numpy as np

    from dream3d.grid import make_grid
    from dream3d.io import save_image

    tiles, cols = [], 0
    for runs in rows:
        videos = [run / "turntable.gif" for run in runs]
        if not all(v.is_file() for v in videos):
            continue
        for video in videos:
            clip = iio.imread(video, index=None)[..., :3]
            pick = np.linspace(0, len(clip), frames, endpoint=False).astype(int)
            tiles += [clip[i] for i in pick]
        cols = len(runs) * frames
    if tiles:
        save_image(path, make_grid(tiles, cols=cols, pad=4))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
