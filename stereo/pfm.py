"""PFM (portable float map) files: the usual format for float disparity maps.

Layout: a text header ``Pf`` (one channel) or ``PF`` (three channels), then ``width height``,
then a scale whose sign gives the byte order (negative = little-endian, positive =
big-endian; its magnitude is not used for disparity), each followed by one whitespace
character; then float32 rows stored bottom to top.

:func:`read_pfm` reads either byte order and returns rows top to bottom; :func:`write_pfm`
writes little-endian by default (``little_endian=False`` for big-endian).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import numpy as np

from ._arrays import to_numpy


class PFMError(ValueError):
    """A file that is not a valid PFM."""


def _read_token(data: bytes, pos: int) -> tuple[bytes, int]:
    while pos < len(data) and data[pos : pos + 1].isspace():
        pos += 1
    while pos < len(data) and data[pos : pos + 1] == b"#":  # comment line
        while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
            pos += 1
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
    start = pos
    while pos < len(data) and not data[pos : pos + 1].isspace():
        pos += 1
    return data[start:pos], pos


def read_pfm(path: str | os.PathLike | BinaryIO) -> np.ndarray:
    """Read a PFM file: H x W float32 (``Pf``) or H x W x 3 float32 (``PF``), top row first."""
    if hasattr(path, "read"):
        data = path.read()
        name = getattr(path, "name", "<stream>")
    else:
        with open(path, "rb") as f:
            data = f.read()
        name = str(path)
    magic, pos = _read_token(data, 0)
    if magic not in (b"Pf", b"PF"):
        raise PFMError(f"{name}: not a PFM file (header {magic[:8]!r})")
    channels = 3 if magic == b"PF" else 1
    try:
        w_token, pos = _read_token(data, pos)
        h_token, pos = _read_token(data, pos)
        s_token, pos = _read_token(data, pos)
        width, height, scale = int(w_token), int(h_token), float(s_token)
    except ValueError:
        raise PFMError(f"{name}: malformed PFM header") from None
    if width < 0 or height < 0 or scale == 0:
        raise PFMError(f"{name}: malformed PFM header")
    pos += 1  # exactly one whitespace character ends the header
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    count = width * height * channels
    if len(data) - pos < count * 4:
        raise PFMError(f"{name}: truncated PFM data ({len(data) - pos} bytes, need {count * 4})")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.flipud(values.reshape(shape)).astype(np.float32)


def write_pfm(path: str | os.PathLike | BinaryIO, array: Any, *, little_endian: bool = True) -> None:
    """Write an H x W (``Pf``) or H x W x 3 (``PF``) map as float32 PFM (rows bottom to top).

    Writes straight to ``path``; wrap it in :func:`dream3d.io.atomic_path` for an atomic file.
    """
    a = np.asarray(to_numpy(array), dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        magic = b"Pf"
    elif a.ndim == 3 and a.shape[-1] == 3:
        magic = b"PF"
    else:
        raise ValueError(f"PFM holds H x W or H x W x 3 maps, got shape {a.shape}")
    height, width = a.shape[:2]
    dtype = np.dtype("<f4") if little_endian else np.dtype(">f4")
    header = magic + b"\n" + f"{width} {height}\n".encode() + (b"-1.0\n" if little_endian else b"1.0\n")
    payload = np.ascontiguousarray(np.flipud(a), dtype=dtype).tobytes()
    if hasattr(path, "write"):
        path.write(header + payload)
    else:
        with open(path, "wb") as f:
            f.write(header + payload)
