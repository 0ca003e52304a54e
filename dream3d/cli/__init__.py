"""The ``dream3d`` command: one entry point with subcommands.

Each subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a function taking the parsed arguments. Library code never imports
this package; the CLI only parses arguments, calls the library and reports.

Errors: a :class:`dream3d.errors.UserError` is printed as one line and exits with code 2 (no
traceback); Ctrl-C exits with 130 after the command's own clean-up has run. Warnings print as one
line each (``dream3d: warning: ...``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import UserError

# Subcommand modules, in the order ``dream3d --help`` lists them.
COMMANDS = ["txt2img", "txt2mesh", "img2mesh", "batch", "prior", "stereo", "demo", "app"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dream3d",
        description="3D-aware generation on a 2D diffusion prior.",
    )
    parser.add_argument("--version", action="version", version=f"dream3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may follow options (``txt2mesh "a cube" -o out steps=10``), which argparse
    # alone cannot mix with positionals: collect them here for commands that take overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.formatwarning = _one_line_warning
    try:
        result = args.func(args)
    except UserError as e:
        print(f"dream3d {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"dream3d {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"dream3d: warning: {message}\n"


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device`` / ``--dtype`` as every model-running command takes them."""
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", default=None, choices=["fp16", "bf16", "fp32"], help="default: fp16 on CUDA, fp32 on CPU"
    )


def add_run_args(parser: argparse.ArgumentParser, model_help: str, example: str) -> None:
    """What the commands that optimise a system and export its asset (``txt2mesh``, ``img2mesh``) take
    after their input: ``--config``, ``--model``, ``--seed``, ``--resume``, the device, ``-o`` and
    ``key=value`` overrides (``example``)."""
    parser.add_argument("--config", default=None, help="YAML run config (default: by model, see configs/)")
    parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's, 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its checkpoint")
    add_device_args(parser)
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {example}")


def device_overrides(args: argparse.Namespace) -> list[str]:
    """``--device`` and ``--dtype`` as ``key=value`` overrides."""
    return [f"{k}={getattr(args, k)}" for k in ("device", "dtype") if getattr(args, k)]


def run_and_report(run, output: str) -> int:
    """Run an asset-making command (``run()`` returns its metrics) and say where its files are;
    on Ctrl-C say where the checkpoint is before the interrupt propagates."""
    try:
        metrics = run()
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint and partial export in {output}/; continue with --resume")
        raise
    print(
        f"{metrics['steps']} steps in {metrics['seconds']:.0f} s; mesh: {output}/mesh.glb (.obj, .ply), "
        f"turntable: {output}/turntable.mp4 (.gif), metrics: {output}/metrics.json"
    )
    return 0


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    """``--backend local|ray``, ``--address``, ``--gpus-per-task`` as the batch commands take them."""
    parser.add_argument(
        "--backend", default="local", help="local: this machine (default); ray: Ray tasks (pip install 'dream3d[ray]')"
    )
    parser.add_argument(
        "--address", default=None, help="ray: the cluster's address (ray.init(address=...)); default: start Ray here"
    )
    parser.add_argument(
        "--gpus-per-task", type=float, default=None, help="ray: GPUs per task (default: 1 when the run uses CUDA)"
    )


def check_backend_args(args: argparse.Namespace) -> None:
    """A known ``--backend``, and no Ray option without ``--backend ray``."""
    if args.backend not in ("local", "ray"):
        raise UserError(f"unknown backend '{args.backend}'; use one of local, ray")
    if args.backend == "local" and (args.address or args.gpus_per_task is not None):
        raise UserError("--address and --gpus-per-task are for --backend ray; drop them or add --backend ray")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
