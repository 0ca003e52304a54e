"""``dream3d txt2mesh PROMPT``: text to a mesh and a turntable (score distillation into a NeRF, then,
with a ``fine:`` stage, into a DMTet mesh)."""

from __future__ import annotations

from . import add_run_args, device_overrides, run_and_report


def register(sub) -> None:
    p = sub.add_parser(
        "txt2mesh",
        help="text to 3D: SDS into a hash-grid NeRF, exported as a mesh and a turntable",
        description="Optimise a NeRF with a frozen diffusion prior, then export mesh.glb/.obj/.ply and turntable.mp4/.gif. "
        "Without --config/--model: the bundled prior and configs/shapes-dreamfusion.yaml.",
    )
    p.add_argument("prompt")
    p.add_argument(
        "--from",
        dest="start_from",
        default=None,
        metavar="RUN_DIR",
        help="start the fine stage (a config with fine:, e.g. configs/shapes-magic3d.yaml) from the finished "
        "coarse stage of the run in RUN_DIR",
    )
    add_run_args(p, "folder in diffusers layout, hub id, or 'shapes' (default)", "steps=500 guidance.t_max_end=0.4")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..text_to_3d import load_txt2mesh_config, run_txt2mesh

    overrides = list(args.overrides) + device_overrides(args)
    cfg = load_txt2mesh_config(args.prompt, args.config, args.model, args.seed, overrides)
    return run_and_report(
        lambda: run_txt2mesh(cfg, args.output, resume=args.resume, start_from=args.start_from), args.output
    )
