"""How faithful the bundled prior's denoised targets are to the size and colour of the object in the render.

For each shape, renders of the true object (the shapes world's renderer, random training cameras)
go through the target guidance (``DenoisedTargetGuidance.denoised_target``: noise to t, DDIM with CFG,
decode; a camera-conditioned prior gets the cameras, other models the view words) at several t.
Reported per t: the mean and median ratio of the target's silhouette area to the render's
(:func:`dream3d.guidance.denoised_target.silhouette`), and their correlation over the cameras (a
faithful target has ratio ~1 and correlation ~1; near 0 the target's size is unrelated to the
render's); and the colour drift: the target's mean colour inside its silhouette minus the render's
(RGB in [0, 1], averaged over the cameras) and its length.

    python benchmarks/target_size.py
    python benchmarks/target_size.py --objects "blue cube" "red sphere" --cameras 32 --t 0.9 0.5
    python benchmarks/target_size.py --objects "purple sphere" --guidance-scale 4 --guidance-rescale 0.7
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
    p.add_argument("--guidance-scale", type=float, default=7.5, help="the targets' CFG (target_guidance_scale)")
    p.add_argument("--guidance-rescale", type=float, default=0.0, help="target_guidance_rescale")
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

    from dream3d.cameras import Cameras, sample_cameras
    from dream3d.diffusion.core import LatentDiffusion
    from dream3d.guidance.denoised_target import DenoisedTargetGuidance, TargetConfig, silhouette
    from dream3d.guidance.prompts import view_prompts
    from dream3d.shapes.render import render, to_uint8

    core = LatentDiffusion.from_pretrained(args.model, device="cpu")
    target_cfg = TargetConfig(
        denoise_steps=8, target_guidance_scale=args.guidance_scale, target_guidance_rescale=args.guidance_rescale
    )
    guidance = DenoisedTargetGuidance(core, target_cfg, "")
    size = core.default_size
    cams = sample_cameras(args.cameras, torch.Generator().manual_seed(args.seed), height=size, width=size)
    rows, results = [], []
    for name, obj in zip(args.objects, objects):
        x = torch.stack(
            [torch.from_numpy(to_uint8(render(obj, c, ss=2).rgb)).permute(2, 0, 1).float() / 255 for c in cams]
        )
        style = "none" if core.takes_camera else "suffix"
        prompts = view_prompts(obj.prompt, [c.elevation_deg for c in cams], [c.azimuth_deg for c in cams], style)
        cond, uncond = core.text_conditioning(prompts, "")
        camera = Cameras.stack(cams).features() if core.takes_camera else None
        true_mask = silhouette(x)[0]
        true_area = true_mask.flatten(1).sum(1).float()
        true_colour = mean_colour(x, true_mask)
        for t in args.t:
            steps = torch.full((len(cams),), int(t * core.num_train_timesteps))
            g = torch.Generator().manual_seed(args.seed + 1)
            target = guidance.denoised_target(x, steps, cond, uncond, g, camera)
            mask = silhouette(target)[0]
            area = mask.flatten(1).sum(1).float()
            drift = (mean_colour(target, mask) - true_colour).mean(0)
            ratio = area / true_area.clamp(min=1)
            corr = float(np.corrcoef(area.numpy(), true_area.numpy())[0, 1])
            results.append(
                {
                    "object": name,
                    "t": t,
                    "mean_ratio": float(ratio.mean()),
                    "median_ratio": float(ratio.median()),
                    "correlation": corr,
                    "colour_drift": drift.tolist(),
                }
            )
            shift = " ".join(f"{v:+.3f}" for v in drift.tolist())
            rows.append([name, t, float(ratio.mean()), float(ratio.median()), corr, shift, float(drift.norm())])
    print(
        f"target / render silhouette area and colour, {args.cameras} cameras, model {args.model}, CFG "
        f"{args.guidance_scale}, rescale {args.guidance_rescale}; {machine()}"
    )
    print_table(["object", "t", "mean ratio", "median ratio", "correlation", "colour drift RGB", "|drift|"], rows)
    write_results(
        "target_size",
        {
            "model": args.model,
            "cameras": args.cameras,
            "seed": args.seed,
            "guidance_scale": args.guidance_scale,
            "guidance_rescale": args.guidance_rescale,
            "results": results,
        },
    )


def mean_colour(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean RGB (B, 3) of each image inside its mask (the whole image where the mask is empty)."""
    m = mask[:, None].float()
    m = torch.where(m.flatten(1).sum(1)[:, None, None, None] > 0, m, torch.ones_like(m))
    return (images * m).flatten(2).sum(2) / m.flatten(2).sum(2)


if __name__ == "__main__":
    main()
