"""Image-to-3D quality on the shapes world: one render of each object at a held-out camera -> img2mesh -> scores.

For each of the 30 objects (the text benchmark's ten dev objects first, so ``--objects 6`` is a
dev subset; tune on those only, never on all 30), the input is a clean 128 px RGBA render at the
**held-out camera** (``dream3d.prior.view_data.HELD_OUT_CAMERA``: elevation 15, azimuth 35, distance
1.8, field of view 50; the ``shapes-view`` prior is trained on no view within 6 degrees of it). ``dream3d img2mesh`` runs on it in its own process
(``--elevation 15``; the reference camera is at azimuth 0, so the asset is the object turned by
-35 degrees about Z, which the IoU's rotation search absorbs), and the exported mesh is scored with
the shapes world's measures (:func:`dream3d.shapes.scoring.score_asset`: best 3D IoU, the best-IoU
shape, the colour of the mean surface albedo) and the **Janus check**: the asset's silhouette from
the opposite azimuth (reference azimuth + 180) against the true object's from the held-out
camera's opposite azimuth (35 + 180), as 2D IoU (>= 0.8 passes). A **photo-like** input
(:func:`dream3d.shapes.photo.photo_like`: texture noise and a soft shadow in the alpha matte) of
one object is run and scored the same way, after the table.

Targets (all 30 objects, CPU, bundled ``shapes-view`` prior): mean IoU >= 0.80, right shape >= 90%,
right colour >= 95%, Janus check passed >= 90% of objects, each run <= 6 minutes.

    python benchmarks/image_to_3d.py --jobs 2                       # all 30 objects + the photo-like case
    python benchmarks/image_to_3d.py --objects 6 --jobs 2           # the dev subset (tuning)
    python benchmarks/image_to_3d.py --objects 2 --model DIR steps=50 --out runs/smoke
    python benchmarks/image_to_3d.py --score-only --out runs/smoke --objects 2   # score earlier runs again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402
from text_to_3d import DEV, OVERRIDE  # noqa: E402

INPUT_SIZE = 128
PHOTO_OBJECT = "a red cube"
TARGETS = {"mean_iou": 0.80, "shape_right": 0.90, "colour_right": 0.95, "janus_pass": 0.90, "seconds": 360}
JANUS_IOU = 0.8


def held_out() -> dict[str, float]:
    """The view prior's first held-out camera (``dream3d.prior.view_data``: no training view within 6 degrees)."""
    from dream3d.prior.view_data import HELD_OUT_CAMERA, VIEW_DISTANCE, VIEW_FOV

    return {"elevation": HELD_OUT_CAMERA[0], "azimuth": HELD_OUT_CAMERA[1], "distance": VIEW_DISTANCE, "fov": VIEW_FOV}


HELD_OUT = held_out()


def ordered_prompts() -> list[str]:
    """The 30 objects' prompts: the text benchmark's dev objects first, then the others."""
    from dream3d.shapes.objects import all_objects

    return list(DEV) + [o.prompt for o in all_objects() if o.prompt not in DEV]


def camera(azimuth: float, size: int = INPUT_SIZE):
    from dream3d.cameras import Camera

    h = HELD_OUT
    return Camera(h["elevation"], azimuth, h["distance"], h["fov"], size, size)


def case_name(prompt: str, photo: bool) -> str:
    return ("photo-" if photo else "") + prompt.replace(" ", "-")


def make_input(prompt: str, path: Path, photo: bool = False) -> Path:
    """The RGBA input of ``prompt`` at the held-out camera (clean, or photo-like)."""
    from dream3d.io import save_image
    from dream3d.shapes.objects import ShapeObject, parse_prompt
    from dream3d.shapes.photo import object_rgba, photo_like
    from dream3d.shapes.render import to_uint8

    if not path.is_file():
        shape, colour = parse_prompt(prompt)
        obj, cam = ShapeObject(shape, colour), camera(HELD_OUT["azimuth"])
        save_image(path, photo_like(obj, cam, seed=0) if photo else to_uint8(object_rgba(obj, cam)))
    return path


