"""Where a camera-conditioned prior uses its camera: its clean-image error per timestep with the
right camera, a wrong one and none, and whether one seed's samples turn with the asked azimuth.

1. **Error by timestep.** True renders of a cube at azimuths 0 and 45 (elevation 20, distance 1.8,
   fov 50: the views the prior eval's camera score uses) are encoded, noised to t with fixed noise
   draws, and the UNet's prediction is scored by the error of its estimate of the clean latent (MSE against the true latent, conditional
   branch) given the right camera, the swapped one (0 <-> 45) and no camera. Where "right" is well
   below "wrong", the UNet reads the camera at that noise level; where they are equal it does not.
2. **One seed, many azimuths.** The same starting noise is sampled at azimuths 0, 10, ..., 80 (20
   DPM-Solver++ steps, CFG 7.5); each sample's nearest ground-truth render (azimuths in 5-degree
   steps) gives the azimuth it shows. A prior that follows the camera turns its cube with the
   asked azimuth; one that ignores it shows the same azimuth whatever is asked.

    python benchmarks/camera_probe.py --model runs/prior-camera
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

VIEW = {"elevation": 20.0, "distance": 1.8, "fov": 50.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a camera-conditioned model (dream3d prior train camera_input=true)")
    p.add_argument("--object", default="red cube")
    p.add_argument("--t", nargs="+", type=int, default=[200, 500, 800, 950], help="training timesteps")
    p.add_argument("--draws", type=int, default=8, help="noise draws per timestep")
    p.add_argument("--samples", type=int, default=6, help="samples per azimuth (one seed)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from dream3d.cameras import Camera, camera_features
    from dream3d.diffusion.core import LatentDiffusion
    from dream3d.errors import UserError
    from dream3d.prior.evaluate import azimuth_error
    from dream3d.shapes.objects import ShapeObject, parse_prompt
    from dream3d.shapes.render import render

    torch.set_num_threads(args.threads)
    parsed = parse_prompt(args.object)
    if parsed is None:
        p.error(f"--object '{args.object}' must be '<colour> <shape>' of the shapes world, e.g. 'red cube'")
    obj = ShapeObject(*parsed)
    try:
        core = LatentDiffusion.from_pretrained(args.model, device="cpu", dtype="fp32")
        if not core.takes_camera:
            raise UserError(f"the model '{args.model}' takes no camera; train one with camera_input=true")
        if any(not 0 <= t < core.num_train_timesteps for t in args.t):
            raise UserError(f"--t takes training timesteps in [0, {core.num_train_timesteps - 1}]")
    except UserError as e:
        p.error(str(e))

    def cameras(azimuths):
        n = len(azimuths)
        return camera_features([VIEW["elevation"]] * n, azimuths, [VIEW["distance"]] * n, [VIEW["fov"]] * n)

    def truth(azimuth):
        cam = Camera(VIEW["elevation"], float(azimuth), VIEW["distance"], VIEW["fov"], 32, 32)
        return torch.from_numpy(render(obj, cam, ss=4).rgb).permute(2, 0, 1).float()

    latents = core.encode_images(torch.stack([truth(0.0), truth(45.0)]))
    cond, _ = core.text_conditioning([obj.prompt] * 2)
    asked = {"right": cameras([0.0, 45.0]), "wrong": cameras([45.0, 0.0]), "none": None}
    loss_rows = []
    for t in args.t:
        row = {"t": t}
        for name, camera in asked.items():
            errors = []
            for k in range(args.draws):
                noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(k))
                with torch.no_grad():
                    noisy = core.add_noise(latents, noise, t)
                    clean = core.predict_x0(noisy, core.predict_noise(noisy, t, cond, camera=camera), t)
                errors.append((clean - latents).pow(2).mean().item())
            row[name] = sum(errors) / len(errors)
        loss_rows.append(row)
    print_table(
        ["t", "right camera", "wrong camera", "no camera"],
        [[r["t"], *(f"{r[k]:.4g}" for k in asked)] for r in loss_rows],
    )

    references = torch.arange(0.0, 90.0, 5.0)
    renders = torch.stack([truth(a) for a in references.tolist()])
    turn_rows = []
    for azimuth in range(0, 90, 10):
        samples = core.sample(
            obj.prompt,
            steps=20,
            guidance_scale=7.5,
            scheduler="dpm",
            generator=torch.Generator().manual_seed(1),
            num_images=args.samples,
            output="pt",
            progress=False,
            camera=cameras([float(azimuth)]),
        ).float()
        mse = (samples[:, None] - renders[None]).square().mean(dim=(2, 3, 4))
        shown = references[mse.argmin(1)].tolist()
        errors = [azimuth_error(s, azimuth) for s in shown]
        turn_rows.append({"asked": azimuth, "shown": shown, "mean_error_deg": sum(errors) / len(errors)})
    print()
    print_table(
        ["asked azimuth", "shown (one seed)", "mean error deg"],
        [[r["asked"], r["shown"], r["mean_error_deg"]] for r in turn_rows],
    )
    write_results(
        "camera_probe", {"model": args.model, "object": args.object, **VIEW, "loss": loss_rows, "turn": turn_rows}
    )


if __name__ == "__main__":
    main()
