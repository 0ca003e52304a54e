"""``dream3d demo``: the main job on the embedded default, no download needed (what ``make demo`` runs)."""

from __future__ import annotations

DEMO_PROMPTS = ["a red cube, side view", "a blue sphere, front view", "a green cone, side view", "a yellow torus, overhead view"]


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the bundled prior and say where the results are")
    p.add_argument("-o", "--output", default="outputs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..grid import make_grid
    from ..io import ensure_writable_dir, save_image
    from ..text_to_image import Txt2ImgConfig, run_txt2img

    out = ensure_writable_dir(args.output)
    sheet = []
    for i, prompt in enumerate(DEMO_PROMPTS):
        sub = Path(out) / "txt2img" / prompt.split(",")[0].replace(" ", "-")
        cfg = Txt2ImgConfig(prompt=prompt, seed=args.seed + i, num_images=4, scheduler="dpm", steps=20)
        images, _ = run_txt2img(cfg, output=sub, progress=False)
        sheet += images
        print(f"{prompt!r}: {sub}/")
    grid = make_grid([im.resize((128, 128), 0) for im in sheet], cols=4)
    save_image(Path(out) / "txt2img-grid.png", grid)
    print(f"demo done: {len(sheet)} images under {out}/txt2img/, contact sheet {out}/txt2img-grid.png")
    return 0