def silhouette_iou(mesh_path: Path, prompt: str) -> float:
    """2D IoU of the asset's silhouette from the reference's opposite azimuth and the true object's
    from the held-out camera's opposite azimuth (the Janus check)."""
    import numpy as np
    import open3d as o3d

    from dream3d.export.mesh import load_mesh_world
    from dream3d.shapes.objects import ShapeObject, parse_prompt
    from dream3d.shapes.render import render

    mesh = load_mesh_world(mesh_path)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)), o3d.core.Tensor(np.asarray(mesh.faces, np.uint32))
    )
    origins, directions = camera(180.0).rays_numpy()
    rays = np.concatenate([origins, directions], axis=-1).reshape(-1, 6).astype(np.float32)
    pred = np.isfinite(scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()).reshape(INPUT_SIZE, INPUT_SIZE)
    shape, colour = parse_prompt(prompt)
    truth = render(ShapeObject(shape, colour), camera(HELD_OUT["azimuth"] + 180.0)).mask
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=30, help="the first N objects (dev ones first; default all 30)")
    p.add_argument("--no-photo", action="store_true", help="skip the photo-like case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None)
    p.add_argument(
        "--model", default=None, help="another view prior (default: the bundled shapes-view; still the shapes recipe)"
    )
    p.add_argument("--out", default=None, help="keep inputs and run folders here (default: a temporary folder)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, sharing the cores")
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out instead of running")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    bad = [o for o in args.overrides if not OVERRIDE.match(o)]
    if bad:
        p.error(f"not key=value overrides: {bad}")
    if not 1 <= args.objects <= 30 or args.jobs < 1:
        p.error("--objects must be in 1..30 and --jobs at least 1")
    if args.score_only and not args.out:
        p.error("--score-only needs --out DIR, the folder of earlier runs")
    from dream3d.image_to_3d import default_config_path

    config = args.config or str(default_config_path(None))  # the shapes recipe, whichever prior
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-i23d-"))
    prompts = ordered_prompts()[: args.objects]
    cases = [(q, False) for q in prompts] + ([] if args.no_photo else [(PHOTO_OBJECT, True)])
    env = dict(os.environ)
    if args.jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))

    def run(case):
        prompt, photo = case
        image = make_input(prompt, root / "inputs" / f"{case_name(*case)}.png", photo)
        out = root / case_name(*case)
        if args.score_only:
            done = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
            return out, done.get("returncode", 1), done.get("stderr", "no earlier run here"), done.get("seconds", 0.0)
        cmd = [sys.executable, "-m", "dream3d", "img2mesh", str(image), "-o", str(out), "--seed", str(args.seed)]
        cmd += ["--elevation", str(HELD_OUT["elevation"]), "--distance", str(HELD_OUT["distance"])]
        cmd += ["--fov", str(HELD_OUT["fov"])]
        cmd += ["--config", config] + (["--model", args.model] if args.model else [])
        cmd += list(args.overrides)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        stderr = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else str(proc.returncode)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps({"returncode": proc.returncode, "stderr": stderr, "seconds": wall}))
        return out, proc.returncode, stderr, wall

    (root / "inputs").mkdir(parents=True, exist_ok=True)
    for case in cases:  # inputs first, in this process (open3d renders), so the workers only run
        make_input(case[0], root / "inputs" / f"{case_name(*case)}.png", case[1])
    from dream3d.shapes.scoring import load_asset, score_asset

    headers = ["input", "IoU", "shape", "colour", "colour err", "Janus IoU", "s", "peak MiB"]
    rows, results = [], []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (prompt, photo), (out, returncode, stderr, wall) in zip(cases, pool.map(run, cases)):
            label = f"{prompt} (photo-like)" if photo else prompt
            if returncode != 0:
                print(f"{label}: run failed: {stderr}")
                results.append({"prompt": prompt, "photo": photo, "failed": True, "seconds": wall})
                rows.append([label, "failed", "", "", "", "", f"{wall:.0f}", ""])
                continue
            metrics = json.loads((out / "metrics.json").read_text())
            score = score_asset(load_asset(out / "mesh.ply"), prompt)
            janus = silhouette_iou(out / "mesh.ply", prompt)
            result = {"prompt": prompt, "photo": photo, "seconds": wall, "peak_mb": metrics["peak_memory_mb"]}
            results.append({**result, **score, "janus_iou": janus, "janus_pass": janus >= JANUS_IOU})
            rows.append(
                [
                    label,
                    f"{score['iou']:.3f}",
                    score["predicted_shape"],
                    score["predicted_colour"],
                    f"{score['colour_error']:.3f}",
                    f"{janus:.3f}",
                    f"{wall:.0f}",
                    metrics["peak_memory_mb"],
                ]
            )
    main_runs = [r for r in results if not r["photo"]]
    ok = [r for r in main_runs if not r.get("failed")]
    n = max(1, len(main_runs))
    summary = {
        "objects": len(main_runs),
        "mean_iou": sum(r["iou"] for r in ok) / n,
        "shape_right": sum(r["shape_right"] for r in ok) / n,
        "colour_right": sum(r["colour_right"] for r in ok) / n,
        "janus_pass": sum(r["janus_pass"] for r in ok) / n,
        "mean_janus_iou": sum(r["janus_iou"] for r in ok) / n,
        "max_seconds": max((r["seconds"] for r in results), default=0.0),
        "photo_like": next((r for r in results if r["photo"]), None),
    }
    print(f"{machine()}; {len(main_runs)} objects, seed {args.seed}, {args.jobs} at a time; runs in {root}")
    print(f"input: {INPUT_SIZE} px RGBA at the held-out camera {HELD_OUT}")
    print_table(headers, rows)
    t = TARGETS
    print(
        f"mean IoU {summary['mean_iou']:.3f} (>= {t['mean_iou']}), shape right {summary['shape_right']:.0%} "
        f"(>= {t['shape_right']:.0%}), colour right {summary['colour_right']:.0%} (>= {t['colour_right']:.0%}), "
        f"Janus check passed {summary['janus_pass']:.0%} (silhouette IoU >= {JANUS_IOU} from the opposite azimuth; "
        f">= {t['janus_pass']:.0%}), max {summary['max_seconds']:.0f} s (<= {t['seconds']})"
    )
    write_results(
        "image_to_3d",
        {
            "summary": summary,
            "targets": TARGETS,
            "held_out_camera": HELD_OUT,
            "results": results,
            "overrides": args.overrides,
            "config": config,
            "model": args.model,
            "jobs": args.jobs,
            "seed": args.seed,
        },
    )


if __name__ == "__main__":
    main()
