"""``dream3d demo``: the main job on the embedded default, no download needed (what ``make demo`` runs).

Text to 3D with the bundled shapes prior and ``configs/shapes-dreamfusion.yaml``: a textured
mesh and a turntable in a few minutes on a CPU. ``--txt2img`` also writes a contact sheet of
text-to-image samples from the same prior.
"""

from __future__ import annotations

from pathlib import Path

DEMO_PROMPT = "a red sphere"
DEMO_IMAGE_PROMPTS = [
    "a red cube, side view",
    "a blue sphere, front view",
    "a green cone, side view",
    "a yellow torus, overhead view",
]


def register(sub) -> None:
    p = sub.add_parser("demo", help="text to 3D on the bundled prior, and say where the mesh and turntable are")
    p.add_argument("-o", "--output", default="outputs/demo")
    p.add_argument("--prompt", default=DEMO_PROMPT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--txt2img", action="store_true", help="also sample a contact sheet of text-to-image images")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="txt2mesh config overrides, e.g. steps=200")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import ensure_writable_dir
    from ..text_to_3d import load_txt2mesh_config, run_txt2mesh

    out = ensure_writable_dir(args.output)
    if args.txt2img:
        _contact_sheet(out, args.seed)
    mesh_dir = out / "txt2mesh" / args.prompt.replace(" ", "-")
    cfg = load_txt2mesh_config(args.prompt, seed=args.seed, overrides=args.overrides)
    resume = (mesh_dir / "checkpoints").is_dir() and any((mesh_dir / "checkpoints").glob("*.pt"))
    metrics = run_txt2mesh(cfg, mesh_dir, resume=resume)
    print(
        f"demo done: {args.prompt!r} in {metrics['seconds']:.0f} s\n"
        f"  mesh:      {mesh_dir}/mesh.glb (also .obj, .ply)\n"
        f"  turntable: {mesh_dir}/turntable.mp4 (also .gif)\n"
        f"  progress:  {mesh_dir}/val/ (RGB | normals | opacity)"
    )
    return 0


def _contact_sheet(out: Path, seed: int) -> None:
    from ..grid import make_grid
    from ..io import save_image
    from ..text_to_image import Txt2ImgConfig, run_txt2img

    sheet = []
    for i, prompt in enumerate(DEMO_IMAGE_PROMPTS):
        sub = out / "txt2img" / prompt.split(",")[0].replace(" ", "-")
        cfg = Txt2ImgConfig(
            prompt=prompt, seed=seed + i, num_images=4, scheduler="dpm", steps=20, guidance_rescale=0.7
        )  # the prior eval's sampling: rescaled CFG 7.5 keeps the v-prediction prior's colours
        images, _ = run_txt2img(cfg, output=sub, progress=False)
        sheet += images
    grid = make_grid([im.resize((128, 128), 0) for im in sheet], cols=4)
    save_image(out / "txt2img-grid.png", grid)
    print(f"txt2img: {len(sheet)} images under {out}/txt2img/, contact sheet {out}/txt2img-grid.png")
