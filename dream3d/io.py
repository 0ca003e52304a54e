"""Atomic file output: a crash, a kill or Ctrl-C never leaves a partial file behind.

Every writer here writes to a temporary file in the destination folder and renames it over the
target (``os.replace`` is atomic on POSIX and Windows), so a reader sees the old file or the new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UserError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True):
            pass
    except (OSError, PermissionError) as e:
        reason = e.strerror or type(e).__name__
        raise UserError(
            f"cannot write to output folder '{path}' ({reason}); choose another folder with -o/--output"
        ) from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    The temporary name keeps the final suffix (``suffix`` overrides it) so libraries that pick a
    format from the extension (PIL, imageio, trimesh) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def save_image(path: str | os.PathLike, image) -> None:
    """Save a PIL image or an HxW(x3/4) uint8 / uint16 numpy array as PNG (or by extension)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    with atomic_path(path) as tmp:
        image.save(tmp)


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")
