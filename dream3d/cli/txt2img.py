"""``dream3d txt2img PROMPT``: sample images from a Stable Diffusion model (default: the bundled prior)."""

from __future__ import annotations

from . import add_device_args


def register(sub) -> None:
    from ..diffusion.schedulers import SCHEDULERS

    p = sub.add_parser(
        "txt2img",
        help="text to image with a latent diffusion model",
        description="Sample images for PROMPT; writes PNGs and txt2img.json (every parameter, seed included).",
    )
    p.add_argument("prompt")
    p.add_argument(
        "--model", default=None, help="folder in diffusers layout, hub id, or 'shapes' (default: the bundled prior)"
    )
    p.add_argument("--negative", default=None, help="negative prompt")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (diffusers' convention)")
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=0.0,
        help="diffusers' guidance_rescale (0-1; 0.7 keeps the bundled v-prediction prior's colours at --guidance 7.5)",
    )
    p.add_argument("--scheduler", default=None, choices=list(SCHEDULERS), help="default: the model's own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=None, help="default: the model's native size")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--num-images", type=int, default=1)
    p.add_argument(
        "--camera",
        default=None,
        metavar="E,A,D,FOV",
        help="elevation, azimuth, distance, field of view (degrees, world units; docs/cameras.md): the view of "
        "a camera-conditioned model",
    )
    add_device_args(p)
    p.add_argument("-o", "--output", default="outputs/txt2img", help="output folder (default: outputs/txt2img)")
    p.set_defaults(func=run)


def parse_camera(text: str | None) -> tuple[float, float, float, float] | None:
    from ..errors import UserError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise UserError(f"--camera '{text}' must be four numbers ELEVATION,AZIMUTH,DISTANCE,FOV, e.g. 15,30,1.8,50")
    return values


def run(args) -> int:
    from ..text_to_image import Txt2ImgConfig, run_txt2img

    cfg = Txt2ImgConfig(
        prompt=args.prompt,
        negative=args.negative,
        model=args.model,
        steps=args.steps,
        guidance=args.guidance,
        guidance_rescale=args.guidance_rescale,
        scheduler=args.scheduler,
        seed=args.seed,
        height=args.height,
        width=args.width,
        num_images=args.num_images,
        device=args.device,
        dtype=args.dtype,
        camera=parse_camera(args.camera),
    )
    images, record = run_txt2img(cfg, output=args.output)
    print(f"wrote {len(images)} image(s) to {args.output}/ ({', '.join(record['images'])}) and txt2img.json")
    return 0
