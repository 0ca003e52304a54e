"""``dream3d stereo``: stereo training pairs from single images.

Subcommands:
- ``generate IMAGES_DIR OUT_DIR (--depth-dir D | --depth-model M)``: write a data set.
- ``index OUT_DIR``: rebuild ``pairs.txt`` (after shards ran concurrently).
- ``preview PATH``: colour-mapped PNG of a disparity file, or previews for a data set.
- ``shapes OUT_DIR``: render shapes-world scenes (photos + true depth) for a no-download run.
"""

from __future__ import annotations

import argparse
import sys

from . import add_backend_args, add_device_args, check_backend_args


def register(sub) -> None:
    parser = sub.add_parser(
        "stereo",
        help="stereo training pairs from single images",
        description="Stereo training pairs from single images (forward warping of monocular depth).",
    )
    commands = parser.add_subparsers(dest="stereo_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    g = commands.add_parser(
        "generate",
        help="write a stereo data set from a folder of photos",
        description=(
            "Write left/, right/, disparity/ (PFM), occlusion/, holes/, meta/ and pairs.txt into OUT_DIR. "
            "Resumable (finished samples are skipped), atomic, deterministic per (seed, file stem)."
        ),
    )
    g.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of photos (not searched recursively)")
    g.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    src = g.add_argument_group("depth source (one of)")
    src.add_argument("--depth-dir", metavar="D", help="folder of precomputed maps <stem>.npy, .pfm or 16-bit .png")
    src.add_argument(
        "--depth-model",
        metavar="M",
        help="transformers depth-estimation model: folder or hub id (e.g. DPT, Depth Anything)",
    )
    g.add_argument(
        "--depth-kind",
        choices=["inverse", "depth"],
        default=None,
        help="what the maps hold: inverse depth (MiDaS/DPT/Depth Anything, default for --depth-dir) or depth "
        "(metric); for --depth-model it is read from the model config unless given",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="global seed; each sample's seed derives from it and the file stem (default 0)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes; 0 = in this process (default 0); with --backend ray: the number of shards, "
        "one Ray task each (0: the cluster's CPUs)",
    )
    g.add_argument(
        "--shard", default="0/1", metavar="K/N", help="process shard K of N (0 <= K < N), e.g. $SLURM_ARRAY_TASK_ID/64"
    )
    add_backend_args(g)
    g.add_argument(
        "--mode",
        choices=["default", "reference"],
        default="default",
        help="default: faults fixed; reference: published behaviour",
    )
    g.add_argument(
        "--max-disparity",
        type=float,
        default=192.0,
        help="top of the disparity scale range and crop margin in pixels (192)",
    )
    g.add_argument(
        "--width",
        type=int,
        default=None,
        help="output width (with --height); default: the photo's width minus the margin",
    )
    g.add_argument("--height", type=int, default=None, help="output height (with --width); default: the photo's height")
    g.add_argument(
        "--kitti-png",
        action="store_true",
        help="also write disparity_png/<stem>.png (uint16, disparity*256, 0 = invalid)",
    )
    g.add_argument("--fill-cracks", action="store_true", help="fill one-pixel cracks of the warp from their neighbours")
    g.add_argument("--preview", action="store_true", help="also write preview/<stem>.png (colour-mapped disparity)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_args(g)
    g.set_defaults(func=run_generate)

    i = commands.add_parser(
        "index",
        help="rebuild pairs.txt of a data set",
        description="Rebuild OUT_DIR/pairs.txt from the complete samples.",
    )
    i.add_argument("out_dir", metavar="OUT_DIR")
    i.set_defaults(func=run_index)

    p = commands.add_parser(
        "preview",
        help="colour-mapped PNG of disparity",
        description="Colour-mapped preview of a disparity file (.pfm, .npy, 16-bit KITTI .png), or of every sample of a data set folder.",
    )
    p.add_argument("path", metavar="PATH", help="disparity file, or a data set folder written by 'generate'")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="PNG to write (file input; default PATH with .preview.png) or folder (data set; default PATH/preview)",
    )
    p.add_argument(
        "--max-disparity",
        type=float,
        default=None,
        help="disparity shown as the nearest colour (default: each map's maximum)",
    )
    p.set_defaults(func=run_preview)

    s = commands.add_parser(
        "shapes",
        help="render shapes-world scenes as photos + true depth (no download)",
        description="Write OUT_DIR/images, OUT_DIR/depth (true disparity, inverse depth) and OUT_DIR/truth (true right views).",
    )
    s.add_argument("out_dir", metavar="OUT_DIR")
    s.add_argument("--count", type=int, default=8, help="number of scenes (default 8)")
    s.add_argument("--seed", type=int, default=0, help="first scene seed (default 0)")
    s.add_argument("--height", type=int, default=256)
    s.add_argument("--width", type=int, default=512)
    s.set_defaults(func=run_shapes)


