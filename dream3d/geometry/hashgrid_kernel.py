"""The hash encoding's compiled CPU kernel: build it, cache it, call it.

``hashgrid_kernel.c`` computes the 8 corner indices and weights of a point and gathers (forward)
or scatters (backward) the table rows, all in one loop, with none of the ``(8, levels, N)``
temporaries that PyTorch ops need. On this project's 2-core CPU that makes forward + backward ~2x
faster than our PyTorch ops (``benchmarks/hashgrid.py``), with the same results up to float
rounding (sums in another order).

It is plain C99 with no Python or torch headers. On first use it is compiled with the system C
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``; about a second) into
``$DREAM3D_CACHE/kernels`` (default ``~/.cache/dream3d/kernels``). The file name carries a hash
of the source, the compiler's version and the flags. The library is written to a temporary file
and renamed into place, so a killed build never leaves a broken library. It is loaded with
ctypes, which releases the GIL during a call, so disjoint level ranges run on
``torch.get_num_threads()`` threads at once (each level owns its table rows and output columns).

Where no compiler works, :func:`kernel_unavailable_reason` says why, and the encoding uses the
PyTorch ops (``encoding_backend=auto``) or stops with that reason (``encoding_backend=c``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

SOURCE = Path(__file__).with_name("hashgrid_kernel.c")
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")
LIBS = ("-lm",)  # floorf (usually inlined)


def cache_dir() -> Path:
    """Where built kernels are kept: ``$DREAM3D_CACHE/kernels``, else ``$XDG_CACHE_HOME/dream3d/kernels``,
    else ``~/.cache/dream3d/kernels``."""
    root = os.environ.get("DREAM3D_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "dream3d")
    return Path(root) / "kernels"


def _compiler() -> list[str] | None:
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def _build(cc: list[str]) -> Path:
    """Compile the kernel (or find it built) and return the library's path; raises OSError or
    RuntimeError with the compiler's first error line."""
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join([*cc, version, *FLAGS, *LIBS, platform.machine()]).encode())
    name = f"hashgrid_kernel-{key.hexdigest()[:16]}.so"
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / "dream3d-kernels"):
        lib = folder / name
        if lib.exists():
            return lib
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        except OSError:
            continue  # cache not writable: try the temporary folder
        os.close(fd)
        try:
            done = subprocess.run(
                [*cc, *FLAGS, str(SOURCE), "-o", tmp, *LIBS], capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
                raise RuntimeError(f"'{' '.join(cc)}' failed: {lines[0] if lines else f'exit {done.returncode}'}")
            os.replace(tmp, lib)  # atomic: readers see no library or a whole one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return lib
    raise OSError(f"no writable folder for the kernel (tried {cache_dir()}); set DREAM3D_CACHE")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    """``(library, "")`` or ``(None, why it is unavailable)``; built and loaded once per process."""
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC, or install gcc or clang)"
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, f"the hash-grid C kernel did not build: {str(e).splitlines()[0]}"
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.hashgrid_pass.argtypes = [i32, p, i64, p, i64, i32, i32, i32, i32, p, p, p, p, p, ctypes.c_uint32, p]
    lib.hashgrid_pass.restype = None
    return lib, ""


def kernel_available() -> bool:
    """True when the kernel is built (or builds now) and loads."""
    return _load()[0] is not None


def kernel_unavailable_reason() -> str:
    """Why :func:`kernel_available` is False ("" when it is True)."""
    return _load()[1]


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:  # per process: a forked child gets its own
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dream3d-hashgrid")


class KernelLayout:
    """The per-level constants as the kernel takes them (CPU tensors kept alive for the pointers)."""

    def __init__(
        self,
        scale: np.ndarray,
        resolution: np.ndarray,
        size: np.ndarray,
        offset: np.ndarray,
        hashed: np.ndarray,
        features: int,
        mask: int,
    ):
        self.scale = torch.tensor(scale, dtype=torch.float32)
        self.resolution = torch.tensor(resolution, dtype=torch.int32)
        self.size = torch.tensor(size, dtype=torch.int32)
        self.offset = torch.tensor(offset, dtype=torch.int64)
        self.hashed = torch.tensor(hashed, dtype=torch.uint8)
        self.levels, self.features, self.mask = int(self.scale.shape[0]), int(features), int(mask)
        self.rows = int(offset[-1] + size[-1])

    def _run(self, backward: bool, x: torch.Tensor, table: torch.Tensor, values: torch.Tensor) -> None:
        """``hashgrid_pass`` over all levels, split into contiguous level ranges run on torch's
        thread count (see hashgrid_kernel.c for what ``table`` and ``values`` are in each direction)."""
        consts = (
            self.scale.data_ptr(),
            self.resolution.data_ptr(),
            self.size.data_ptr(),
            self.offset.data_ptr(),
            self.hashed.data_ptr(),
            self.mask,
            values.data_ptr(),
        )

        def levels(bounds):
            _load()[0].hashgrid_pass(
                int(backward),
                x.data_ptr(),
                x.shape[0],
                table.data_ptr(),
                table.shape[1],
                self.features,
                self.levels,
                *bounds,
                *consts,
            )

        workers = min(torch.get_num_threads(), self.levels)
        if workers <= 1 or x.shape[0] < 4096:
            levels((0, self.levels))
            return
        cuts = np.linspace(0, self.levels, workers + 1).round().astype(int)
        list(_pool(workers, os.getpid()).map(levels, [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]))

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``x (N, 3)`` float32 contiguous, ``table (F, rows)`` float32 contiguous -> ``(N, L * F)``."""
        out = torch.empty(x.shape[0], self.levels * self.features, dtype=torch.float32)
        self._run(False, x, table, out)
        return out

    def backward(self, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
        """The table's gradient ``(F, rows)`` for ``grad_out (N, L * F)`` float32 contiguous."""
        grad_table = torch.zeros(self.features, self.rows, dtype=torch.float32)
        self._run(True, x, grad_table, grad_out)
        return grad_table
