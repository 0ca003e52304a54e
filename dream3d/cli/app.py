"""``dream3d app``: the web app (Gradio) on this machine, http://127.0.0.1:7860 by default."""

from __future__ import annotations

import ipaddress
import warnings

from . import add_device_args


def register(sub) -> None:
    p = sub.add_parser(
        "app",
        help="web app: text to image, text to 3D and stereo pairs in a browser",
        description="Serve the web app (Gradio): text to image, text to 3D (live progress, 3D viewer, turntable, "
        "downloads) and stereo pairs. Long jobs run one at a time; every run writes its files under --output-dir.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets anyone who can reach "
        "this machine use the app and read what it wrote)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--output-dir", default="outputs/app", help="where runs are written (default outputs/app)")
    p.add_argument(
        "--model", default=None, help="folder in diffusers layout, hub id, or 'shapes' (default: the bundled prior)"
    )
    add_device_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..app import AppSettings
    from ..errors import UserError
    from ..io import ensure_writable_dir

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if not _is_loopback(args.host):
        warnings.warn(
            f"listening on {args.host}: anyone who can reach this machine can run jobs and download their files",
            stacklevel=1,
        )
    settings = AppSettings(
        output_dir=ensure_writable_dir(Path(args.output_dir)), model=args.model, device=args.device, dtype=args.dtype
    )
    from ..app.page import launch

    print(f"dream3d app: http://{args.host}:{args.port} (Ctrl-C stops it); runs go to {settings.output_dir}/")
    launch(settings, args.host, args.port)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
