"""``dream3d batch``: many runs of a command, resumable, on local workers, Ray or a job array.

Subcommands:
- ``txt2mesh PROMPTS.txt -o OUT``: one text-to-3D run per prompt and seed, ``OUT/index.jsonl``
  and a contact sheet.
- ``index OUT``: rebuild the index and the contact sheet (after the shards of a job array).
"""

from __future__ import annotations

import argparse
import sys

from . import add_backend_args, add_device_args, check_backend_args


def register(sub) -> None:
    parser = sub.add_parser(
        "batch",
        help="many runs: one txt2mesh per prompt and seed, on workers, Ray or a job array",
        description="Batches of runs: resumable, an index and a contact sheet, local workers, Ray or shards.",
    )
    commands = parser.add_subparsers(dest="batch_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    t = commands.add_parser(
        "txt2mesh",
        help="one text-to-3D run per prompt (a line of PROMPTS) and seed",
        description="Run dream3d txt2mesh for every prompt of PROMPTS (one a line, # comments) and every seed, "
        "into OUT/<prompt>-<hash>-s<seed>/, then write OUT/index.jsonl and OUT/contact-sheet.png. "
        "A rerun skips finished runs and resumes unfinished ones from their checkpoints.",
    )
    t.add_argument("prompts", metavar="PROMPTS", help="text file, one prompt a line")
    t.add_argument("-o", "--output", required=True, help="output folder (one run folder per prompt and seed)")
    t.add_argument("--config", default=None, help="YAML run config (default: by model, see configs/)")
    t.add_argument("--model", default=None, help="folder in diffusers layout, hub id, or 'shapes' (default)")
    t.add_argument("--seeds", default=None, help="seeds, e.g. 0,1 or 0-3 (default: the config's seed)")
    add_batch_args(t)
    add_device_args(t)
    t.add_argument(
        "--drop-checkpoints",
        action="store_true",
        help="delete a run's checkpoints once it finished (saves disk; --resume can no longer re-export it)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run, e.g. steps=500")
    t.set_defaults(func=run_txt2mesh)

    i = commands.add_parser(
        "index",
        help="rebuild index.jsonl and the contact sheet of a batch",
        description="Rebuild OUT/index.jsonl and OUT/contact-sheet.png from the run folders (after a job array).",
    )
    i.add_argument("out", metavar="OUT")
    i.set_defaults(func=run_index)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    """The backend options, ``--workers``, ``--max-attempts``, ``--shard``."""
    add_backend_args(parser)
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (0: in this process; default 1)")
    parser.add_argument(
        "--max-attempts", type=int, default=3, help="runs of an item whose worker died before it fails (default 3)"
    )
    parser.add_argument(
        "--shard", default="0/1", metavar="K/N", help="run shard K of N (0 <= K < N), e.g. $SLURM_ARRAY_TASK_ID/64"
    )


def parse_shard_arg(text: str) -> tuple[int, int]:
    from stereo.seeds import parse_shard

    from ..errors import UserError

    try:
        return parse_shard(text)
    except ValueError as e:
        raise UserError(f"{e}; e.g. --shard 0/4 .. --shard 3/4") from None


def make_backend(args, wants_gpu: bool | None):
    """The backend that ``--backend`` names, built from the other backend options."""
    from ..batch.backends import LocalBackend, RayBackend
    from ..batch.txt2mesh import share_cpus

    check_backend_args(args)
    if args.backend == "local":
        return LocalBackend(args.workers, args.max_attempts, initializer=share_cpus(args.workers))
    return RayBackend(args.address, num_gpus=args.gpus_per_task, wants_gpu=wants_gpu, max_attempts=args.max_attempts)


def run_txt2mesh(args) -> int:
    from ..batch.backends import gpu_wanted
    from ..batch.items import parse_seeds, read_prompts
    from ..batch.txt2mesh import run_batch

    shard = parse_shard_arg(args.shard)
    prompts = read_prompts(args.prompts)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    overrides = list(args.overrides)
    overrides += [f"device={args.device}"] if args.device else []
    overrides += [f"dtype={args.dtype}"] if args.dtype else []
    device = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("device=")), None)
    backend = make_backend(args, gpu_wanted(device))
    summary = run_batch(
        prompts,
        args.output,
        config=args.config,
        model=args.model,
        seeds=seeds,
        overrides=overrides,
        backend=backend,
        shard=shard,
        progress=not args.no_progress,
        drop_checkpoints=args.drop_checkpoints,
    )
    _report("txt2mesh", args.output, summary)
    for name, error in summary.failed:
        print(f"dream3d batch txt2mesh: failed: {name}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def run_index(args) -> int:
    from ..batch.txt2mesh import rebuild_index

    _report("index", args.out, rebuild_index(args.out))
    return 0


def _report(command: str, out: str, summary) -> None:
    from pathlib import Path

    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items())
    done = f"{summary.line()}; " if command != "index" else ""
    sheets = ", ".join(str(p) for p in summary.sheets)
    print(
        f"dream3d batch {command}: {done}batch: {counts}; index: {Path(out) / 'index.jsonl'}, contact sheet: {sheets}"
    )
