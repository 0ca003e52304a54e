"""``dream3d img2mesh IMAGE``: one image of an object to a mesh and a turntable (Zero-1-to-3 guidance
into a NeRF, pinned to the input by its reference view)."""

from __future__ import annotations

from . import add_run_args, device_overrides, run_and_report


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
    add_run_args(
        p,
        "a Zero-1-to-3 model folder in diffusers layout, hub id, or 'shapes-view' (default)",
        "steps=300 reference.rgb=500",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..image_to_3d import load_img2mesh_config, run_img2mesh

    overrides = list(args.overrides)
    for option, key in (("elevation", "elevation_deg"), ("fov", "fov_deg"), ("distance", "distance")):
        if getattr(args, option) is not None:
            overrides.append(f"reference.{key}={getattr(args, option)}")
    cfg = load_img2mesh_config(args.image, args.config, args.model, args.seed, overrides + device_overrides(args))
    return run_and_report(lambda: run_img2mesh(cfg, args.output, resume=args.resume), args.output)
