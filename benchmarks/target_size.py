"""How faithful the bundled prior's denoised targets are to the size of the object in the render.

For each shape, renders of the true object (the shapes world's renderer, random training cameras)
go through the target guidance (``DenoisedTargetGuidance.denoised_target``: noise to t, DDIM with CFG,
decode) at several t. Reported per t: the mean and median ratio of the target's silhouette area to
the render's (:func:`dream3d.guidance.sds.silhouette`), and their correlation over the cameras. A
faithful target has ratio ~1 and correlation ~1; a correlation near 0 means the target's size is
unrelated to the render's (the prior does not know the camera).

    python benchmarks/target_size.py
    python benchmarks/target_size.py --objects "blue cube" "red sphere" --cameras 32 --t 0.9 0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", nargs="+", default=["blue cube", "red sphere", "green cone"])
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--t", nargs="+", type=float, default=[0.9, 0.7, 0.5, 0.3])
    p.add_argument("--model", default="shapes")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from dream3d.errors import UserError
    from dream3d.shapes.objects import ShapeObject

    objects = []
    for name in args.objects:
        try:
            colour, shape = name.split()
            objects.append(ShapeObject(shape, colour))
        except (ValueError, UserError) as e:
            p.error(f"object '{name}' must be '<colour> <shape>' of the shapes world, e.g. 'blue cube' ({e})")
    if args.cameras < 2 or not all(0 < t < 1 for t in args.t):
        p.error("--cameras needs at least 2 (for a correlation) and every --t must be in (0, 1)")

    from dream3d.cameras import sample_cameras
    from dream3d.diffusion.core import LatentDiffusion
    from dream3d.guidance.denoised_target import DenoisedTargetGuidance, TargetConfig, silhouette
    from dream3d.guidance.prompts import view_prompts
    from dream3d.shapes.render import render, to_uint8

    core = LatentDiffusion.from_pretrained(args.model, device="cpu")
    guidance = DenoisedTargetGuidance(core, TargetConfig(denoise_steps=8, target_guidance_scale=7.5), "")
    size = core.default_size
    cams = sample_cameras(args.cameras, torch.Generator().manual_seed(args.seed), height=size, width=size)
    rows, results = [], []
    for name, obj in zip(args.objects, objects):
        x = torch.stack(
            [torch.from_numpy(to_uint8(render(obj, c, ss=2).rgb)).permute(2, 0, 1).float() / 255 for c in cams]
        )
        prompts = view_prompts(obj.prompt, [c.elevation_deg for c in cams], [c.azimuth_deg for c in cams], "suffix")
        cond, uncond = core.text_conditioning(prompts, "")
        true_area = silhouette(x)[0].flatten(1).sum(1).float()
        for t in args.t:
            steps = torch.full((len(cams),), int(t * core.num_train_timesteps))
            target = guidance.denoised_target(x, steps, cond, uncond, torch.Generator().manual_seed(args.seed + 1))
            area = silhouette(target)[0].flatten(1).sum(1).float()
            ratio = area / true_area.clamp(min=1)
            corr = float(np.corrcoef(area.numpy(), true_area.numpy())[0, 1])
            results.append(
                {
                    "object": name,
                    "t": t,
                    "mean_ratio": float(ratio.mean()),
                    "median_ratio": float(ratio.median()),
                    "correlation": corr,
                }
            )
            rows.append([name, t, float(ratio.mean()), float(ratio.median()), corr])
    print(f"target / render silhouette area, {args.cameras} cameras, model {args.model}; {machine()}")
    print_table(["object", "t", "mean ratio", "median ratio", "correlation"], rows)
    write_results("target_size", {"model": args.model, "cameras": args.cameras, "seed": args.seed, "results": results})


if __name__ == "__main__":
    main()
