"""Our latent diffusion core vs diffusers' StableDiffusionPipeline: same model, same settings.

Each run is a fresh process (so peak memory is measured per side), loading the model, warming up
once, then timing ``--repeats`` samples. Sides alternate (ours, theirs, ours, ...) so machine noise
hits both. Reports median seconds per image batch, the time ratio ours/diffusers (target <= 1.03:
the core adds no overhead), peak memory, and checks that both produce the same images.

    python benchmarks/txt2img.py                       # bundled prior (or a prior-sized random model)
    python benchmarks/txt2img.py --model FOLDER_OR_HUB_ID --device cuda --size 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, peak_rss_mb, print_table, write_results  # noqa: E402


def child(args) -> None:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, height=args.size, width=args.size)
    if args.side == "ours":
        from dream3d.diffusion.core import LatentDiffusion

        core = LatentDiffusion.from_pretrained(args.model, device=args.device)

        def run(seed):
            g = torch.Generator("cpu").manual_seed(seed)
            return core.sample(
                args.prompt,
                steps=args.steps,
                guidance_scale=args.guidance,
                height=args.size,
                width=args.size,
                scheduler=args.scheduler,
                generator=g,
                output="np",
                progress=False,
            )
    else:
        from diffusers import StableDiffusionPipeline

        from dream3d.diffusion.loading import resolve_model
        from dream3d.diffusion.schedulers import make_scheduler

        folder = resolve_model(args.model)
        dtype = torch.float16 if args.device == "cuda" else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
        ).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = make_scheduler(args.scheduler, dict(pipe.scheduler.config))

        def run(seed):
            g = torch.Generator("cpu").manual_seed(seed)
            return pipe(args.prompt, generator=g, output_type="np", **kw).images

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    first = run(0)
    times = []
    for i in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        run(i + 1)
        sync()
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else peak_rss_mb()
    np.save(args.image_out, first)
    print(json.dumps({"times": times, "peak_mb": mem}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the bundled prior, else a prior-sized random model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--scheduler", default="dpm")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--prompt", default="a red cube, side view")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="alternating process pairs")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--side", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    p.add_argument("--image-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)

    tmp = Path(tempfile.mkdtemp(prefix="bench-txt2img-"))
    if args.model is None:
        from dream3d.diffusion.loading import bundled_prior_path

        if (bundled_prior_path() / "model_index.json").is_file():
            args.model = "shapes"
        else:
            from dream3d.diffusion.build import ModelSpec, build_random_model

            spec = ModelSpec(
                vae_channels=(32, 64, 64),
                unet_channels=(64, 128, 128),
                unet_cross_attention_blocks=(False, True, True),
                unet_layers_per_block=2,
                unet_heads=4,
                text_hidden=128,
                text_layers=2,
                text_heads=4,
            )
            args.model = str(build_random_model(tmp / "random-prior-sized", spec))
    if args.size is None:
        args.size = 32 if args.device == "cpu" else 512
    base = [
        sys.executable,
        __file__,
        "--model",
        args.model,
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--guidance",
        str(args.guidance),
        "--scheduler",
        args.scheduler,
        "--size",
        str(args.size),
        "--prompt",
        args.prompt,
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    results = {"ours": [], "diffusers": []}
    for r in range(args.rounds):
        for side in ("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours"):
            out = subprocess.run(
                base + ["--side", side, "--image-out", str(tmp / f"{side}.npy")],
                capture_output=True,
                text=True,
                check=True,
            )
            results[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    import numpy as np

    a, b = np.load(tmp / "ours.npy"), np.load(tmp / "diffusers.npy")
    max_diff = int(np.abs((a * 255).round() - (b * 255).round()).max())
    t_ours = median([t for r in results["ours"] for t in r["times"]])
    t_diff = median([t for r in results["diffusers"] for t in r["times"]])
    m_ours = max(r["peak_mb"] for r in results["ours"])
    m_diff = max(r["peak_mb"] for r in results["diffusers"])
    ratio = t_ours / t_diff
    mem_kind = "peak CUDA MiB" if args.device == "cuda" else "peak RSS MiB"
    print(
        f"model {args.model}, {args.device}, {args.size}px, {args.steps} steps {args.scheduler}, CFG {args.guidance}; "
        f"{args.rounds} process pairs x {args.repeats} samples; {machine()}"
    )
    print_table(
        ["side", "median s / image", mem_kind],
        [["dream3d core", t_ours, round(m_ours)], ["diffusers pipeline", t_diff, round(m_diff)]],
    )
    print(
        f"time ratio core/pipeline: {ratio:.3f} (target <= 1.03); memory ratio {m_ours / m_diff:.3f}; "
        f"max image difference {max_diff} levels"
    )
    write_results(
        "txt2img",
        {
            "model": args.model,
            "device": args.device,
            "size": args.size,
            "steps": args.steps,
            "scheduler": args.scheduler,
            "median_s": {"ours": t_ours, "diffusers": t_diff},
            "time_ratio": ratio,
            "peak_mb": {"ours": m_ours, "diffusers": m_diff},
            "max_image_difference": max_diff,
            "raw": results,
        },
    )


if __name__ == "__main__":
    main()
