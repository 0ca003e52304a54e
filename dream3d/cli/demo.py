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

    from ..io import ensure_writable_dir
    from ..text_to_image import Txt2ImgConfig, run_txt2img

    out = ensure_writable_dir(args.output)
    written = []
    for i, prompt in enumerate(DEMO_PROMPTS):
        sub = Path(out) / "txt2img" / prompt.split(",")[0].replace(" ", "-")
        cfg = Txt2ImgConfig(prompt=prompt, seed=args.seed + i, num_images=4, scheduler="dpm", steps=20)
        _, record = run_txt2img(cfg, output=sub)
        written += [str(sub / name) for name in record["images"]]
        print(f"{prompt!r}: {sub}/")
    print(f"demo done: {len(written)} images under {out}/txt2img/")
    return 0
