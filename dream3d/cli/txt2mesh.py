"""``dream3d txt2mesh PROMPT``: text to a mesh and a turntable (score distillation into a NeRF, then,
with a ``fine:`` stage, into a DMTet mesh)."""

from __future__ import annotations

from . import add_device_args


def register(sub) -> None:
    p = sub.add_parser(
        "txt2mesh",
        help="text to 3D: SDS into a hash-grid NeRF, exported as a mesh and a turntable",
        description="Optimise a NeRF with a frozen diffusion prior, then export mesh.glb/.obj/.ply and turntable.mp4/.gif. "
        "Without --config/--model: the bundled prior and configs/shapes-dreamfusion.yaml.",
    )
    p.add_argument("prompt")
    p.add_argument("--config", default=None, help="YAML run config (default: by model, see configs/)")
    p.add_argument("--model", default=None, help="folder in diffusers layout, hub id, or 'shapes' (default)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its checkpoint")
    p.add_argument(
        "--from",
        dest="start_from",
        default=None,
        metavar="RUN_DIR",
        help="start the fine stage (a config with fine:, e.g. configs/shapes-magic3d.yaml) from the finished "
        "coarse stage of the run in RUN_DIR",
    )
    add_device_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=500 guidance.t_max_end=0.4"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..text_to_3d import load_txt2mesh_config, run_txt2mesh

    overrides = list(args.overrides)
    overrides += [f"device={args.device}"] if args.device else []
    overrides += [f"dtype={args.dtype}"] if args.dtype else []
    cfg = load_txt2mesh_config(args.prompt, args.config, args.model, args.seed, overrides)
    try:
        metrics = run_txt2mesh(cfg, args.output, resume=args.resume, start_from=args.start_from)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint and partial export in {args.output}/; continue with --resume")
        raise
    print(
        f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; mesh: {args.output}/mesh.glb (.obj, .ply), "
        f"turntable: {args.output}/turntable.mp4 (.gif), metrics: {args.output}/metrics.json"
    )
    return 0