def run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stereo.seeds import parse_shard

    from ..errors import UserError

    if bool(args.depth_dir) == bool(args.depth_model):
        raise UserError("give exactly one depth source: --depth-dir FOLDER (precomputed maps) or --depth-model MODEL")
    try:
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise UserError(f"{e}; e.g. --shard 0/4 .. --shard 3/4") from None
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    check_backend_args(args)
    if args.backend == "ray" and shard != (0, 1):
        raise UserError("--backend ray splits the data set into shards itself; drop --shard (or use --backend local)")
    if (args.width is None) != (args.height is None):
        raise UserError("give --width and --height together (or neither, to keep each photo's size)")
    if args.width is not None and (args.width < 1 or args.height < 1):
        raise UserError("--width and --height must be positive")
    if not args.max_disparity > 0:
        raise UserError(f"--max-disparity must be positive, got {args.max_disparity}")
    if not Path(args.images_dir).is_dir():
        raise UserError(f"images folder '{args.images_dir}' does not exist or is not a folder; pass a folder of photos")

    from stereo.depth_sources import DepthDir, DepthModel
    from stereo.writer import GenerateOptions, generate

    if args.depth_dir:
        if not Path(args.depth_dir).is_dir():
            raise UserError(
                f"depth folder '{args.depth_dir}' does not exist; pass the folder holding <stem>.npy/.pfm/.png maps"
            )
        depth = DepthDir(args.depth_dir, kind=args.depth_kind or "inverse")
    else:
        depth = DepthModel(args.depth_model, device=args.device, dtype=args.dtype, kind=args.depth_kind)
    options = GenerateOptions(
        seed=args.seed,
        mode=args.mode,
        max_disparity=args.max_disparity,
        height=args.height,
        width=args.width,
        kitti_png=args.kitti_png,
        fill_cracks=args.fill_cracks,
        preview=args.preview,
    )
    if args.backend == "ray":
        from stereo.shards import generate_sharded

        from ..batch.backends import RayBackend, gpu_wanted

        wants_gpu = gpu_wanted(args.device) if args.depth_model else False
        backend = RayBackend(args.address, num_gpus=args.gpus_per_task, wants_gpu=wants_gpu)
        connected = backend.start()
        try:
            shards = args.workers or backend.cluster_cpus()
            summary = generate_sharded(
                args.images_dir, args.out_dir, depth, options, backend, shards, progress=not args.no_progress
            )
        finally:
            if connected:
                backend.ray.shutdown()
    else:
        summary = generate(
            args.images_dir,
            args.out_dir,
            depth,
            options,
            workers=args.workers,
            shard=shard,
            progress=not args.no_progress,
        )
        shards = shard[1]
    print(f"dream3d stereo generate: {summary.line()}; {Path(args.out_dir) / 'pairs.txt'}", file=sys.stderr)
    if summary.failed:
        name = (
            "failures.txt"
            if shards == 1
            else f"failures-{shard[0] if args.backend == 'local' else '*'}-of-{shards}.txt"
        )
        print(f"dream3d stereo generate: failures listed in {Path(args.out_dir) / name}", file=sys.stderr)
    return 1 if summary.failed and summary.written == 0 and summary.skipped == 0 else 0


def run_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stereo.writer import write_index

    from ..errors import UserError

    if not (Path(args.out_dir) / "meta").is_dir():
        raise UserError(f"'{args.out_dir}' is not a data set written by 'dream3d stereo generate' (no meta/ folder)")
    count = write_index(args.out_dir)
    print(f"dream3d stereo index: {count} pairs in {Path(args.out_dir) / 'pairs.txt'}", file=sys.stderr)
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from stereo.preview import save_disparity_preview

    from ..errors import UserError

    path = Path(args.path)
    if path.is_dir():
        meta = path / "disparity"
        if not meta.is_dir():
            raise UserError(
                f"'{path}' has no disparity/ folder; pass a data set written by 'dream3d stereo generate' or a disparity file"
            )
        out = Path(args.output) if args.output else path / "preview"
        files = sorted(meta.glob("*.pfm"))
        for f in files:
            save_disparity_preview(out / f"{f.stem}.png", _read_disparity(f), max_disparity=args.max_disparity)
        print(f"dream3d stereo preview: {len(files)} previews in {out}", file=sys.stderr)
        return 0
    if not path.is_file():
        raise UserError(f"'{path}' does not exist; pass a disparity file (.pfm, .npy, .png) or a data set folder")
    disparity = _read_disparity(path)
    out = Path(args.output) if args.output else path.with_suffix(".preview.png")
    save_disparity_preview(out, np.asarray(disparity), max_disparity=args.max_disparity)
    print(f"dream3d stereo preview: {out}", file=sys.stderr)
    return 0


def _read_disparity(path):
    import numpy as np

    from stereo.kitti_png import read_disparity_png
    from stereo.pfm import PFMError, read_pfm

    from ..errors import UserError

    suffix = path.suffix.lower()
    try:
        if suffix == ".pfm":
            d = read_pfm(path)
            return d[..., 0] if d.ndim == 3 else d
        if suffix == ".npy":
            return np.squeeze(np.load(path, allow_pickle=False))
        if suffix == ".png":
            d, valid = read_disparity_png(path)
            return np.where(valid, d, np.nan)
    except (OSError, ValueError, PFMError) as e:
        raise UserError(f"cannot read disparity '{path}' ({e}); pass a .pfm, .npy or 16-bit .png file") from None
    raise UserError(f"'{path}': unsupported disparity file type; pass a .pfm, .npy or 16-bit .png file")


def run_shapes(args: argparse.Namespace) -> int:
    from stereo.shapes import write_shapes_inputs

    from ..errors import UserError
    from ..io import ensure_writable_dir

    if args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}")
    try:
        ensure_writable_dir(args.out_dir)
    except UserError:
        raise UserError(f"cannot write to output folder '{args.out_dir}'; choose a writable OUT_DIR") from None
    stems = write_shapes_inputs(args.out_dir, args.count, seed=args.seed, height=args.height, width=args.width)
    print(
        f"dream3d stereo shapes: {len(stems)} scenes in {args.out_dir}; next: dream3d stereo generate "
        f"{args.out_dir}/images OUT --depth-dir {args.out_dir}/depth",
        file=sys.stderr,
    )
    return 0
