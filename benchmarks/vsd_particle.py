"""How far a finished VSD run's particle has moved from the pretrained model, and how the parts of
the VSD and SDS gradients compare, at several noise levels.

    python benchmarks/vsd_particle.py RUN_DIR [RUN_DIR ...] [--views 8] [--repeats 4] [--seed 0]

For each finished txt2mesh run with ``guidance.kind: vsd`` (its ``config.yaml`` and
``checkpoints/coarse.pt``): render ``--views`` training cameras as the run's last step does, encode
them, and at each ``t`` average over ``--repeats`` noise draws the root mean square of

- ``cfg``: ``(s - 1)(eps_cond - eps_uncond)``, the CFG part both gradients share;
- ``sds_rest``: ``eps_cond - noise``, the rest of SDS's gradient, which is also the prior's error
  at predicting the noise of the run's own renders;
- ``vsd_rest``: ``eps_cond - eps_phi``, the rest of VSD's (0 for a particle that never moved);
- ``particle_err``: ``eps_phi - noise``, the particle's error on the same noise (it learns the
  renders: below ``sds_rest``, it knows them better than the prior does).

VSD's gradient is ``cfg + vsd_rest``, SDS's ``cfg + sds_rest`` (times ``w(t)``). Writes
benchmarks/results/vsd_particle.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

LEVELS = (0.05, 0.2, 0.4, 0.6, 0.9)
PARTS = ("cfg", "sds_rest", "vsd_rest", "particle_err")


def rms(x: torch.Tensor) -> float:
    return x.float().pow(2).mean().sqrt().item()


@torch.no_grad()
def particle_parts(system, views: int, repeats: int, levels, generator: torch.Generator) -> dict[float, dict]:
    """``{t: {part: rms}}`` (module docstring) for a loaded VSD system."""
    from dream3d.cameras import Cameras, sample_cameras

    guidance, cfg = system.guidance, system.cfg
    core = guidance.core
    last = cfg.steps - 1
    height, width = cfg.cameras.size(last)
    cameras = Cameras.stack(sample_cameras(views, generator, height=height, width=width, ranges=cfg.cameras))
    cameras = cameras.to(system.device)
    system.renderer.eval()
    images = system.renderer(cameras, shader=system.material.training_shader(last, cameras, generator)).images
    cond, uncond = core.text_conditioning(guidance.prompts(cameras), guidance.cfg.negative_prompt)
    prior_camera = guidance.camera_input(cameras)
    pose = cameras.c2w.reshape(views, -1).to(device=core.device, dtype=torch.float32)
    latents = core.encode_images(guidance.resize(images))
    scale = guidance.cfg.guidance_scale
    out = {}
    for level in levels:
        t = torch.full((views,), int(level * core.num_train_timesteps), device=core.device)
        sums = dict.fromkeys(PARTS, 0.0)
        for _ in range(repeats):
            noise = torch.randn(latents.shape, generator=generator).to(latents)
            noisy = core.add_noise(latents, noise, t)
            eps_cond = core.predict_noise(noisy, t, cond, camera=prior_camera)
            eps_uncond = core.predict_noise(noisy, t, uncond, camera=prior_camera)
            raw = guidance.particle_output(noisy, t, cond, prior_camera, pose)
            eps_phi = core.to_epsilon(raw.to(noisy.dtype), noisy, t)
            parts = {
                "cfg": (scale - 1) * (eps_cond - eps_uncond),
                "sds_rest": eps_cond - noise,
                "vsd_rest": eps_cond - eps_phi,
                "particle_err": eps_phi - noise,
            }
            for name, value in parts.items():
                sums[name] += rms(value) / repeats
        out[level] = sums
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished txt2mesh run folders with guidance.kind=vsd")
    p.add_argument("--views", type=int, default=8, help="cameras rendered per run (default 8)")
    p.add_argument("--repeats", type=int, default=4, help="noise draws per level (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cameras and noise (default 0)")
    args = p.parse_args()
    if args.views < 1 or args.repeats < 1:
        p.error(f"--views and --repeats must be at least 1, got {args.views} and {args.repeats}")

    from dream3d.errors import UserError
    from dream3d.text_to_3d import load_finished_run

    torch.set_num_threads(1)  # the same numbers on any machine with the same run files
    rows, records = [], []
    for run in args.runs:
        try:
            system = load_finished_run(run)
        except UserError as err:
            p.exit(2, f"error: {err}\n")
        if system.cfg.guidance.kind != "vsd":
            p.exit(
                2, f"error: '{run}' ran guidance.kind={system.cfg.guidance.kind}; pass a run with guidance.kind=vsd\n"
            )
        generator = torch.Generator().manual_seed(args.seed)
        parts = particle_parts(system, args.views, args.repeats, LEVELS, generator)
        for level, values in parts.items():
            rows.append([system.cfg.prompt, level, *(values[name] for name in PARTS)])
        records.append({"run": str(run), "prompt": system.cfg.prompt, "levels": {str(k): v for k, v in parts.items()}})
    print_table(["prompt", "t", *PARTS], rows)
    write_results("vsd_particle", {"views": args.views, "repeats": args.repeats, "seed": args.seed, "runs": records})


if __name__ == "__main__":
    main()
