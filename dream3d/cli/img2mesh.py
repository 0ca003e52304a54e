"""``dream3d img2mesh IMAGE``: one image of an object to a mesh and a turntable (Zero-1-to-3 guidance
into a NeRF, pinned to the input by its reference view)."""

from __future__ import annotations

from . import add_device_args


def register(sub) -> None:
    p = sub.add_parser(
        "img2mesh",
        help="image to 3D: Zero-1-to-3 guidance and the input's reference view, exported as a mesh and a turntable",
        description="Optimise a NeRF so that it shows IMAGE from the input's camera and what a view-conditioned "
        "prior expects from every other, then export mesh.glb/.obj/.ply and turntable.mp4/.gif. IMAGE: an RGBA PNG "
        "(the object on a transparent background) or the object on a plain background. Without --config/--model: "
        "the bundled shapes-view prior and configs/shapes-zero123.yaml.",
    )
    p.add_argument("image", help="the input image")
    p.add_argument("--elevation", type=float, default=None, help="the input camera's elevation in degrees (default: 0)")
    p.add_argument(
        "--fov", type=float, default=None, help="the input camera's vertical field of view in degrees (default: 50)"
    )
    p.add_argument("--distance", type=float, default=None, help="the input camera's distance (default: 1.8)")
    p.add_argument("--config", default=None, help="YAML run config (default: by model, see configs/)")
    p.add_argument(
        "--model",
        default=None,
        help="a Zero-1-to-3 model folder in diffusers layout, hub id, or 'shapes-view' (default)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its checkpoint")
    add_device_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=300 reference.rgb=500"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..image_to_3d import load_img2mesh_config, run_img2mesh

    overrides = list(args.overrides)
    for option, key in (("elevation", "elevation_deg"), ("fov", "fov_deg"), ("distance", "distance")):
        if getattr(args, option) is not None:
            overrides.append(f"reference.{key}={getattr(args, option)}")
    overrides += [f"device={args.device}"] if args.device else []
    overrides += [f"dtype={args.dtype}"] if args.dtype else []
    cfg = load_img2mesh_config(args.image, args.config, args.model, args.seed, overrides)
    try:
        metrics = run_img2mesh(cfg, args.output, resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint and partial export in {args.output}/; continue with --resume")
        raise
    print(
        f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; mesh: {args.output}/mesh.glb (.obj, .ply), "
        f"turntable: {args.output}/turntable.mp4 (.gif), metrics: {args.output}/metrics.json"
    )
    return 0
