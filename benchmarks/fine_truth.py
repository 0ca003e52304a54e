"""The fine stage on true renders: how far the mesh stage gets when its 2D signal is exact.

Runs ``dream3d txt2mesh PROMPT --from COARSE_RUN`` (the fine stage alone, from a finished coarse
run of the same prompt) with the guidance replaced by the shapes world's exact render of the
prompt's true object from each training camera (unrotated, unit scale, headlight Lambertian on
white, 4x supersampled; :func:`dream3d.shapes.render.render`) and a mean-squared error to it. Every
other part (DMTet, rasteriser, regularisers, optimiser, export) is the config's. It then scores the
coarse and the fine asset as ``benchmarks/text_to_3d.py`` does, prints a table and writes JSON.

The true renders are always shaded: pass ``fine.material.albedo_prob=0``. A coarse run whose best
fit is rotated (``angle`` in the table) is pulled towards the unrotated object; the round shapes
and a cube at angle 0 are fine.

    python benchmarks/fine_truth.py "a blue cube" --from outputs/blue-cube -o /tmp/truth \\
        --config configs/shapes-magic3d.yaml fine.material.albedo_prob=0 fine.steps=400

(``docs/benchmarks.md``, "The fine stage on true renders".) The swap is made in this process only
(the ``target`` entry of the guidance table), so a config's fine stage must use ``kind: target``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

SPHERICAL = ("elevation_deg", "azimuth_deg", "distance", "fov_deg")  # a camera's fields, in Camera's order


def truth_guidance_class():
    """A :class:`~dream3d.guidance.base.Guidance` whose loss is the MSE to the true renders."""
    from dream3d.cameras import Camera
    from dream3d.guidance.base import Guidance, GuidanceOutput
    from dream3d.shapes.render import render

    class TruthGuidance(Guidance):
        def forward(self, images, cameras, step, generator):
            h, w = images.shape[-2:]
            truth = [
                render(self.prompt, Camera(*(float(getattr(cameras, k)[i]) for k in SPHERICAL), h, w), ss=4).rgb
                for i in range(len(cameras))
            ]
            truth = torch.stack([torch.from_numpy(t).permute(2, 0, 1) for t in truth]).to(images)
            return GuidanceOutput({"truth": F.mse_loss(images, truth)})

    return TruthGuidance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompt")
    p.add_argument("--from", dest="start_from", required=True, metavar="COARSE_RUN")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--config", default="configs/shapes-magic3d.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_intermixed_args()

    import dream3d.systems.dreamfusion as dreamfusion
    from dream3d.cli import main as dream3d_main
    from dream3d.shapes.objects import parse_prompt
    from dream3d.shapes.scoring import load_asset, score_asset

    if parse_prompt(args.prompt) is None:
        p.error(f"'{args.prompt}' is not a shapes-world prompt; use 'a <colour> <shape>'")
    dreamfusion.GUIDANCE["target"] = truth_guidance_class()
    argv = ["txt2mesh", args.prompt, "--from", args.start_from, "-o", args.out, "--config", args.config]
    code = dream3d_main(argv + ["--seed", str(args.seed), *args.overrides])
    if code:
        sys.exit(code)
    rows, results = [], {}
    for name, folder in (("coarse", args.start_from), ("fine on true renders", args.out)):
        score = score_asset(load_asset(Path(folder) / "mesh.ply"), args.prompt)
        results[name] = score
        rows.append([name, f"{score['iou']:.3f}", score["predicted_shape"], f"{score['colour_error']:.3f}"])
    print(f"{machine()}; {args.prompt}, seed {args.seed}, {' '.join(args.overrides)}")
    print_table(["asset", "IoU", "shape", "colour error"], rows)
    write_results(
        "fine_truth", {"prompt": args.prompt, "from": args.start_from, "overrides": args.overrides, "scores": results}
    )


if __name__ == "__main__":
    main()
